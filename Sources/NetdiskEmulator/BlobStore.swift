import Crypto
import Foundation
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// File content on disk, off the event loops and the cooperative pool.
///
/// Content is stored per part, content-addressed by the part's MD5 (`blobs/<md5>`), so identical
/// content is stored once; a file is the ordered list of its part blobs. Parts of open uploads
/// wait in `parts/<uploadid>.<partseq>` until create moves them into the blob store.
/// Every blocking call runs on a dedicated NIOThreadPool.
final class BlobStore: Sendable {
    let root: String
    private let pool: NIOThreadPool

    init(root: String, threads: Int = 4) throws {
        self.root = root
        for dir in ["blobs", "parts"] {
            try FileManager.default.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true)
        }
        pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
    }

    func shutdown() async {
        try? await pool.shutdownGracefully()
    }

    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }

    func blobPath(_ md5: String) -> String { "\(root)/blobs/\(md5)" }
    func partPath(uploadID: String, partseq: Int) -> String { "\(root)/parts/\(uploadID).\(partseq)" }

    /// Writes `buffer[range]` as a part file and returns its MD5. With `corrupt`, the first byte is
    /// flipped on disk (and in the MD5), as if the network had damaged it: the client must notice and resend.
    ///
    /// The part is hashed and written in 256 KiB stripes, each while it is still in cache. Where the file
    /// system allows it the file is opened O_DIRECT: on this VM the kernel's copy into fresh page-cache
    /// pages cost as much CPU as MD5 itself, and parts are not read again until a download.
    func storePart(uploadID: String, partseq: Int, buffer: ByteBuffer, range: Range<Int>, corrupt: Bool) async throws -> String {
        let target = partPath(uploadID: uploadID, partseq: partseq)
        return try await run {
            do {
                return try BlobStore.writePart(target: target, buffer: buffer, range: range, corrupt: corrupt, direct: !corrupt)
            } catch let error as POSIXError where error.code == .EINVAL {
                // The file system took O_DIRECT at open but refused the write: go through the page cache.
                return try BlobStore.writePart(target: target, buffer: buffer, range: range, corrupt: corrupt, direct: false)
            }
        }
    }

    private static func writePart(target: String, buffer: ByteBuffer, range: Range<Int>, corrupt: Bool, direct: Bool) throws -> String {
        let temp = target + ".tmp-" + Random.hex(6)
        var direct = direct
        var fd = direct ? open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) : -1
        if fd >= 0 {
            // O_DIRECT through fcntl: refused (EINVAL) where the file system cannot do it.
            let flags = fcntl(fd, F_GETFL)
            if fcntl(fd, F_SETFL, flags | BlobStore.oDirect) != 0 { direct = false }
        } else {
            direct = false
            fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        }
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        var md5 = Insecure.MD5()
        do {
            try buffer.withUnsafeReadableBytes { all in
                var part = UnsafeRawBufferPointer(rebasing: all[range])
                if corrupt, let first = part.first {
                    let flipped = first ^ 0xFF
                    try withUnsafeBytes(of: flipped) { one in
                        md5.update(bufferPointer: one)
                        try BlobStore.writeAll(fd, one)
                    }
                    part = UnsafeRawBufferPointer(rebasing: part.dropFirst())
                }
                let aligned = direct ? UnsafeMutableRawBufferPointer.allocate(byteCount: BlobStore.stripe, alignment: BlobStore.block) : nil
                defer { aligned?.deallocate() }
                var offset = 0
                while offset < part.count {
                    let piece = UnsafeRawBufferPointer(rebasing: part[offset..<min(offset + BlobStore.stripe, part.count)])
                    md5.update(bufferPointer: piece)
                    if let aligned {
                        // O_DIRECT needs block-aligned memory and lengths: copy (from cache) and pad the tail.
                        aligned.copyMemory(from: piece)
                        let padded = (piece.count + BlobStore.block - 1) / BlobStore.block * BlobStore.block
                        if padded > piece.count {
                            (aligned.baseAddress! + piece.count).initializeMemory(as: UInt8.self, repeating: 0, count: padded - piece.count)
                        }
                        try BlobStore.writeAll(fd, UnsafeRawBufferPointer(rebasing: aligned[0..<padded]))
                    } else {
                        try BlobStore.writeAll(fd, piece)
                    }
                    offset += piece.count
                }
                if direct, ftruncate(fd, off_t(part.count)) != 0 { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
            }
        } catch {
            unlink(temp)
            throw error
        }
        guard rename(temp, target) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        return BlobStore.hex(md5.finalize())
    }

    static let block = 4096
    #if arch(arm64)
    static let oDirect: Int32 = 0o200000
    #else
    static let oDirect: Int32 = 0o40000
    #endif

    /// Links committed parts into the blob store (a part whose blob exists already is skipped). The part
    /// files stay until ``discardParts`` so a create that fails after this (a name conflict) can be retried.
    func commitParts(uploadID: String, parts: [(partseq: Int, md5: String)]) async throws {
        let moves = parts.map { (partPath(uploadID: uploadID, partseq: $0.partseq), blobPath($0.md5)) }
        try await run {
            for (from, to) in moves {
                if link(from, to) != 0, errno != EEXIST {
                    throw POSIXError(.init(rawValue: errno) ?? .EIO)
                }
            }
        }
    }

    /// Removes part files no open upload owns (left by a crash mid-write or a create cut short).
    func removeOrphanParts(keeping uploadIDs: Set<String>) async throws {
        let dir = root + "/parts"
        try await run {
            for name in try FileManager.default.contentsOfDirectory(atPath: dir) {
                let owner = name.split(separator: ".").first.map(String.init) ?? ""
                if name.contains(".tmp-") || !uploadIDs.contains(owner) { unlink(dir + "/" + name) }
            }
        }
    }

    /// Removes the part files of an abandoned upload.
    func discardParts(uploadID: String, partseqs: [Int]) async {
        let paths = partseqs.map { partPath(uploadID: uploadID, partseq: $0) }
        _ = try? await run { for p in paths { unlink(p) } }
    }

    /// Reads up to `length` bytes at `offset` of a file made of `blocks` (all `partSize` but the last).
    func read(blocks: [String], partSize: Int64, offset: Int64, length: Int) async throws -> ByteBuffer {
        let paths = blocks.map(blobPath)
        return try await run {
            var buffer = ByteBufferAllocator().buffer(capacity: length)
            var position = offset
            var remaining = length
            while remaining > 0 {
                let index = Int(position / partSize)
                guard index < paths.count else { break }
                let within = position - Int64(index) * partSize
                let want = min(remaining, Int(partSize - within))
                let fd = open(paths[index], O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
                defer { close(fd) }
                let got = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: want) { out in
                    let n = pread(fd, out.baseAddress, want, off_t(within))
                    guard n >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
                    return n
                }
                if got == 0 { break }
                position += Int64(got)
                remaining -= got
            }
            return buffer
        }
    }

    /// The true content MD5 of a file made of `blocks`.
    func contentMD5(blocks: [String], size: Int64) async throws -> String {
        if size == 0 { return KnownMD5.empty }
        if blocks.count == 1 { return blocks[0] }
        let paths = blocks.map(blobPath)
        return try await run {
            var md5 = Insecure.MD5()
            let chunk = 1 << 20
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
            defer { scratch.deallocate() }
            for path in paths {
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
                defer { close(fd) }
                while true {
                    let n = Glibc.read(fd, scratch.baseAddress, chunk)
                    guard n >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
                    if n == 0 { break }
                    md5.update(bufferPointer: UnsafeRawBufferPointer(rebasing: scratch[0..<n]))
                }
            }
            return BlobStore.hex(md5.finalize())
        }
    }

    static let stripe = 256 << 10

    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw POSIXError(.init(rawValue: errno) ?? .EIO)
            }
            offset += n
        }
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        let table = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(32)
        for b in digest {
            out.append(table[Int(b >> 4)])
            out.append(table[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func md5(bytes: UnsafeRawBufferPointer) -> String {
        var md5 = Insecure.MD5()
        md5.update(bufferPointer: bytes)
        return hex(md5.finalize())
    }

    static func md5(of string: String) -> String { hex(Insecure.MD5.hash(data: Data(string.utf8))) }
}
