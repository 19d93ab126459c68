import Foundation
import Testing

/// End-to-end: the `bulkhead` binary as CI runs it, for each output format and each exit code.
struct Run {
    var status: Int32
    var stdout: String
    var stderr: String
}

let repositoryRoot: String = {
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}()

/// The binary next to the test bundle (both live in the same build directory).
let binary: String = {
    let bundleDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [bundleDir.appendingPathComponent("bulkhead").path,
                      bundleDir.deletingLastPathComponent().appendingPathComponent("bulkhead").path,
                      repositoryRoot + "/.build/debug/bulkhead"] where FileManager.default.isExecutableFile(atPath: candidate) {
        return candidate
    }
    return repositoryRoot + "/.build/debug/bulkhead"
}()

func bulkhead(_ args: [String], cwd: String = repositoryRoot) throws -> Run {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: binary)
    p.arguments = args
    p.currentDirectoryURL = URL(fileURLWithPath: cwd)
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
}

/// A scratch directory with the given files, removed afterwards.
func withFiles<T>(_ files: [String: String], _ body: (String) throws -> T) throws -> T {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bh-cli-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    for (name, text) in files {
        let path = dir + "/" + name
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }
    return try body(dir)
}

let good = """
segment: shop
networks: [shop_default]
services:
  frontend:
    labels: {app: frontend}
  api:
    labels: {app: api}
flows:
  - from: world
    to: frontend
    ports: [tcp/80]
  - from: frontend
    to: api
    ports: [tcp/8080]

"""

let typo = good.replacingOccurrences(of: "    to: api", with: "    to: apii")
let warning = good + "  - from: world\n    to: frontend\n    ports: [tcp/80]\n"

@Suite struct ValidateCommand {
    @Test func examplePoliciesExitZero() throws {
        let r = try bulkhead(["validate", "--inventory", "policies/inventory.json"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout == "3 files valid: 0 errors, 0 warnings\n")
    }

    @Test func errorsExitOneWithCompilerStyleLines() throws {
        try withFiles(["shop.yaml": typo]) { dir in
            let r = try bulkhead(["validate", dir])
            #expect(r.status == 1)
            #expect(r.stdout.contains("\(dir)/shop.yaml:13:9: error[unknown-service]: segment 'shop' has no service 'apii' (did you mean 'api'?)"), "\(r.stdout)")
        }
    }

    /// Issue 8, item 4: four overlapping services with 63-character names, under a 200-byte
    /// directory path, validate cleanly: `validate` compiles them and checks the ruleset as `apply`
    /// does, and finds nothing `not-programmable` (the names, comments and prefixes are bounded).
    @Test func longestNamesOverlappingOnOneContainerValidate() throws {
        var files: [String: String] = [:]
        let deep = String(repeating: "very-long-directory-name/", count: 8)
        for i in 0..<4 {
            let seg = String(repeating: "s", count: 61) + "-\(i)", svc = String(repeating: "v", count: 61) + "-\(i)"
            files[deep + "p\(i).yaml"] = """
            segment: \(seg)
            mode: audit
            networks: [n]
            services:
              \(svc):
                labels: {shared: "yes"}
            flows:
              - from: world
                to: \(svc)
                ports: [tcp/80]

            """
        }
        files["inv.yaml"] = """
        networks:
          - name: n
            subnets: [10.77.0.0/24]
        containers:
          - name: multi
            labels: {shared: "yes"}
            networks:
              n: {ipv4: 10.77.0.2}

        """
        try withFiles(files) { dir in
            let r = try bulkhead(["validate", "--inventory", dir + "/inv.yaml", dir + "/" + deep])
            #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
            #expect(!r.stdout.contains("not-programmable") && r.stdout.contains("0 errors"), "\(r.stdout)")
        }
    }

    @Test func warningsPassUnlessStrict() throws {
        try withFiles(["shop.yaml": warning]) { dir in
            let r = try bulkhead(["validate", dir])
            #expect(r.status == 0)
            #expect(r.stdout.contains("warning[redundant-flow]"))
            let strict = try bulkhead(["validate", "--strict", dir])
            #expect(strict.status == 1)
        }
    }

    @Test func usageErrorsExit64() throws {
        #expect(try bulkhead(["validate", "--format", "xml"]).status == 64)
        #expect(try bulkhead(["validate", "--no-such-flag"]).status == 64)
    }

    @Test func unreadablePathsExit66() throws {
        let r = try bulkhead(["validate", "/nonexistent/policies"])
        #expect(r.status == 66)
        #expect(r.stdout.contains("error[unreadable]"))
        let inv = try bulkhead(["validate", "--inventory", "/nonexistent.json"])
        #expect(inv.status == 66)
    }

    @Test func emptyDirectoryIsAnError() throws {
        try withFiles(["README.txt": "not a policy"]) { dir in
            let r = try bulkhead(["validate", dir])
            #expect(r.status == 1)
            #expect(r.stdout.contains("error[no-policy-files]"))
        }
    }

    @Test func recursesIntoDirectoriesForYamlAndYml() throws {
        try withFiles(["a/shop.yml": good, "b/c/other.yaml": good.replacingOccurrences(of: "segment: shop", with: "segment: other"), "ignored.txt": "x"]) { dir in
            let r = try bulkhead(["validate", "--format", "json", dir])
            #expect(r.status == 0)
            let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
            #expect((json?["files"] as? [String])?.count == 2)
        }
    }

    @Test func jsonFormat() throws {
        try withFiles(["shop.yaml": typo]) { dir in
            let r = try bulkhead(["validate", "--format", "json", dir])
            #expect(r.status == 1)
            let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            #expect(json["valid"] as? Bool == false)
            let d = try #require((json["diagnostics"] as? [[String: Any]])?.first)
            #expect(d["severity"] as? String == "error")
            #expect(d["code"] as? String == "unknown-service")
            #expect(d["file"] as? String == dir + "/shop.yaml")
            #expect(d["line"] as? Int == 13)
            #expect(d["column"] as? Int == 9)
            #expect((d["message"] as? String)?.contains("did you mean 'api'?") == true)
        }
    }

    @Test func sarifFormat() throws {
        try withFiles(["shop.yaml": typo]) { dir in
            let r = try bulkhead(["validate", "--format", "sarif", dir])
            #expect(r.status == 1)
            let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            #expect(json["version"] as? String == "2.1.0")
            let run = try #require((json["runs"] as? [[String: Any]])?.first)
            let driver = try #require((run["tool"] as? [String: Any])?["driver"] as? [String: Any])
            #expect(driver["name"] as? String == "bulkhead")
            let rules = try #require(driver["rules"] as? [[String: Any]])
            let result = try #require((run["results"] as? [[String: Any]])?.first)
            #expect(result["ruleId"] as? String == "unknown-service")
            #expect(result["level"] as? String == "error")
            let index = try #require(result["ruleIndex"] as? Int)
            #expect(rules[index]["id"] as? String == "unknown-service")
            let location = try #require((result["locations"] as? [[String: Any]])?.first?["physicalLocation"] as? [String: Any])
            let region = try #require(location["region"] as? [String: Any])
            #expect(region["startLine"] as? Int == 13)
            #expect(region["startColumn"] as? Int == 9)
        }
    }

    @Test func githubFormat() throws {
        try withFiles(["shop.yaml": typo]) { dir in
            let r = try bulkhead(["validate", "--format", "github", dir])
            #expect(r.status == 1)
            #expect(r.stdout.contains("::error file=\(dir)/shop.yaml,line=13,col=9,title=bulkhead unknown-service::segment 'shop' has no service 'apii' (did you mean 'api'?)"), "\(r.stdout)")
        }
    }

    @Test func badInputNeverCrashes() throws {
        var junk = [UInt8](repeating: 0, count: 4096)
        for i in junk.indices { junk[i] = UInt8(truncatingIfNeeded: i &* 2654435761 >> 7) }
        let deep = "a: " + String(repeating: "[", count: 10_000) + "\n"
        try withFiles(["deep.yaml": deep, "empty.yaml": ""]) { dir in
            try Data(junk).write(to: URL(fileURLWithPath: dir + "/junk.yaml"))
            try Data([0x73, 0x65, 0x67, 0xff, 0xfe, 0x0a]).write(to: URL(fileURLWithPath: dir + "/latin.yaml"))
            let big = String(repeating: "# x\n", count: 300_000)
            try big.write(toFile: dir + "/big.yaml", atomically: true, encoding: .utf8)
            let r = try bulkhead(["validate", "--format", "json", dir])
            #expect(r.status == 1)
            let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            let codes = (json["diagnostics"] as? [[String: Any]])?.compactMap { $0["code"] as? String }.sorted()
            #expect(codes == ["empty-file", "encoding", "not-text", "too-large", "too-large"], "\(r.stdout)")
        }
    }
}

@Suite struct SchemaCommand {
    @Test func printsJSONSchema() throws {
        for kind in ["policy", "inventory"] {
            let r = try bulkhead(["schema", kind])
            #expect(r.status == 0)
            let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
            #expect(json?["$schema"] as? String == "http://json-schema.org/draft-07/schema#")
        }
    }

    /// An independent JSON Schema implementation (python jsonschema) agrees with the schema on the
    /// example policies, and rejects a policy with a bare port.
    @Test func schemaAcceptsExamplesAndRejectsBadPort() throws {
        let schema = try bulkhead(["schema"]).stdout
        try withFiles(["schema.json": schema, "bad.yaml": good.replacingOccurrences(of: "tcp/8080", with: "8080")]) { dir in
            let script = """
            import json, sys, glob, yaml, jsonschema
            schema = json.load(open(sys.argv[1]))
            ok = [f for f in sorted(glob.glob(sys.argv[2] + '/*.yaml'))]
            for f in ok:
                for doc in yaml.load_all(open(f), Loader=yaml.BaseLoader):
                    jsonschema.validate(doc, schema)
            try:
                jsonschema.validate(yaml.load(open(sys.argv[3]), Loader=yaml.BaseLoader), schema)
            except jsonschema.ValidationError:
                print("rejected")
            """
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3", "-c", script, dir + "/schema.json", repositoryRoot + "/policies", dir + "/bad.yaml"]
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            let o = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
            #expect(o == "rejected\n")
        }
    }
}
