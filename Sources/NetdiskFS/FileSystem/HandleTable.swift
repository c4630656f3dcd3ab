import Foundation
import Synchronization
import Uploader

/// Open handles by number (`fuse_file_info.fh`), the writer of each path being written, and the
/// write handles each writer has (which decide who commits, and when).
final class HandleTable: Sendable {
    private struct State {
        var nextHandle: UInt64 = 1
        var files: [UInt64: OpenFile] = [:]
        var writers: [String: PathWriter] = [:]
        /// Write handles per writer, until their release.
        var writeHandles: [ObjectIdentifier: Set<UInt64>] = [:]
    }

    private let state = Mutex(State())

    /// A read handle (write handles come from ``attachWriteHandle(remotePath:opener:make:)``).
    func add(_ file: OpenFile) -> UInt64 {
        precondition(!file.isWriteHandle, "write handles are attached with their writer")
        return state.withLock { state in
            let handle = state.nextHandle
            state.nextHandle += 1
            state.files[handle] = file
            return handle
        }
    }

    func get(_ handle: UInt64) -> OpenFile? {
        state.withLock { $0.files[handle] }
    }

    func remove(_ handle: UInt64) -> OpenFile? {
        state.withLock { $0.files.removeValue(forKey: handle) }
    }

    func writer(for remotePath: String) -> PathWriter? {
        state.withLock { $0.writers[remotePath] }
    }

    func writers(in directory: String) -> [PathWriter] {
        state.withLock { state in
            state.writers.filter { RemotePath.split($0.key).parent == directory }.map(\.value)
        }
    }

    /// Writers at `path` or anywhere below it.
    func writers(under path: String) -> [PathWriter] {
        state.withLock { state in
            state.writers.filter { MetadataCache.isSelfOrDescendant($0.key, of: path) }.map(\.value)
        }
    }

    func allWriters() -> [PathWriter] {
        state.withLock { Array($0.writers.values) }
    }

    /// A new write handle on the path's writer (made by `make` if there is none), added in the same
    /// step, so a concurrent last release cannot detach the writer between.
    func attachWriteHandle(remotePath: String, opener: pid_t, make: () throws -> PathWriter) throws -> (PathWriter, UInt64) {
        func insert(_ writer: PathWriter, _ state: inout State) -> UInt64 {
            let handle = state.nextHandle
            state.nextHandle += 1
            state.files[handle] = OpenFile(writer: writer, access: .write, opener: opener)
            state.writeHandles[ObjectIdentifier(writer), default: []].insert(handle)
            return handle
        }
        if let attached = state.withLock({ state -> (PathWriter, UInt64)? in
            guard let writer = state.writers[remotePath] else { return nil }
            return (writer, insert(writer, &state))
        }) {
            return attached
        }
        // Made outside the lock: the engine's precreate may take a network round trip.
        let made = try make()
        return state.withLock { state in
            if let raced = state.writers[remotePath] {
                made.abort()
                return (raced, insert(raced, &state))
            }
            state.writers[remotePath] = made
            return (made, insert(made, &state))
        }
    }

    /// True when every write handle on `writer` other than `handle` has been closed by its opener:
    /// then `handle`'s close is the last one, and it commits.
    func isLastOpenWriteHandle(_ handle: UInt64, of writer: PathWriter) -> Bool {
        state.withLock { state in
            let handles = state.writeHandles[ObjectIdentifier(writer)] ?? []
            return handles.allSatisfy { $0 == handle || state.files[$0]?.openerClosed ?? true }
        }
    }

    /// One write handle on the writer was released; true when it was the last one. The check and
    /// the removal are one step: of two releases racing, exactly one is the last and commits.
    func releaseWriteHandle(_ handle: UInt64, of writer: PathWriter) -> Bool {
        state.withLock { state in
            let key = ObjectIdentifier(writer)
            guard state.writeHandles[key]?.remove(handle) != nil else { return false }
            return state.writeHandles[key]?.isEmpty ?? true
        }
    }

    /// After the last release's commit: the writer leaves the table unless a new handle arrived
    /// meanwhile. True when it left.
    func forgetWriterIfUnused(_ writer: PathWriter) -> Bool {
        state.withLock { state in
            let key = ObjectIdentifier(writer)
            if let handles = state.writeHandles[key], !handles.isEmpty { return false }
            state.writeHandles[key] = nil
            if let path = state.writers.first(where: { $0.value === writer })?.key { state.writers[path] = nil }
            return true
        }
    }

    /// Forgets the writer of a path and aborts it (unlink while writing, or a rename onto it).
    func abortWriter(for remotePath: String) -> PathWriter? {
        guard let writer = state.withLock({ $0.writers.removeValue(forKey: remotePath) }) else { return nil }
        writer.abort()
        return writer
    }

    /// Moves every writer at or below `source` to the same place below `target` (rename).
    /// Call with the writers' commit locks held, so no commit lands at the old path meanwhile.
    func retarget(from source: String, to target: String) {
        let moved = state.withLock { state -> [(PathWriter, String)] in
            var moved: [(PathWriter, String)] = []
            for (path, writer) in state.writers where MetadataCache.isSelfOrDescendant(path, of: source) {
                let newPath = target + path.dropFirst(source.count)
                state.writers[path] = nil
                moved.append((writer, newPath))
            }
            for (writer, newPath) in moved { state.writers[newPath] = writer }
            return moved
        }
        for (writer, newPath) in moved { writer.retarget(to: newPath) }
    }
}
