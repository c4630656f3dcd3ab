#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Uploader

/// rename(2), with files open for writing on either side (DESIGN.md, "Write semantics").
extension NetdiskFileSystem {
    /// Replaces a file, or an empty directory with a directory.
    ///
    /// - A file being written may be renamed (rsync and download managers do, even before the
    ///   kernel's release arrives); its commit lands at the new name. So do the commits of files
    ///   being written below a renamed directory.
    /// - A rename onto a file being written replaces it: that writer is aborted, and its bytes
    ///   are committed nowhere.
    /// - `RENAME_NOREPLACE` counts a file being written as existing.
    ///
    /// Every writer that moves has its commit lock held throughout: a commit in flight lands first
    /// (and is then moved with the rest), and no commit can start at the old path meanwhile.
    public func rename(_ from: String, to: String, noReplace: Bool) throws {
        try requireWritable()
        let source = paths.remote(from), target = paths.remote(to)
        if source == target { return }
        guard source != paths.root else { throw FileSystemError.busy }
        try RemotePath.checkNewName(target)
        if case .link(let link)? = try resolve(source) {
            return try renameSymlink(link, from: source, to: target, noReplace: noReplace)
        }
        // The writers that move, and the one replaced at the target, are locked together in one
        // order (two renames never wait on each other); a writer that appeared meanwhile means again.
        var locked: [PathWriter] = []
        for attempt in 0..<3 {
            let wanted = Self.ordered(handles.writers(under: source) + [handles.writer(for: target)].compactMap { $0 })
            for writer in wanted { writer.commitLock.lock() }
            let now = Set((handles.writers(under: source) + [handles.writer(for: target)].compactMap { $0 }).map(ObjectIdentifier.init))
            if now.isSubset(of: Set(wanted.map(ObjectIdentifier.init))) || attempt == 2 {
                locked = wanted
                break
            }
            for writer in wanted.reversed() { writer.commitLock.unlock() }
        }
        defer { for writer in locked.reversed() { writer.commitLock.unlock() } }
        let moving = locked

        let sourceWriter = handles.writer(for: source)
        // What the cloud holds at the source: a version this writer already committed (its release
        // not yet here), the old version it is replacing, or a plain file or directory.
        var entry = try sourceWriter?.committed ?? metadata.entry(at: source)
        guard entry != nil || sourceWriter != nil else { throw FileSystemError.notFound }
        let isDirectory = sourceWriter == nil && entry?.isDirectory == true
        if isDirectory && MetadataCache.isSelfOrDescendant(target, of: source) { throw FileSystemError(EINVAL) }
        try requireDirectory(RemotePath.split(target).parent)

        let targetWriter = handles.writer(for: target)
        let existing = try metadata.entry(at: target)
        let existingLink = existing == nil ? try metadata.entry(at: SymlinkEncoding.encoded(target)) : nil
        if noReplace && (existing != nil || targetWriter != nil || existingLink != nil) { throw FileSystemError(EEXIST) }
        if isDirectory && existingLink != nil { throw FileSystemError.notDirectory }
        if targetWriter != nil && isDirectory { throw FileSystemError.notDirectory }
        if let existing {
            if isDirectory && !existing.isDirectory { throw FileSystemError.notDirectory }
            if !isDirectory && existing.isDirectory { throw FileSystemError.isDirectory }
            if existing.isDirectory {
                metadata.invalidate(target)
                guard try metadata.listing(of: target).entries.isEmpty, handles.writers(in: target).isEmpty else {
                    throw FileSystemError.notEmpty
                }
                try delete(target, directory: true)
            }
        }
        if targetWriter != nil, handles.abortWriter(for: target) != nil {
            logger.info("rename \(source) -> \(target): the file being written at \(target) was replaced; nothing of it is committed")
        }

        // A file queued for upload (--writeback) is renamed in the queue; one uploading right now
        // is waited for, then moved in the cloud like any other.
        var movedInQueue = false
        if let queued = entry, WritebackQueue.isQueued(fsID: queued.fsID), let writeback {
            if try writeback.move(from: source, to: target) {
                movedInQueue = true
            } else {
                if let why = writeback.waitCommitted(path: source, timeout: Self.queuedUploadWait) {
                    throw FileSystemError(EIO, "\(source) is queued for upload and the upload keeps failing: \(why)")
                }
                entry = try metadata.entry(at: source)
                guard entry != nil else { throw FileSystemError.notFound }
            }
        }
        // A file queued at the target is replaced once the move is done; until then it may not
        // upload, and if the move fails it stays queued.
        let targetQueued = !movedInQueue && !isDirectory && writeback?.entry(at: target) != nil
        if let entry, movedInQueue {
            // Uploads to the new name; an older file there is overwritten by that upload.
            metadata.didRename(from: source, to: target, entry: entry)
        } else if let entry, entry.fsID == OverlayAttributes.localFileID {
            // An empty file kept locally (the cloud refused it): it moves in the overlay below, and
            // replaces what the cloud holds at the target.
            if let existing, !existing.isDirectory, existing.fsID != OverlayAttributes.localFileID { try delete(target) }
            if targetQueued { writeback?.cancel(path: target) }
            metadata.didRename(from: source, to: target, entry: entry)
        } else if let entry {
            let (directory, name) = RemotePath.split(target)
            let api = self.api
            let moveInCloud = {
                try Blocking.await { () async throws(NetdiskError) in
                    try await api.move(from: source, toDirectory: directory, newName: name, ondup: .overwrite)
                }
            }
            if isDirectory, let writeback {
                // No upload may land under the old path while the directory moves; what is queued
                // under it follows.
                try writeback.withSubtreePaused(source, movingTo: target, moveInCloud)
            } else if targetQueued, let writeback {
                try writeback.withSubtreePaused(target, movingTo: nil) {
                    try moveInCloud()
                    writeback.cancel(path: target)
                }
            } else {
                try moveInCloud()
            }
            metadata.didRename(from: source, to: target, entry: entry)
        } else if let existing, !existing.isDirectory {
            // A new file being written replaces a committed one: POSIX says the old one is gone now,
            // and a later abort of the writer must not bring it back.
            try delete(target)
        }
        if let existingLink { try delete(existingLink.path) }
        overlay.move(from: source, to: target, subtree: isDirectory)
        overlay.touchDirectory(RemotePath.split(source).parent)
        overlay.touchDirectory(RemotePath.split(target).parent)
        handles.retarget(from: source, to: target)
        logger.info("rename \(source) -> \(target)\(sourceWriter != nil || !moving.isEmpty ? " (open for writing: commits follow)" : "")")
    }

    /// Distinct writers, in the one order their commit locks are taken.
    static func ordered(_ writers: [PathWriter]) -> [PathWriter] {
        var seen = Set<ObjectIdentifier>()
        return writers.filter { seen.insert(ObjectIdentifier($0)).inserted }.sorted { ObjectIdentifier($0) < ObjectIdentifier($1) }
    }

    /// A symlink is its encoded file: rename that, replacing whatever file or link has the new name.
    private func renameSymlink(_ link: RemoteEntry, from source: String, to target: String, noReplace: Bool) throws {
        let encodedTarget = SymlinkEncoding.encoded(target)
        try requireDirectory(RemotePath.split(target).parent)
        if noReplace, try resolve(target) != nil { throw FileSystemError(EEXIST) }
        // A file being written at the target is replaced: abort it first (after a commit in flight).
        if let writer = handles.writer(for: target) {
            writer.commitLock.withLock { _ = handles.abortWriter(for: target) }
        }
        switch try resolve(target) {
        case .entry(let existing)?:
            if noReplace { throw FileSystemError(EEXIST) }
            if existing.isDirectory { throw FileSystemError.isDirectory }
            try delete(target)
        case .writer?:
            break
        case .link?:
            if noReplace { throw FileSystemError(EEXIST) }
        case nil:
            break
        }
        let (directory, name) = RemotePath.split(encodedTarget)
        let api = self.api, from = link.path
        try Blocking.await { () async throws(NetdiskError) in
            try await api.move(from: from, toDirectory: directory, newName: name, ondup: .overwrite)
        }
        metadata.didRename(from: link.path, to: encodedTarget, entry: link)
        overlay.move(from: link.path, to: encodedTarget, subtree: false)
        overlay.touchDirectory(RemotePath.split(source).parent)
        overlay.touchDirectory(RemotePath.split(target).parent)
        logger.info("rename \(source) -> \(target) (symlink)")
    }
}
