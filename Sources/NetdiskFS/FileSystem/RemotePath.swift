#if canImport(Glibc)
import Glibc
#endif
/// Maps mount-relative paths (`/a/b` as FUSE gives them) to remote absolute paths under `--root`.
public struct RemotePath: Sendable {
    /// The remote directory the mount shows, without a trailing slash ("/" for the whole account).
    public let root: String

    public init(root: String) {
        var trimmed = root.hasPrefix("/") ? root : "/" + root
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        self.root = trimmed
    }

    public func remote(_ local: String) -> String {
        if local == "/" || local.isEmpty { return root }
        return root == "/" ? local : root + local
    }

    /// The parent directory and last component of a remote path.
    public static func split(_ path: String) -> (parent: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return ("/", path) }
        let parent = slash == path.startIndex ? "/" : String(path[..<slash])
        return (parent, String(path[path.index(after: slash)...]))
    }

    public static func join(_ directory: String, _ name: String) -> String {
        directory == "/" ? "/" + name : directory + "/" + name
    }
}

extension RemotePath {
    /// Characters Baidu refuses in a name (DESIGN.md, "Chunks"), with errno 31062 or -7.
    static let forbiddenCharacters: Set<Character> = ["\\", "?", "|", "\"", ">", "<", ":", "*"]

    /// Checks a new name before anything is sent, so a program sees EINVAL (or ENAMETOOLONG) at
    /// create, mkdir or rename, not EIO at close after every byte was uploaded under a staging name.
    static func checkNewName(_ remote: String) throws {
        let name = split(remote).name
        if name.utf8.count > 255 || remote.utf8.count > 1024 { throw FileSystemError(ENAMETOOLONG) }
        if name.contains(where: { forbiddenCharacters.contains($0) }) { throw FileSystemError(EINVAL) }
    }
}
