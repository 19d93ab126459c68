import Foundation

/// Runs one external command to completion. The lab builds everything through `ip` (iproute2); tests can
/// pass a recording double to check the exact commands without root.
public protocol CommandRunning: Sendable {
    /// Runs `command` (argv, no shell) and returns its standard output.
    /// - Throws: `LabError.commandFailed` carrying the standard error and `purpose` when it exits non-zero.
    func run(_ command: [String], purpose: String) throws -> String
}

/// Runs commands with Foundation `Process`, looking the executable up in the usual sbin/bin directories.
public struct SystemCommandRunner: CommandRunning {
    public init() {}

    /// Root's PATH is not guaranteed under test runners, and `ip` lives in /usr/sbin or /sbin on Debian.
    static let searchPath = ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/local/bin"]

    static func locate(_ tool: String) -> String? {
        if tool.hasPrefix("/") { return tool }
        return searchPath.map { "\($0)/\(tool)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    public func run(_ command: [String], purpose: String) throws -> String {
        guard let tool = command.first, let path = Self.locate(tool) else {
            throw LabError.commandFailed(command: command, status: 127, stderr: "\(command.first ?? "") not found in \(Self.searchPath.joined(separator: ":"))", purpose: purpose)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = Array(command.dropFirst())
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw LabError.commandFailed(command: command, status: 127, stderr: "\(error)", purpose: purpose)
        }
        // `ip` writes little; stderr is read after stdout reaches EOF, which cannot deadlock below 64 KiB.
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            throw LabError.commandFailed(command: command, status: process.terminationStatus,
                                         stderr: String(decoding: stderr, as: UTF8.self), purpose: purpose)
        }
        return String(decoding: stdout, as: UTF8.self)
    }
}
