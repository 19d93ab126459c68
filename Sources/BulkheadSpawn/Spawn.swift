#if canImport(Glibc)
import Glibc
#endif

/// Starting a child process with a clean signal setup, in one place (the bulkhead-bench children,
/// the agent process and the commands of the Docker tests all start theirs here).
///
/// Why not `posix_spawn` with default attributes, or Foundation's `Process`: the Swift runtime's
/// threads block signals, and a child inherits the spawning thread's signal mask and ignored
/// signals. A child started from such a thread never sees the SIGTERM sent to stop it (the agent,
/// a benchmark server), and `docker exec` with SIGCHLD blocked never returns. Every child here
/// starts with an empty mask and every signal at its default action.
public enum Spawn {
    /// Where one of the child's standard descriptors goes.
    public enum Redirect: Sendable, Hashable {
        /// The parent's descriptor.
        case inherit
        /// `/dev/null` (read-only for stdin, write-only otherwise).
        case null
        /// A file, created or truncated (mode 0644).
        case file(String)
        /// A descriptor of the parent, duplicated (a pipe's end).
        case descriptor(Int32)
    }

    /// `posix_spawn` refused: the command, and the errno it returned.
    public struct Failure: Error, Sendable, Hashable, CustomStringConvertible {
        public var command: [String]
        public var errno: Int32
        public init(command: [String], errno: Int32) {
            self.command = command
            self.errno = errno
        }
        public var description: String {
            "cannot start \(command.first ?? "") (\(command.joined(separator: " "))): \(String(cString: strerror(errno))); check that it is installed and executable"
        }
    }

    /// Starts `command` (argv; `command[0]` is looked up in PATH unless it holds a `/`) and returns
    /// its pid. The caller reaps it (`wait`).
    public static func start(_ command: [String], stdin: Redirect = .inherit, stdout: Redirect = .inherit,
                             stderr: Redirect = .inherit) throws(Failure) -> pid_t {
        precondition(!command.isEmpty, "an empty command")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (fd, redirect) in [(Int32(0), stdin), (1, stdout), (2, stderr)] {
            switch redirect {
            case .inherit: break
            case .null: posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
            case .file(let path): posix_spawn_file_actions_addopen(&actions, fd, path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            case .descriptor(let source): posix_spawn_file_actions_adddup2(&actions, source, fd)
            }
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = command.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, command[0], &actions, &attributes, argv, environ)
        guard rc == 0 else { throw Failure(command: command, errno: rc) }
        return pid
    }

    /// How a reaped child ended: its exit code, or 128 + the signal that killed it (as shells say),
    /// with what it used (`ru_maxrss` is its peak RSS in KiB).
    public struct Termination: Sendable {
        public var status: Int32
        public var usage: rusage
    }

    /// Waits for `pid` to end (retrying on EINTR) and reaps it.
    public static func wait(_ pid: pid_t) -> Termination {
        var raw: Int32 = 0
        var usage = rusage()
        while wait4(pid, &raw, 0, &usage) < 0 && errno == EINTR {}
        return Termination(status: exitStatus(raw), usage: usage)
    }

    /// WIFEXITED / WEXITSTATUS / WTERMSIG, which are macros Swift does not import: the exit code,
    /// or 128 + the signal number.
    public static func exitStatus(_ raw: Int32) -> Int32 {
        (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
    }
}
