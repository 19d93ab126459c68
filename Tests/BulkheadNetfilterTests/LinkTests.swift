import Testing
import BulkheadNetfilter

@Test func libnftnlLinks() {
    #expect(NetfilterLibrary.isLinked())
}
