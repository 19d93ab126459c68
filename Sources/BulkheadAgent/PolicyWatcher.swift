import Foundation

/// Notices edits to the policy files by polling their names, sizes and modification times: cheap
/// for a directory of policies, works on every filesystem (inotify misses edits through some
/// bind mounts and editors' rename-over-save), and needs no extra dependency.
struct PolicyWatcher: Sendable {
    var paths: [String]

    /// A fingerprint of every policy file under `paths`.
    func signature() -> [String] {
        var out: [String] = []
        let fm = FileManager.default
        for path in paths {
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDirectory) else {
                out.append("missing:\(path)")
                continue
            }
            let files: [String]
            if isDirectory.boolValue {
                let e = fm.enumerator(atPath: path)
                var found: [String] = []
                while let name = e?.nextObject() as? String {
                    if name.hasSuffix(".yaml") || name.hasSuffix(".yml") { found.append(path + "/" + name) }
                }
                files = found.sorted()
            } else {
                files = [path]
            }
            for f in files {
                let a = try? fm.attributesOfItem(atPath: f)
                let size = (a?[.size] as? NSNumber)?.int64Value ?? -1
                let time = (a?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
                out.append("\(f):\(size):\(time)")
            }
        }
        return out
    }
}
