import BulkheadTestSupport
import Foundation
import Testing

/// `"…"` in YAML's double-quoted style, every unsafe or non-ASCII scalar written as \uXXXX, so
/// the file itself is plain text and the hostile string reaches the loader intact.
func yamlQuoted(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case _ where u.value < 0x20 || u.value >= 0x7F:
            let hex = String(u.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}

/// `validate` in every format, fed a segment name (in the message) and a file name (in `file=`)
/// holding the same hostile strings as the agent's outputs (`HostileStrings.all`): each
/// diagnostic stays one line, one annotation, one JSON string.
@Suite struct ValidateHostileOutput {
    @Test(arguments: HostileStrings.all) func everyFormat(_ hostile: String) throws {
        // A file name cannot hold NUL or '/', and is at most 255 bytes.
        let fileSafe = String(String.UnicodeScalarView(hostile.unicodeScalars.filter { $0 != "\0" && $0 != "/" }))
        let fileName = fileSafe.utf8.count <= 200 && !fileSafe.hasPrefix(".") ? "p" + fileSafe + ".yaml" : "p.yaml"
        let policy = good.replacingOccurrences(of: "segment: shop", with: "segment: " + yamlQuoted(hostile))
        try withFiles([fileName: policy]) { dir in
            let path = dir + "/" + fileName

            let text = try bulkhead(["validate", dir])
            #expect(text.status == 1)
            #expect(text.stdout.contains("error[invalid-name]"))
            #expect(!HostileStrings.hasUnsafeScalar(text.stdout, allowing: ["\n"]), "\(text.stdout.debugDescription)")
            let textLines = text.stdout.split(separator: "\n")
            #expect(textLines.count == 2, "one diagnostic and the summary: \(textLines)")

            let github = try bulkhead(["validate", "--format", "github", dir])
            #expect(github.status == 1)
            #expect(!HostileStrings.hasUnsafeScalar(github.stdout, allowing: ["\n"]), "\(github.stdout.debugDescription)")
            let annotations = github.stdout.split(separator: "\n").map(String.init)
            #expect(annotations.count == 2, "\(annotations)")
            #expect(annotations.first?.hasPrefix("::error file=") == true)
            #expect(annotations.last?.hasPrefix("1 file invalid") == true)
            #expect(annotations.filter { $0.hasPrefix("::") }.count == 1, "a forged workflow command: \(annotations)")

            for format in ["json", "sarif"] {
                let r = try bulkhead(["validate", "--format", format, dir])
                #expect(r.status == 1)
                #expect(!HostileStrings.hasUnsafeScalar(r.stdout, allowing: ["\n"]), "\(format): \(r.stdout.debugDescription)")
                let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(format) does not parse")
                // The message quotes the name exactly: escaped on the way out, intact when parsed.
                let messages: [String]
                let files: [String]
                if format == "json" {
                    let diagnostics = try #require(object["diagnostics"] as? [[String: Any]])
                    messages = diagnostics.compactMap { $0["message"] as? String }
                    files = diagnostics.compactMap { $0["file"] as? String }
                } else {
                    let results = try #require(((object["runs"] as? [[String: Any]])?.first?["results"]) as? [[String: Any]])
                    messages = results.compactMap { ($0["message"] as? [String: Any])?["text"] as? String }
                    files = results.compactMap {
                        ((($0["locations"] as? [[String: Any]])?.first?["physicalLocation"] as? [String: Any])?["artifactLocation"] as? [String: Any])?["uri"] as? String
                    }
                }
                #expect(messages.count == 1)
                #expect(messages.first?.contains("'\(hostile)'") == true, "\(format)")
                #expect(files == [path])
            }
        }
    }
}

/// `explain` quotes the policy file (`allowed by FILE:LINE`): a hostile file name stays on its line.
@Suite struct ExplainHostileOutput {
    @Test(arguments: HostileStrings.all) func reasonLine(_ hostile: String) throws {
        let fileSafe = String(String.UnicodeScalarView(hostile.unicodeScalars.filter { $0 != "\0" && $0 != "/" }))
        guard fileSafe.utf8.count <= 200, !fileSafe.isEmpty else { return }
        let shop = try String(contentsOfFile: repositoryRoot + "/policies/shop.yaml", encoding: .utf8)
        let others = try ["monitoring.yaml", "dns.yaml"].map { ($0, try String(contentsOfFile: repositoryRoot + "/policies/" + $0, encoding: .utf8)) }
        let name = "p" + fileSafe + ".yaml"
        try withFiles(Dictionary(uniqueKeysWithValues: others + [(name, shop)])) { dir in
            let r = try bulkhead(["explain", "--policies", dir, "--inventory", repositoryRoot + "/policies/inventory.json",
                                  "--from", "shop-api-1", "--to", "shop-db-1", "--port", "tcp/5432"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(!HostileStrings.hasUnsafeScalar(r.stdout, allowing: ["\n"]), "\(r.stdout.debugDescription)")
            let lines = r.stdout.split(separator: "\n")
            #expect(lines.first?.hasSuffix(": ALLOWED") == true)
            #expect(lines.filter { $0.hasPrefix("  reason:") }.count == 1)
            #expect(lines.allSatisfy { $0.hasPrefix("  ") || $0 == lines.first! }, "a forged line: \(lines)")
        }
    }
}
