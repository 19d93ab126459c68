import BulkheadInventory
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Why an inventory file cannot be used; the last good inventory stays enforced meanwhile.
public enum InventoryFileError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file is gone (deleted, or renamed away and not replaced within the grace period).
    case missing(path: String)
    /// It does not load: `errors` diagnostics, the first of them in `first` (formatted as `validate` prints it).
    case invalid(path: String, errors: Int, first: String)
    /// Its directory cannot be watched (inotify).
    case watchFailed(path: String, detail: String)

    public var description: String {
        switch self {
        case .missing(let path):
            return "inventory file \(path) is missing; restore it (the last good inventory stays enforced)"
        case .invalid(let path, let errors, let first):
            return "inventory file \(path) is invalid: \(errors) error\(errors == 1 ? "" : "s") (first: \(first)); fix it (the last good inventory stays enforced)"
        case .watchFailed(let path, let detail):
            return "cannot watch inventory file \(path): \(detail)"
        }
    }
}

/// A `ContainerSource` that reads an inventory snapshot file (the format `bulkhead inventory`
/// writes and `--inventory` reads, through the same `InventoryLoader`) and follows its edits:
/// for hosts whose workloads are not Docker containers, and for the lab.
///
/// Edits are noticed with inotify on the file's directory, so an editor's save by rename over
/// the file (a new inode) is followed like an in-place write; a write is read once the writer
/// closes the file, never half-way. A check of the file's identity (device, inode, size, change
/// times) every `recheckInterval` covers filesystems where inotify sees nothing (some bind mounts).
///
/// Each valid edit is compared with the last good inventory and reported per container (added,
/// changed, removed, by id or else by name); an edit of the networks or host addresses is reported
/// as `.resynced` (read it all again). A file that does not load, or is deleted, ends the event
/// stream with `InventoryFileError`; `snapshot()` throws the same until the file is fixed, so the
/// consumer keeps the last good inventory and says why.
public final class InventoryFileSource: ContainerSource, Sendable {
    public let path: String
    /// How often the file's identity is checked without an inotify event.
    public let recheckInterval: Duration
    /// How long a file may be missing before it counts as deleted: editors that save by renaming
    /// the old file away and writing a new one leave a moment without the file.
    public let missingGrace: Duration

    struct Signature: Hashable {
        var device: UInt64, inode: UInt64, size: Int64
        var modified: Int64, changed: Int64
    }

    private struct State {
        var signature: Signature?
        var inventory: Inventory?
    }

    private let state = Mutex(State())

    public init(path: String, recheckInterval: Duration = .seconds(1), missingGrace: Duration = .milliseconds(300)) {
        self.path = path
        self.recheckInterval = recheckInterval
        self.missingGrace = missingGrace
    }

    // MARK: ContainerSource

    /// Reads the file now (on a thread of its own: file I/O never runs on the cooperative pool).
    public func snapshot() async throws -> Inventory {
        try await Self.onOwnThread { [self] in
            let (signature, inventory) = try load()
            state.withLock { $0 = State(signature: signature, inventory: inventory) }
            return inventory
        }
    }

    /// The container as the last good file lists it.
    public func inspect(id: String) async throws -> Container? {
        state.withLock { s in s.inventory?.containers.first { EndpointIndex.key(of: $0) == id } }
    }

    public func events() -> AsyncThrowingStream<SourceEvent, Error> {
        let (stream, continuation) = AsyncThrowingStream<SourceEvent, Error>.makeStream()
        let watcher: Watcher
        do {
            watcher = try Watcher(path: path)
        } catch {
            continuation.finish(throwing: error)
            return stream
        }
        continuation.onTermination = { _ in watcher.stop() }
        let thread = Thread { [self] in
            defer { watcher.close() }
            follow(watcher, continuation)
        }
        thread.name = "bulkhead-inventory-watch"
        thread.start()
        return stream
    }

    public func outageDescription(_ error: (any Error)?) -> String {
        if let error = error as? InventoryFileError { return "\(error)" }
        return "inventory file \(path) cannot be read\(error.map { ": \($0)" } ?? "") (the last good inventory stays enforced)"
    }

    // MARK: Following

    /// The watch thread: waits for inotify events (or the recheck interval), and on each change
    /// of the file's identity reports what changed.
    private func follow(_ watcher: Watcher, _ continuation: AsyncThrowingStream<SourceEvent, Error>.Continuation) {
        var missingSince: ContinuousClock.Instant?
        // The first pass checks at once: an edit between the last snapshot and the watch is not lost.
        var first = true
        // A file found invalid without an event naming it may be half-written by a writer that
        // has not closed it yet: it counts when read again unchanged (or when its close is seen).
        var suspect: Signature?
        while true {
            let timeout = missingSince != nil || suspect != nil ? min(recheckInterval, .milliseconds(50)) : recheckInterval
            var named = false
            if !first {
                switch watcher.wait(timeout: timeout) {
                case .stopped: return
                case .named: named = true
                case .timedOut: break
                }
            }
            let checkNow = first
            first = false
            guard let signature = Self.signature(of: path) else {
                let since = missingSince ?? .now
                missingSince = since
                if ContinuousClock.now - since >= missingGrace {
                    continuation.finish(throwing: InventoryFileError.missing(path: path))
                    return
                }
                continue
            }
            missingSince = nil
            // An event that names the file reads it whatever its identity says: a same-size edit
            // within one tick of the kernel's coarse file clock keeps every field of it.
            guard checkNow || named || signature != state.withLock({ $0.signature }) else { continue }
            do {
                let (loadedSignature, inventory) = try load()
                let old = state.withLock { s -> Inventory? in
                    defer { s = State(signature: loadedSignature, inventory: inventory) }
                    return s.inventory
                }
                guard let old else { continue }  // nothing reported yet: whoever snapshots reads it
                for event in Self.changes(from: old, to: inventory) { continuation.yield(event) }
                suspect = nil
            } catch {
                if case .invalid = error, !named, suspect != signature {
                    suspect = signature
                    continue
                }
                continuation.finish(throwing: error)
                return
            }
        }
    }

    /// The events that turn `old` into `new`: per container, or `.resynced` when the networks or
    /// the host changed (a container's attachments cannot be placed without them).
    public static func changes(from old: Inventory, to new: Inventory) -> [SourceEvent] {
        func placeless(_ networks: [Network]) -> [Network] { networks.map { var n = $0; n.source = nil; return n } }
        guard placeless(old.networks) == placeless(new.networks), old.hostAddresses == new.hostAddresses else { return [.resynced] }
        let before = Dictionary(old.containers.map { (EndpointIndex.key(of: $0), $0) }, uniquingKeysWith: { a, _ in a })
        let after = Dictionary(new.containers.map { (EndpointIndex.key(of: $0), $0) }, uniquingKeysWith: { a, _ in a })
        var events: [SourceEvent] = []
        for key in Set(before.keys).union(after.keys).sorted() {
            switch (before[key], after[key]) {
            case (nil, let c?): events.append(SourceEvent(.added, containerID: key, containerName: c.name))
            case (let c?, nil): events.append(SourceEvent(.removed, containerID: key, containerName: c.name))
            case (let a?, let b?) where !sameEndpoint(a, b): events.append(SourceEvent(.changed, containerID: key, containerName: b.name))
            default: break
            }
        }
        return events
    }

    /// Equal but for where in the file the container is written (a line inserted above moves it).
    static func sameEndpoint(_ a: Container, _ b: Container) -> Bool {
        var a = a, b = b
        a.source = nil
        b.source = nil
        return a == b
    }

    /// Loads the file: its identity, and the inventory when it is valid.
    func load() throws(InventoryFileError) -> (Signature, Inventory) {
        guard let signature = Self.signature(of: path) else { throw .missing(path: path) }
        let (inventory, diagnostics) = InventoryLoader.load(path: path)
        guard let inventory else {
            let errors = diagnostics.filter { $0.severity == .error }
            throw .invalid(path: path, errors: max(errors.count, 1), first: errors.first?.formatted ?? "does not load")
        }
        return (signature, inventory)
    }

    static func signature(of path: String) -> Signature? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Signature(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
                         modified: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
                         changed: Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec))
    }

    static func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Result { try body() }) }
            thread.name = "bulkhead-inventory-read"
            thread.start()
        }
    }
}

/// inotify on the file's directory, plus a pipe that wakes the waiting thread when the stream ends.
final class Watcher: Sendable {
    let inotify: Int32
    let wake: (read: Int32, write: Int32)
    let name: String
    private let stopped = Atomic<Bool>(false)

    init(path: String) throws(InventoryFileError) {
        let url = URL(fileURLWithPath: path)
        name = url.lastPathComponent
        let directory = url.deletingLastPathComponent().path
        let fd = inotify_init1(Int32(IN_CLOEXEC) | Int32(IN_NONBLOCK))
        guard fd >= 0 else { throw .watchFailed(path: path, detail: "inotify_init1: \(String(cString: strerror(errno)))") }
        // Close of a written file, a rename onto or away from the name, deletion. Not creation nor
        // each write: a file just created or half written is read when its writer closes it.
        let mask = UInt32(IN_CLOSE_WRITE) | UInt32(IN_MOVED_TO) | UInt32(IN_MOVED_FROM)
            | UInt32(IN_DELETE) | UInt32(IN_ATTRIB) | UInt32(IN_DELETE_SELF) | UInt32(IN_MOVE_SELF)
        guard inotify_add_watch(fd, directory, mask) >= 0 else {
            let detail = String(cString: strerror(errno))
            Glibc.close(fd)
            throw .watchFailed(path: path, detail: "inotify_add_watch(\(directory)): \(detail)")
        }
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else {
            Glibc.close(fd)
            throw .watchFailed(path: path, detail: "pipe: \(String(cString: strerror(errno)))")
        }
        for end in fds { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        inotify = fd
        wake = (fds[0], fds[1])
    }

    enum Wake { case named, timedOut, stopped }

    /// Waits until an event names the file (or the directory itself moved), or `timeout` passes,
    /// or `stop()` is called.
    func wait(timeout: Duration) -> Wake {
        let deadline = ContinuousClock.now + timeout
        while !stopped.load(ordering: .acquiring) {
            let left = deadline - .now
            guard left > .zero else { return .timedOut }
            var fds = [pollfd(fd: inotify, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
            let ms = Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
            let n = poll(&fds, 2, ms)
            if n < 0 && errno != EINTR { return .named }  // cannot wait: read the file
            if fds[1].revents != 0 { return .stopped }
            if fds[0].revents != 0, drainNamesFile() { return .named }
        }
        return .stopped
    }

    /// Reads every queued inotify event; true when one concerns the file (or overflowed).
    private func drainNamesFile() -> Bool {
        var relevant = false
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(inotify, $0.baseAddress, $0.count) }
            guard n > 0 else { return relevant }
            var offset = 0
            let header = MemoryLayout<inotify_event>.size
            while offset + header <= n {
                let (mask, length) = buffer.withUnsafeBytes { raw -> (UInt32, Int) in
                    let event = raw.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
                    return (event.mask, Int(event.len))
                }
                let nameBytes = buffer[(offset + header)..<min(offset + header + length, n)].prefix { $0 != 0 }
                if mask & (UInt32(IN_Q_OVERFLOW) | UInt32(IN_DELETE_SELF) | UInt32(IN_MOVE_SELF) | UInt32(IN_IGNORED)) != 0
                    || String(decoding: nameBytes, as: UTF8.self) == name {
                    relevant = true
                }
                offset += header + length
            }
        }
    }

    func stop() {
        stopped.store(true, ordering: .releasing)
        var byte: UInt8 = 1
        _ = Glibc.write(wake.write, &byte, 1)
    }

    func close() {
        Glibc.close(inotify)
        Glibc.close(wake.read)
        Glibc.close(wake.write)
    }
}
