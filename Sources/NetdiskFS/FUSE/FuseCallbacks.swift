#if canImport(Glibc)
import Glibc
#endif
import CFuseShim
import Logging
import Uploader

/// libfuse high-level callbacks → `NetdiskFileSystem`.
///
/// A plain nonisolated type, outside main.swift: libfuse calls these on its own threads, and a
/// MainActor-isolated closure would trap on the first call (DESIGN.md, "Verified on this platform").
/// Each callback converts C arguments, calls the filesystem, and maps errors through `FuseErrno`.
enum FuseCallbacks {
    /// renameat2 flags (linux/fs.h), not exported by Glibc's module.
    static let renameNoReplace: UInt32 = 1
    static let renameExchange: UInt32 = 2

    /// What the kernel is told about block size: `cp` then writes 1 MiB requests.
    static let blockSize = 1 << 20

    static var fileSystem: NetdiskFileSystem {
        Unmanaged<NetdiskFileSystem>.fromOpaque(netdiskfs_fuse_private_data()!).takeUnretainedValue()
    }

    static func run(_ operation: StaticString, _ path: UnsafePointer<CChar>?, _ body: (NetdiskFileSystem, String) throws -> Int32) -> Int32 {
        let fs = fileSystem
        let name = path.map { String(cString: $0) } ?? ""
        do {
            return try body(fs, name)
        } catch {
            return FuseErrno.code(for: error, operation: operation, path: path == nil ? nil : name, logger: fs.logger)
        }
    }

    static func fill(_ st: UnsafeMutablePointer<stat>, _ attributes: FileAttributes) {
        memset(st, 0, MemoryLayout<stat>.size)
        let type: UInt32
        switch attributes.kind {
        case .directory: type = S_IFDIR
        case .symlink: type = S_IFLNK
        case .file: type = S_IFREG
        }
        st.pointee.st_mode = type | attributes.mode
        st.pointee.st_nlink = attributes.isDirectory ? 2 : 1
        st.pointee.st_size = off_t(attributes.size)
        st.pointee.st_blksize = blksize_t(blockSize)
        st.pointee.st_blocks = blkcnt_t((attributes.size + 511) / 512)
        st.pointee.st_uid = attributes.uid
        st.pointee.st_gid = attributes.gid
        st.pointee.st_mtim = attributes.mtime
        st.pointee.st_ctim = attributes.mtime
        st.pointee.st_atim = attributes.mtime
    }

    /// The mtime utimensat asks for: nil for UTIME_OMIT (or no times given: "now").
    static func requestedMtime(_ times: UnsafePointer<timespec>?) -> timespec? {
        // linux/stat.h: UTIME_NOW ((1l << 30) - 1l), UTIME_OMIT ((1l << 30) - 2l)
        let now = (1 << 30) - 1, omit = (1 << 30) - 2
        guard let times else { return currentTime() }
        let mtime = times[1]
        if mtime.tv_nsec == omit { return nil }
        if mtime.tv_nsec == now { return currentTime() }
        return mtime
    }

    private static func currentTime() -> timespec {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return now
    }

    static func operations() -> fuse_operations {
        var ops = fuse_operations()
        ops.`init` = { conn, cfg in
            if let cfg {
                // unlink must reach us (to abort an upload), not become a rename to .fuse_hidden.
                cfg.pointee.hard_remove = 1
                // Paths are needed even with a handle (readdir, fstat): keep libfuse computing them.
                cfg.pointee.nullpath_ok = 0
                cfg.pointee.use_ino = 0
                // Sizes of files being written change under us: keep the kernel's attribute cache short.
                cfg.pointee.attr_timeout = 1
                cfg.pointee.entry_timeout = 1
                cfg.pointee.negative_timeout = 1
            }
            if let conn {
                conn.pointee.want |= UInt32(FUSE_CAP_ATOMIC_O_TRUNC) & conn.pointee.capable
                conn.pointee.max_readahead = UInt32(1 << 20)
            }
            return netdiskfs_fuse_private_data()
        }
        ops.getattr = { path, st, _ in
            FuseCallbacks.run("getattr", path) { fs, path in
                FuseCallbacks.fill(st!, try fs.attributes(of: path))
                return 0
            }
        }
        ops.readdir = { path, buffer, filler, _, _, _ in
            FuseCallbacks.run("readdir", path) { fs, path in
                var st = stat()
                FuseCallbacks.fill(&st, FileAttributes(kind: .directory, size: 0, mtime: timespec(), mode: 0o755, uid: getuid(), gid: getgid()))
                _ = filler!(buffer, ".", &st, 0, fuse_fill_dir_flags(rawValue: 0))
                _ = filler!(buffer, "..", &st, 0, fuse_fill_dir_flags(rawValue: 0))
                for (name, attributes) in try fs.list(path) {
                    FuseCallbacks.fill(&st, attributes)
                    if filler!(buffer, name, &st, 0, FUSE_FILL_DIR_PLUS) != 0 { break }
                }
                return 0
            }
        }
        ops.mkdir = { path, mode in
            FuseCallbacks.run("mkdir", path) { fs, path in
                try fs.makeDirectory(path, mode: UInt32(mode), owner: FuseCaller.owner())
                return 0
            }
        }
        ops.rmdir = { path in
            FuseCallbacks.run("rmdir", path) { fs, path in try fs.removeDirectory(path); return 0 }
        }
        ops.unlink = { path in
            FuseCallbacks.run("unlink", path) { fs, path in try fs.unlink(path); return 0 }
        }
        ops.rename = { from, to, flags in
            FuseCallbacks.run("rename", from) { fs, from in
                if flags & FuseCallbacks.renameExchange != 0 { return -EINVAL }
                try fs.rename(from, to: String(cString: to!), noReplace: flags & FuseCallbacks.renameNoReplace != 0)
                return 0
            }
        }
        ops.symlink = { target, path in
            FuseCallbacks.run("symlink", path) { fs, path in
                try fs.makeSymlink(path, target: String(cString: target!), owner: FuseCaller.owner())
                return 0
            }
        }
        ops.readlink = { path, buffer, size in
            FuseCallbacks.run("readlink", path) { fs, path in
                let target = Array(try fs.readSymlink(path).utf8)
                guard let buffer, size > 0 else { return -EINVAL }
                // readlink(2) truncates; FUSE wants a NUL-terminated string.
                let count = min(target.count, size - 1)
                target.withUnsafeBytes { UnsafeMutableRawPointer(buffer).copyMemory(from: $0.baseAddress!, byteCount: count) }
                buffer[count] = 0
                return 0
            }
        }
        ops.link = { _, _ in -ENOTSUP }
        ops.mknod = { _, _, _ in -ENOTSUP }
        ops.getxattr = { path, name, value, size in
            FuseCallbacks.run("getxattr", path) { fs, path in
                let bytes = try fs.extendedAttribute(path, name: String(cString: name!))
                if size == 0 { return Int32(bytes.count) }
                guard bytes.count <= size, let value else { return -ERANGE }
                bytes.withUnsafeBytes { UnsafeMutableRawPointer(value).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
                return Int32(bytes.count)
            }
        }
        ops.listxattr = { path, list, size in
            FuseCallbacks.run("listxattr", path) { fs, path in
                let bytes = try fs.extendedAttributeNames(path).reduce(into: [UInt8]()) { $0 += Array($1.utf8) + [0] }
                if size == 0 { return Int32(bytes.count) }
                guard bytes.count <= size, let list else { return -ERANGE }
                if !bytes.isEmpty {
                    bytes.withUnsafeBytes { UnsafeMutableRawPointer(list).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
                }
                return Int32(bytes.count)
            }
        }
        ops.setxattr = { _, _, _, _, _ in -ENOTSUP }
        ops.removexattr = { _, _ in -ENOTSUP }
        ops.chmod = { path, mode, _ in
            FuseCallbacks.run("chmod", path) { fs, path in try fs.setMode(path, mode: UInt32(mode)); return 0 }
        }
        ops.chown = { path, uid, gid, _ in
            FuseCallbacks.run("chown", path) { fs, path in
                // (uid_t)-1 and (gid_t)-1 mean "leave as is".
                try fs.setOwner(path, uid: uid == UInt32.max ? nil : uid, gid: gid == UInt32.max ? nil : gid)
                return 0
            }
        }
        ops.utimens = { path, times, _ in
            FuseCallbacks.run("utimens", path) { fs, path in
                if let mtime = FuseCallbacks.requestedMtime(times) { try fs.setModificationTime(path, to: mtime) }
                return 0
            }
        }
        ops.truncate = { path, size, fi in
            FuseCallbacks.run("truncate", path) { fs, path in
                try fs.truncate(path, size: Int64(size), handle: fi.map { $0.pointee.fh })
                return 0
            }
        }
        ops.statfs = { path, st in
            FuseCallbacks.run("statfs", path) { fs, _ in
                let quota = try fs.statistics()
                let fragment: Int64 = 4096
                memset(st!, 0, MemoryLayout<statvfs>.size)
                st!.pointee.f_bsize = UInt(FuseCallbacks.blockSize)
                st!.pointee.f_frsize = UInt(fragment)
                st!.pointee.f_blocks = fsblkcnt_t(max(quota.total, 0) / fragment)
                let free = fsblkcnt_t(max(quota.total - quota.used, 0) / fragment)
                st!.pointee.f_bfree = free
                st!.pointee.f_bavail = free
                st!.pointee.f_files = 1 << 32
                st!.pointee.f_ffree = 1 << 31
                st!.pointee.f_namemax = 255
                return 0
            }
        }
        ops.open = { path, fi in
            FuseCallbacks.run("open", path) { fs, path in
                let opened = try fs.open(path, flags: fi!.pointee.flags, caller: FuseCaller.process())
                fi!.pointee.fh = opened.handle
                fi!.pointee.keep_cache = opened.keepCache ? 1 : 0
                return 0
            }
        }
        ops.create = { path, mode, fi in
            FuseCallbacks.run("create", path) { fs, path in
                fi!.pointee.fh = try fs.create(path, flags: fi!.pointee.flags, mode: UInt32(mode) & 0o7777,
                                               owner: FuseCaller.owner(), caller: FuseCaller.process())
                return 0
            }
        }
        ops.read = { path, buffer, size, offset, fi in
            FuseCallbacks.run("read", path) { fs, _ in
                let count = try fs.read(handle: fi!.pointee.fh, into: UnsafeMutableRawBufferPointer(start: buffer, count: size), at: Int64(offset))
                return Int32(count)
            }
        }
        ops.write = { path, buffer, size, offset, fi in
            FuseCallbacks.run("write", path) { fs, _ in
                let count = try fs.write(handle: fi!.pointee.fh, bytes: UnsafeRawBufferPointer(start: buffer, count: size), at: Int64(offset))
                return Int32(count)
            }
        }
        ops.flush = { path, fi in
            FuseCallbacks.run("flush", path) { fs, _ in try fs.flush(handle: fi!.pointee.fh, caller: FuseCaller.process()); return 0 }
        }
        ops.release = { path, fi in
            FuseCallbacks.run("release", path) { fs, _ in try fs.release(handle: fi!.pointee.fh); return 0 }
        }
        // Durability point is close(): the upload commits there. fsync in the middle of a stream
        // cannot commit a partial file without breaking the streaming upload; it reports a failure.
        ops.fsync = { path, _, fi in
            FuseCallbacks.run("fsync", path) { fs, _ in
                if let fi { try fs.fsync(handle: fi.pointee.fh) }
                return 0
            }
        }
        return ops
    }
}
