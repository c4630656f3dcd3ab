#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Uploader

/// What getattr and readdir report for one name.
public struct FileAttributes: Sendable {
    public enum Kind: Sendable { case file, directory, symlink }

    public var kind: Kind
    public var size: Int64
    public var mtime: timespec
    /// Permission bits (07777).
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32

    public var isDirectory: Bool { kind == .directory }

    public static let defaultFileMode: UInt32 = 0o644
    public static let defaultDirectoryMode: UInt32 = 0o755
}

/// How a symlink is stored in the cloud: rclone's convention, a small file `NAME.rclonelink`
/// whose content is the target. It survives a lost state dir, shows on every host that mounts the
/// account, and rclone users read it with `--links`. Such files are listed as the link, not as files.
enum SymlinkEncoding {
    static let suffix = ".rclonelink"

    static func encoded(_ remote: String) -> String { remote + suffix }

    /// The link name an encoded file stands for, or nil when `name` is not one.
    static func linkName(of name: String) -> String? {
        guard name.hasSuffix(suffix), name.count > suffix.count else { return nil }
        return String(name.dropLast(suffix.count))
    }
}

/// getattr, readdir, and the metadata Baidu cannot store (DESIGN.md, "Metadata Baidu cannot store").
extension NetdiskFileSystem {
    /// The engine assembles streams and fallbacks here before moving them into place; not user data.
    static let stagingDirectoryName = ".netdiskfs-staging"

    /// What is at a remote path: a file or directory, a symlink (its encoded file), or nothing.
    enum Resolved {
        case entry(RemoteEntry)
        case link(RemoteEntry)
        case writer(PathWriter)
    }

    func resolve(_ remote: String) throws -> Resolved? {
        if let writer = handles.writer(for: remote) {
            if let committed = writer.committed { return .entry(committed) }
            return .writer(writer)
        }
        let name = RemotePath.split(remote).name
        if name == Self.stagingDirectoryName || SymlinkEncoding.linkName(of: name) != nil { return nil }
        if let entry = try metadata.entry(at: remote) { return .entry(entry) }
        if let link = try metadata.entry(at: SymlinkEncoding.encoded(remote)), !link.isDirectory { return .link(link) }
        return nil
    }

    public func attributes(of path: String) throws -> FileAttributes {
        let remote = paths.remote(path)
        guard let resolved = try resolve(remote) else { throw FileSystemError.notFound }
        return attributes(of: resolved, at: remote)
    }

    func attributes(of resolved: Resolved, at remote: String) -> FileAttributes {
        switch resolved {
        case .entry(let entry):
            return attributes(of: entry, overlayAt: remote, kind: entry.isDirectory ? .directory : .file)
        case .link(let link):
            return attributes(of: link, overlayAt: link.path, kind: .symlink)
        case .writer(let writer):
            let pending = overlay.pending(at: remote)
            return FileAttributes(kind: .file, size: writer.size,
                                  mtime: writer.explicitMtime ?? timespec(tv_sec: Int(writer.mtime), tv_nsec: 0),
                                  mode: pending?.mode ?? FileAttributes.defaultFileMode,
                                  uid: pending?.uid ?? defaultOwner.uid, gid: pending?.gid ?? defaultOwner.gid)
        }
    }

    private func attributes(of entry: RemoteEntry, overlayAt path: String, kind: FileAttributes.Kind) -> FileAttributes {
        let stored = overlay.attributes(at: path, for: entry, forgetStale: handles.writer(for: path) == nil)
        let seconds = entry.localMtime > 0 ? entry.localMtime : entry.serverMtime
        let mode: UInt32
        switch kind {
        case .file: mode = stored?.mode ?? FileAttributes.defaultFileMode
        case .directory: mode = stored?.mode ?? FileAttributes.defaultDirectoryMode
        case .symlink: mode = 0o777
        }
        return FileAttributes(kind: kind, size: entry.size, mtime: stored?.mtime ?? timespec(tv_sec: Int(seconds), tv_nsec: 0),
                              mode: mode, uid: stored?.uid ?? defaultOwner.uid, gid: stored?.gid ?? defaultOwner.gid)
    }

    /// Names and attributes of a directory: files being written at their current size, symlinks
    /// as links (their encoded files hidden), the staging directory hidden.
    public func list(_ path: String) throws -> [(name: String, attributes: FileAttributes)] {
        let remote = paths.remote(path)
        if remote != "/" {
            guard let entry = try metadata.entry(at: remote) else { throw FileSystemError.notFound }
            guard entry.isDirectory else { throw FileSystemError.notDirectory }
        }
        let listing = try metadata.listing(of: remote).entries
        var result: [String: FileAttributes] = [:]
        for (name, entry) in listing where name != Self.stagingDirectoryName {
            let path = RemotePath.join(remote, name)
            if !entry.isDirectory, let link = SymlinkEncoding.linkName(of: name) {
                if listing[link] == nil { result[link] = attributes(of: .link(entry), at: RemotePath.join(remote, link)) }
                continue
            }
            result[name] = attributes(of: .entry(entry), at: path)
        }
        for writer in handles.writers(in: remote) {
            let path = writer.remotePath
            let resolved: Resolved = writer.committed.map { .entry($0) } ?? .writer(writer)
            result[RemotePath.split(path).name] = attributes(of: resolved, at: path)
        }
        return result.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    // MARK: chmod, chown, utimens

    /// The remote path whose overlay holds `remote`'s metadata, and the file it now is (nil: a file
    /// being written, bound at its commit).
    private func overlayTarget(_ remote: String) throws -> (path: String, entry: RemoteEntry?, writer: PathWriter?) {
        guard let resolved = try resolve(remote) else { throw FileSystemError.notFound }
        switch resolved {
        case .entry(let entry): return (remote, entry, handles.writer(for: remote))
        case .link(let link): return (link.path, link, nil)
        case .writer(let writer): return (remote, nil, writer)
        }
    }

    /// chmod(2): stored in the overlay (Baidu keeps no mode).
    public func setMode(_ path: String, mode: UInt32) throws {
        try requireWritable()
        let target = try overlayTarget(paths.remote(path))
        overlay.update(target.path, entry: target.entry) { $0.mode = mode & 0o7777 }
    }

    /// chown(2): stored; `nil` leaves that id as it is.
    public func setOwner(_ path: String, uid: UInt32?, gid: UInt32?) throws {
        try requireWritable()
        let target = try overlayTarget(paths.remote(path))
        overlay.update(target.path, entry: target.entry) { attributes in
            if let uid { attributes.uid = uid }
            if let gid { attributes.gid = gid }
        }
    }

    /// utimensat(2): the mtime is stored with nanoseconds (atime is not kept). A file being written
    /// also gives it to Baidu as `local_mtime` at its commit, so other hosts see it.
    public func setModificationTime(_ path: String, to time: timespec) throws {
        try requireWritable()
        let target = try overlayTarget(paths.remote(path))
        if target.entry == nil, let writer = target.writer { writer.setMtime(time) }
        overlay.update(target.path, entry: target.entry) { $0.mtime = time }
    }

    // MARK: symlinks

    /// symlink(2): a small file `NAME.rclonelink` holding the target, committed now.
    public func makeSymlink(_ path: String, target: String, owner: (uid: UInt32, gid: UInt32)? = nil) throws {
        try requireWritable()
        let remote = paths.remote(path)
        try requireDirectory(RemotePath.split(remote).parent)
        if try resolve(remote) != nil { throw FileSystemError(EEXIST) }
        let encoded = SymlinkEncoding.encoded(remote)
        try RemotePath.checkNewName(encoded)
        let session = try writers.makeSession(remotePath: encoded, mode: .streaming)
        let bytes = Array(target.utf8)
        do {
            try bytes.withUnsafeBytes { try session.write($0, at: 0) }
            let entry = try session.finish()
            metadata.didCreate(entry)
            overlay.update(encoded, entry: entry) { $0.linkTarget = target }
            recordNew(encoded, entry: entry, mode: 0o777, defaultMode: 0o777, owner: owner)
            overlay.touchDirectory(RemotePath.split(remote).parent)
            logger.info("symlink \(remote) -> \(target)")
        } catch {
            session.abort()
            throw UploadFailure.wrap(error)
        }
    }

    /// readlink(2): the encoded file's content (remembered in the overlay after the first read).
    public func readSymlink(_ path: String) throws -> String {
        let remote = paths.remote(path)
        guard case .link(let link)? = try resolve(remote) else { throw FileSystemError(EINVAL) }
        if let target = overlay.attributes(at: link.path, for: link)?.linkTarget { return target }
        guard link.size > 0 else { return "" }
        var bytes = [UInt8](repeating: 0, count: Int(min(link.size, 4096)))
        let count = try bytes.withUnsafeMutableBytes { buffer throws(NetdiskError) in
            try links.download(fsID: link.fsID, offset: 0, into: buffer)
        }
        let target = String(decoding: bytes.prefix(count), as: UTF8.self)
        overlay.update(link.path, entry: link) { $0.linkTarget = target }
        return target
    }
}

/// Progress where people look: extended attributes (`getfattr -d FILE`).
///
/// `user.netdiskfs.upload` on a file: `state=streaming|cached|committed`, bytes written and bytes
/// Baidu acknowledged. On the mount's root, mount-wide counters: `user.netdiskfs.uploads` (files
/// uploading now) and `user.netdiskfs.pending_bytes` (written but not yet acknowledged).
extension NetdiskFileSystem {
    static let uploadAttribute = "user.netdiskfs.upload"
    static let uploadsAttribute = "user.netdiskfs.uploads"
    static let pendingAttribute = "user.netdiskfs.pending_bytes"

    public func extendedAttributeNames(_ path: String) throws -> [String] {
        let remote = paths.remote(path)
        if remote == paths.root { return [Self.uploadsAttribute, Self.pendingAttribute] }
        guard let resolved = try resolve(remote) else { throw FileSystemError.notFound }
        if case .entry(let entry) = resolved, entry.isDirectory { return [] }
        return [Self.uploadAttribute]
    }

    public func extendedAttribute(_ path: String, name: String) throws -> [UInt8] {
        guard try extendedAttributeNames(path).contains(name) else { throw FileSystemError(ENODATA) }
        let remote = paths.remote(path)
        switch name {
        case Self.uploadsAttribute, Self.pendingAttribute:
            let snapshot = uploads.snapshot(mountpoint: "")
            let pending = snapshot.uploads.reduce(Int64(0)) { $0 + max(0, $1.bytesWritten - $1.bytesUploaded) }
            return Array(String(name == Self.uploadsAttribute ? Int64(snapshot.uploads.count) : pending).utf8)
        default:
            guard let writer = handles.writer(for: remote), writer.committed == nil else {
                let size = try attributes(of: path).size
                return Array("state=committed bytes_written=\(size) bytes_acknowledged=\(size)".utf8)
            }
            let session = writer.session
            return Array("state=\(session.modeName) bytes_written=\(session.size) bytes_acknowledged=\(session.bytesUploaded)".utf8)
        }
    }
}
