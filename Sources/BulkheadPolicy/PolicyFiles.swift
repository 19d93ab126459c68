import BulkheadYAML
#if canImport(Glibc)
import Glibc
#endif

/// Finds the policy files under the paths given, without ever opening one: lstat and readdir only,
/// so nothing here can block on a FIFO or a device.
///
/// - Only regular files are policies; a FIFO, socket or device named `*.yaml` is an error.
/// - A symlink is followed once: its target must not be a symlink itself. Directories are
///   recognised by (device, inode), so `ln -s . loop` is read once, not forever, and a file
///   reached by two paths is read once (a `skipped-entry` warning for the second).
/// - Like sshd's StrictModes, every directory walked and every file read must be writable by
///   its owner only, and owned by root or by this process's user: anyone who can write a policy
///   can open any flow. `insecure-permissions` is a warning for `validate`; the agent refuses.
public struct PolicyFiles: Sendable {
    /// One policy file: the path shown in diagnostics (as walked, through any link) and the path
    /// opened (the link's target, opened with O_NOFOLLOW).
    public struct File: Sendable, Hashable {
        public var path: String
        public var openPath: String
        public var identity: FileIdentity
    }

    public var files: [File] = []
    public var diagnostics: [Diagnostic] = []
    /// A path given could not be read at all (the CLI exits 66).
    public var unreadable = false
    /// Changes whenever a file's content, mode, owner or the set of files changes (the agent's
    /// watcher compares it between polls).
    public var fingerprint: [String] = []

    /// Deeper than this is refused: a policy tree is a few levels deep, and the bound keeps a
    /// hostile tree of bind mounts or links from making the walk unbounded.
    public static let maximumDepth = 16
    /// Users that may own policy files: root and this process's own user.
    public static var trustedOwners: Set<UInt32> { [0, UInt32(geteuid())] }

    private var visitedDirectories: [FileIdentity: String] = [:]
    private var seenFiles: [FileIdentity: String] = [:]

    public static func discover(_ paths: [String]) -> PolicyFiles {
        var walk = PolicyFiles()
        for path in paths { walk.visitRoot(path) }
        return walk
    }

    static func isPolicyName(_ name: String) -> Bool { name.hasSuffix(".yaml") || name.hasSuffix(".yml") }

    private mutating func error(_ code: DiagnosticCode, _ message: String, _ path: String) {
        diagnostics.append(Diagnostic(.error, code, message, file: path, at: .start))
    }

    private mutating func warning(_ code: DiagnosticCode, _ message: String, _ path: String) {
        diagnostics.append(Diagnostic(.warning, code, message, file: path, at: .start))
    }

    private mutating func visitRoot(_ path: String) {
        var st = stat()
        guard lstat(path, &st) == 0 else {
            let code = errno
            error(.unreadable, code == ENOENT ? "no such file or directory" : "cannot read: \(SystemError.describe(code))", path)
            unreadable = true
            return
        }
        var target = path
        if (st.st_mode & S_IFMT) == S_IFLNK {
            guard let resolved = followOnce(path, policyName: true) else { unreadable = true; return }
            (target, st) = resolved
        }
        switch st.st_mode & S_IFMT {
        case S_IFDIR:
            let before = files.count
            guard walkDirectory(path, st, depth: 0) else { unreadable = true; return }
            if files.count == before, !diagnostics.contains(where: { $0.file.hasPrefix(path) && $0.severity == .error }) {
                error(.noPolicyFiles, "directory holds no policy files (*.yaml or *.yml)", path)
            }
        case S_IFREG:
            addFile(path, openPath: target, st)
        default:
            error(.unreadable, "\(FileIdentity.kind(st.st_mode)), not a regular file: refused (reading it could block or never end)", path)
            unreadable = true
        }
    }

    /// Resolves one symlink: its target must exist and must not be a symlink. Returns the target's
    /// path and lstat, or nil after a diagnostic (an error when the entry would have been a policy
    /// file, so a policy never silently disappears; otherwise a warning).
    private mutating func followOnce(_ path: String, policyName: Bool) -> (String, stat)? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n > 0 else {
            let why = SystemError.describe(errno)
            policyName ? error(.unreadable, "cannot read symlink: \(why)", path) : warning(.skippedEntry, "symlink not followed: \(why)", path)
            return nil
        }
        let link = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let target: String
        if link.hasPrefix("/") {
            target = link
        } else {
            let slash = path.lastIndex(of: "/")
            target = (slash.map { String(path[...$0]) } ?? "") + link
        }
        var st = stat()
        guard lstat(target, &st) == 0 else {
            let why = errno == ENOENT ? "its target \(target) does not exist" : "cannot read its target \(target): \(SystemError.describe(errno))"
            policyName ? error(.unreadable, "dangling symlink: \(why)", path) : warning(.skippedEntry, "symlink not followed: \(why)", path)
            return nil
        }
        if (st.st_mode & S_IFMT) == S_IFLNK {
            let message = "symlink to another symlink (\(target)): Bulkhead follows one link at most; point it at the file or directory itself"
            policyName ? error(.unreadable, message, path) : warning(.skippedEntry, message, path)
            return nil
        }
        return (target, st)
    }

    /// Returns false when the directory itself cannot be read.
    private mutating func walkDirectory(_ path: String, _ st: stat, depth: Int) -> Bool {
        let id = FileIdentity(st)
        if let first = visitedDirectories[id] {
            warning(.skippedEntry, "symlink loop or second path to \(first), already read: skipped", path)
            return true
        }
        guard depth <= Self.maximumDepth else {
            error(.unreadable, "directories nested deeper than \(Self.maximumDepth) levels: not read", path)
            return true
        }
        visitedDirectories[id] = path
        checkPermissions(path, st, what: "directory")
        fingerprint.append("d \(path) \(id.device):\(id.inode) \(st.st_mode) \(st.st_uid) \(st.st_ctim.tv_sec).\(st.st_ctim.tv_nsec)")
        guard let dir = opendir(path) else {
            error(.unreadable, "cannot read directory: \(SystemError.describe(errno))", path)
            return false
        }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            // Hidden entries (".git", Kubernetes' "..data") are never policies.
            if !name.hasPrefix(".") { names.append(name) }
        }
        closedir(dir)
        for name in names.sorted() {
            let child = path.hasSuffix("/") ? path + name : path + "/" + name
            var cst = stat()
            guard lstat(child, &cst) == 0 else { continue }  // removed meanwhile
            var target = child
            let policyName = Self.isPolicyName(name)
            if (cst.st_mode & S_IFMT) == S_IFLNK {
                guard let resolved = followOnce(child, policyName: policyName) else {
                    if policyName { unreadable = true }
                    continue
                }
                (target, cst) = resolved
            }
            switch cst.st_mode & S_IFMT {
            case S_IFDIR:
                if !walkDirectory(child, cst, depth: depth + 1) { unreadable = true }
            case S_IFREG where policyName:
                addFile(child, openPath: target, cst)
            default:
                if policyName {
                    error(.unreadable, "\(FileIdentity.kind(cst.st_mode)), not a regular file: refused (reading it could block or never end)", child)
                    unreadable = true
                }
            }
        }
        return true
    }

    private mutating func addFile(_ path: String, openPath: String, _ st: stat) {
        let id = FileIdentity(st)
        if let first = seenFiles[id] {
            warning(.skippedEntry, "same file as \(first), already read: skipped", path)
            return
        }
        seenFiles[id] = path
        checkPermissions(path, st, what: "file")
        files.append(File(path: path, openPath: openPath, identity: id))
        fingerprint.append("f \(path) \(id.device):\(id.inode) \(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(st.st_mode) \(st.st_uid) \(st.st_ctim.tv_sec).\(st.st_ctim.tv_nsec)")
    }

    private mutating func checkPermissions(_ path: String, _ st: stat, what: String) {
        let mode = st.st_mode & 0o7777
        if mode & 0o022 != 0 {
            warning(.insecurePermissions,
                    "policy \(what) is writable by \(mode & 0o002 != 0 ? "everyone" : "its group") (mode \(String(mode, radix: 8))): anyone who can write a policy can open any flow, so the agent refuses it; run chmod go-w",
                    path)
        }
        if !Self.trustedOwners.contains(UInt32(st.st_uid)) {
            warning(.insecurePermissions,
                    "policy \(what) is owned by uid \(st.st_uid), not by root or this process's user (uid \(geteuid())): the agent refuses it; run chown root",
                    path)
        }
    }
}
