@testable import BulkheadPolicy
