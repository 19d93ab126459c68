import Testing
import BulkheadDocker
@Test func dockerModuleLinks() {}
