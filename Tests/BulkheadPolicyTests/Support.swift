import BulkheadInventory
import BulkheadPolicy
import BulkheadYAML
import Testing

/// Loads policy documents from strings: `[(file, text)]`.
func load(_ files: [(String, String)]) -> PolicyLoader.Result {
    PolicyLoader.load(sources: files.map { ($0.0, Array($0.1.utf8)) })
}

/// Loads a directory from disk, with a hang guard (see `withHangGuard`).
func load(paths: String...) throws -> PolicyLoader.Result {
    try #require(withHangGuard { PolicyLoader.load(paths: paths) }, "loading \(paths) did not finish")
}

func load(_ text: String, file: String = "t.yaml") -> PolicyLoader.Result {
    load([(file, text)])
}

/// Asserts that `diagnostics` holds exactly one diagnostic with `code`, at `line:column`.
@discardableResult
func expectOne(_ diagnostics: [Diagnostic], _ code: DiagnosticCode, at line: Int, _ column: Int,
               file: String? = nil, containing text: String? = nil,
               sourceLocation: Testing.SourceLocation = #_sourceLocation) -> Diagnostic? {
    let matching = diagnostics.filter { $0.code == code }
    #expect(matching.count == 1, "expected one \(code.rawValue), got \(diagnostics.map(\.formatted))", sourceLocation: sourceLocation)
    guard let d = matching.first else { return nil }
    #expect(d.line == line && d.column == column, "\(code.rawValue) at \(d.line):\(d.column), expected \(line):\(column): \(d.message)", sourceLocation: sourceLocation)
    #expect(d.severity == code.severity, sourceLocation: sourceLocation)
    if let file { #expect(d.file == file, sourceLocation: sourceLocation) }
    if let text { #expect(d.message.contains(text), "message: \(d.message)", sourceLocation: sourceLocation) }
    return d
}

/// A minimal valid segment, to which tests append or in which they replace lines.
let base = """
segment: shop
networks: [shop_default]
services:
  frontend:
    labels: {app: frontend}
  api:
    labels: {app: api}
flows:
  - from: frontend
    to: api
    ports: [tcp/8080]
  - from: world
    to: frontend
    ports: [tcp/80]

"""

/// The repository root, found from this file's path, so tests can read `policies/`.
let repositoryRoot: String = {
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)  // Tests/BulkheadPolicyTests/Support.swift
    return parts.joined(separator: "/")
}()
