import BulkheadEscaping
import BulkheadPolicy
import BulkheadYAML

/// The four output forms of `validate`. Diagnostics arrive sorted by file, line and column.
enum DiagnosticOutput {
    static func summary(_ r: Validation.Report) -> String {
        func plural(_ n: Int, _ word: String) -> String { "\(n) \(word)\(n == 1 ? "" : "s")" }
        let verdict = r.errorCount == 0 ? "valid" : "invalid"
        return "\(plural(r.files.count, "file")) \(verdict): \(plural(r.errorCount, "error")), \(plural(r.warningCount, "warning"))"
    }

    /// One line per diagnostic: file names and messages quote policy text, so every control
    /// character is printed as a visible escape (a terminal never sees ESC, CR or a line break).
    static func text(_ r: Validation.Report) -> String {
        (r.diagnostics.map { Escape.terminal($0.formatted) } + [summary(r)]).joined(separator: "\n")
    }

    static func diagnosticJSON(_ d: Diagnostic) -> JSONValue {
        .object([
            ("severity", .string(d.severity.rawValue)),
            ("code", .string(d.code.rawValue)),
            ("message", .string(d.message)),
            ("file", .string(d.file)),
            ("line", .int(d.line)),
            ("column", .int(d.column)),
        ])
    }

    /// `{"valid": …, "errors": N, "warnings": N, "files": [...], "diagnostics": [...]}`.
    static func json(_ r: Validation.Report) -> String {
        JSONValue.object([
            ("valid", .bool(r.errorCount == 0 && !r.unreadablePath)),
            ("errors", .int(r.errorCount)),
            ("warnings", .int(r.warningCount)),
            ("files", .array(r.files.map { .string($0) })),
            ("diagnostics", .array(r.diagnostics.map(diagnosticJSON))),
        ]).render()
    }

    /// SARIF 2.1.0, one run, one rule per diagnostic code, for code-scanning uploads.
    static func sarif(_ r: Validation.Report) -> String {
        let codes = DiagnosticCode.allCases
        let rules: [JSONValue] = codes.map { c in
            .object([
                ("id", .string(c.rawValue)),
                ("shortDescription", .object([("text", .string(c.summary))])),
                ("defaultConfiguration", .object([("level", .string(c.severity.rawValue))])),
            ])
        }
        let results: [JSONValue] = r.diagnostics.map { d in
            .object([
                ("ruleId", .string(d.code.rawValue)),
                ("ruleIndex", .int(codes.firstIndex(of: d.code) ?? 0)),
                ("level", .string(d.severity.rawValue)),
                ("message", .object([("text", .string(d.message))])),
                ("locations", .array([.object([
                    ("physicalLocation", .object([
                        ("artifactLocation", .object([("uri", .string(d.file))])),
                        ("region", .object([("startLine", .int(d.line)), ("startColumn", .int(d.column))])),
                    ])),
                ])])),
            ])
        }
        return JSONValue.object([
            ("$schema", .string("https://json.schemastore.org/sarif-2.1.0.json")),
            ("version", .string("2.1.0")),
            ("runs", .array([.object([
                ("tool", .object([("driver", .object([
                    ("name", .string("bulkhead")),
                    ("version", .string(BulkheadVersion.current)),
                    ("rules", .array(rules)),
                ]))])),
                ("results", .array(results)),
            ])])),
        ]).render()
    }

    /// GitHub Actions workflow commands: one `::error`/`::warning` annotation per diagnostic.
    static func github(_ r: Validation.Report) -> String {
        let lines = r.diagnostics.map { d in
            "::\(d.severity.rawValue) file=\(escapeProperty(d.file)),line=\(d.line),col=\(d.column),title=\(escapeProperty("bulkhead \(d.code.rawValue)"))::\(escapeData(d.message))"
        }
        return (lines + [summary(r)]).joined(separator: "\n")
    }

    /// Workflow-command escaping, by Unicode scalar (see `Escape.githubData`).
    static func escapeData(_ s: String) -> String { Escape.githubData(s) }

    static func escapeProperty(_ s: String) -> String { Escape.githubProperty(s) }
}
