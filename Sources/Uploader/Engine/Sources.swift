import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Random access to the bytes of a file whose size is known: what the cached path uploads.
public protocol RandomAccessSource: Sendable {
    var size: Int64 { get }
    /// Fills `buffer` from `offset`; returns the bytes read (short only at the end).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(NetdiskError) -> Int
    /// The bytes at `offset..<offset+count` where they already are in memory, with the buffer that
    /// holds them (kept alive while the part uploads); nil: read them into a buffer of the upload's.
    func inMemory(at offset: Int64, count: Int) -> (bytes: PartBytes, owner: SectionBuffer)?
}

extension RandomAccessSource {
    public func inMemory(at offset: Int64, count: Int) -> (bytes: PartBytes, owner: SectionBuffer)? { nil }
}

/// Who a local source is, so a resumed upload can tell the same file from a changed one.
public struct SourceIdentity: Sendable, Equatable {
    public var path: String
    public var size: Int64
    public var mtime: Int64
    public init(path: String, size: Int64, mtime: Int64) {
        self.path = path
        self.size = size
        self.mtime = mtime
    }
}

/// The cached section source: a local file read with `pread`.
public final class LocalFileSource: RandomAccessSource, @unchecked Sendable {
    public let path: String
    public let size: Int64
    public let mtime: Int64
    private let fd: Int32

    public init(path: String) throws(NetdiskError) {
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .localIO("open \(path): \(String(cString: strerror(errno)))") }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw .localIO("stat \(path): \(why)")
        }
        self.path = path
        size = Int64(info.st_size)
        mtime = Int64(info.st_mtim.tv_sec)
    }

    deinit { close(fd) }

    public var identity: SourceIdentity { SourceIdentity(path: path, size: size, mtime: mtime) }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(NetdiskError) -> Int {
        try preadFully(fd: fd, into: buffer, at: offset, path: path)
    }
}

func preadFully(fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String) throws(NetdiskError) -> Int {
    var done = 0
    while done < buffer.count {
        let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
        if n < 0 {
            if errno == EINTR { continue }
            throw .localIO("read \(path): \(String(cString: strerror(errno)))")
        }
        if n == 0 { break }
        done += n
    }
    return done
}

func pwriteFully(fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int64, path: String) throws(NetdiskError) {
    var done = 0
    while done < buffer.count {
        let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
        if n < 0 {
            if errno == EINTR { continue }
            if errno == ENOSPC || errno == EDQUOT { throw .localDiskFull("write \(path): \(String(cString: strerror(errno)))") }
            throw .localIO("write \(path): \(String(cString: strerror(errno)))")
        }
        done += n
    }
}
