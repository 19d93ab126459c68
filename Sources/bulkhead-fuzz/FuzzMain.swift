#if canImport(Glibc)
import Glibc
#endif

/// One fuzz target: takes any bytes and must never crash, hang or leak past ASan.
struct FuzzTarget: Sendable {
    var name: String
    var summary: String
    var run: @Sendable ([UInt8]) -> Void
}

/// Every target, by the name `scripts/fuzz.sh` and `BULKHEAD_FUZZ_TARGET` use.
let fuzzTargets: [FuzzTarget] = [
    FuzzTarget(name: "policy", summary: "policy YAML (NUL separates files) -> PolicyLoader.load(sources:), then compile", run: PolicyFuzz.run),
    FuzzTarget(name: "inventory", summary: "inventory YAML/JSON -> InventoryLoader.load, then lint and compile", run: InventoryFuzz.run),
    FuzzTarget(name: "netlink", summary: "netlink messages of a table dump -> NetlinkNetfilter.decodeDump (the whole dump path)", run: DumpFuzz.run),
    FuzzTarget(name: "delinearize", summary: "one set's elements and one rule's expressions as libnftnl hands them over -> ElementEncoding, Delinearizer", run: DelinearizeFuzz.run),
    FuzzTarget(name: "docker", summary: "Engine API JSON (lists, inspect) and the /events byte stream -> models and inventory", run: DockerFuzz.run),
    FuzzTarget(name: "http", summary: "bytes from a client -> the agent's HTTP connection pipeline on an EmbeddedChannel", run: HTTPFuzz.run),
]

/// The target chosen for this process. libFuzzer re-executes itself (`-fork`, `-minimize_crash`)
/// with its own flags only, so the choice travels in the environment, not on the command line.
let selectedTarget: FuzzTarget = {
    let name = getenv("BULKHEAD_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = fuzzTargets.first(where: { $0.name == name }) else {
        fail("set BULKHEAD_FUZZ_TARGET to one of: \(fuzzTargets.map(\.name).joined(separator: ", ")) (got '\(name)')")
    }
    return target
}()

/// Stops with a message on stderr (a broken setup, never a finding).
func fail(_ message: String) -> Never {
    let line = Array("bulkhead-fuzz: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}

func save(_ bytes: [UInt8], to path: String) {
    guard let f = fopen(path, "wb") else { fail("cannot write \(path)") }
    _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
    fclose(f)
}

#if FUZZING
// Built with -sanitize=fuzzer: libFuzzer owns `main` and calls this for every input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    selectedTarget.run(bytes)
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// SwiftPM links executables with `--defsym main=<module>_main`, which needs an entry point here;
/// with the fuzzer runtime linked, libFuzzer's own `main` is the one that runs, and should the
/// linker pick this one instead it starts the same driver.
@main
enum FuzzMain {
    static func main() {
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput))
    }
}
#else
/// Without the fuzzer runtime (the ordinary `swift build`): replays inputs through a target, so a
/// crash file can be reproduced under the debugger and the targets keep compiling with the package.
@main
enum FuzzMain {
    static func main() {
        let args = Array(CommandLine.arguments.dropFirst())
        if args.count == 2, args[0] == "--write-delinearize-seeds" {
            // This corpus is generated (its byte layout is ours), from the example table.
            for (i, seed) in DelinearizeFuzz.seeds().enumerated() {
                save(seed, to: args[1] + "/table-\(i < 10 ? "0" : "")\(i)")
            }
            return
        }
        if args.count == 2, args[0] == "--write-netlink-seeds" {
            do {
                try DumpSeeds.write(to: args[1])
            } catch {
                fail("cannot record the seed dumps: \(error)")
            }
            return
        }
        guard args.count >= 2, let target = fuzzTargets.first(where: { $0.name == args[0] }) else {
            print("usage: bulkhead-fuzz TARGET FILE|DIR...   (replays inputs; scripts/fuzz.sh builds the fuzzers)")
            for t in fuzzTargets { print("  \(t.name): \(t.summary)") }
            exit(args.isEmpty ? 0 : 2)
        }
        var count = 0
        for path in args.dropFirst() {
            for file in Replay.files(at: path) {
                target.run(Replay.read(file))
                count += 1
            }
        }
        print("replayed \(count) inputs through \(target.name)")
    }
}

enum Replay {
    static func files(at path: String) -> [String] {
        var st = stat()
        guard stat(path, &st) == 0 else { return [] }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { return [path] }
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var out: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if !name.hasPrefix(".") { out.append(path + "/" + name) }
        }
        return out.sorted()
    }

    static func read(_ path: String) -> [UInt8] {
        guard let f = fopen(path, "rb") else { return [] }
        defer { fclose(f) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buffer, 1, buffer.count, f)
            if n <= 0 { break }
            out += buffer[0..<n]
        }
        return out
    }
}
#endif
