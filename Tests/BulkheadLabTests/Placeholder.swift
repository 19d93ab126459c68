import Testing
import BulkheadLab
@Test func labModuleLinks() {}
