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
        /// The path relative to the root it was found under (`team/shop.yaml` for
        /// `policies/team/shop.yaml` under `policies`; a file given itself: its name). What rule
        /// comments carry, so the table does not depend on where the policies live. Unique among
        /// the files found: see `disambiguateNames`.
        public var name: String
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
        walk.disambiguateNames(roots: paths)
        return walk
    }

    /// Two roots may hold the same relative path (`a/shop.yaml` and `b/shop.yaml` given as `a` and
    /// `b`): each such file is then named with its root's last component in front (`a/shop.yaml`),
    /// and, should that still collide, with the root's position (`root2/shop.yaml`). Files whose
    /// names are unique keep them, so adding a root elsewhere does not rename them.
    mutating func disambiguateNames(roots: [String]) {
        var rootOf: [Int] = []
        for file in files {
            rootOf.append(roots.firstIndex { root in
                let r = root.hasSuffix("/") ? String(root.dropLast()) : root
                return file.path == root || file.path.hasPrefix(r + "/")
            } ?? 0)
        }
        var count: [String: Int] = [:]
        for f in files { count[f.name, default: 0] += 1 }
        guard count.values.contains(where: { $0 > 1 }) else { return }
        var renamed = files
        for i in files.indices where count[files[i].name, default: 0] > 1 {
            let root = roots.indices.contains(rootOf[i]) ? roots[rootOf[i]] : ""
            let last = root.split(separator: "/").last.map(String.init) ?? ""
            let isFile = files[i].path == root
            renamed[i].name = isFile || last.isEmpty || last == "." || last == ".." ? files[i].name : last + "/" + files[i].name
        }
        var again: [String: Int] = [:]
        for f in renamed { again[f.name, default: 0] += 1 }
        for i in renamed.indices where again[renamed[i].name, default: 0] > 1 {
            renamed[i].name = "root\(rootOf[i] + 1)/" + files[i].name
        }
        files = renamed
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
            guard walkDirectory(path, st, depth: 0, relative: "") else { unreadable = true; return }
            if files.count == before, !diagnostics.contains(where: { $0.file.hasPrefix(path) && $0.severity == .error }) {
                error(.noPolicyFiles, "directory holds no policy files (*.yaml or *.yml)", path)
            }
        case S_IFREG:
            addFile(path, openPath: target, st, name: path.split(separator: "/").last.map(String.init) ?? path)
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
    private mutating func walkDirectory(_ path: String, _ st: stat, depth: Int, relative: String) -> Bool {
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
            let childName = relative.isEmpty ? name : relative + "/" + name
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
                if !walkDirectory(child, cst, depth: depth + 1, relative: childName) { unreadable = true }
            case S_IFREG where policyName:
                addFile(child, openPath: target, cst, name: childName)
            default:
                if policyName {
                    error(.unreadable, "\(FileIdentity.kind(cst.st_mode)), not a regular file: refused (reading it could block or never end)", child)
                    unreadable = true
                }
            }
        }
        return true
    }

    private mutating func addFile(_ path: String, openPath: String, _ st: stat, name: String) {
        let id = FileIdentity(st)
        if let first = seenFiles[id] {
            warning(.skippedEntry, "same file as \(first), already read: skipped", path)
            return
        }
        seenFiles[id] = path
        checkPermissions(path, st, what: "file")
        files.append(File(path: path, openPath: openPath, identity: id, name: name))
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
