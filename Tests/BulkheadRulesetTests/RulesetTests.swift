import Testing
@testable import BulkheadRuleset
@Test func placeholder() {}
