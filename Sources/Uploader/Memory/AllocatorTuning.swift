/// glibc's allocator settings for a long-running transfer process.
///
/// Why: libfuse allocates each read's reply (up to 1 MiB) with malloc. After the first such block
/// is freed, glibc raises its mmap threshold to that size, so later blocks come from per-thread
/// arenas that keep them: one arena per FUSE thread each held a few MiB (measured: 16 MiB more
/// resident during a copy and a read at once). A fixed threshold returns large blocks to the
/// kernel at free, and two arenas stop threads from each keeping their own.
public enum AllocatorTuning {
    public static func configure() {
        _ = glibcMallopt(-3 /* M_MMAP_THRESHOLD */, 256 << 10)
        _ = glibcMallopt(-8 /* M_ARENA_MAX */, 2)
    }
}

/// <malloc.h> is not part of the Glibc module.
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
