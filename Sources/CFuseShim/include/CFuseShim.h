#ifndef NETDISKFS_CFUSESHIM_H
#define NETDISKFS_CFUSESHIM_H
#include "../../CFuse/fuse_shim.h"

/*
 * netdiskfs drives libfuse's HIGH-LEVEL (path-based) API.
 *
 * Why high-level: every Baidu call is path-based (list/create/filemanager take paths, there is no
 * lookup-by-inode), so the low-level API would make us keep a complete inode→path table and its
 * rename/forget bookkeeping for no gain. DESIGN.md measured a Swift null-sink filesystem on the
 * high-level API at ~1 GB/s for `cp` with st_blksize 1 MiB, the same as C: the API is not the
 * bottleneck, hashing and HTTP are.
 *
 * fuse_main is not used: we need to own the lifecycle (mount, signal the parent process that the
 * mount is live, run the multi-threaded loop with an explicit thread limit, unmount on signals).
 */

/// Creates the FUSE handle. argv holds the program name and `-o` options (no mountpoint).
/// Returns NULL (libfuse has printed why) on bad options.
struct fuse *netdiskfs_fuse_new(int argc, char *argv[], const struct fuse_operations *ops, void *user_data);

/// Mounts on `mountpoint`; 0 on success, -1 on failure (libfuse has printed why).
int netdiskfs_fuse_mount(struct fuse *f, const char *mountpoint);

/// Runs the multi-threaded loop with at most `max_threads` workers (fuse_loop_mt with an explicit
/// config). Returns when the filesystem is unmounted or fuse_exit was called.
int netdiskfs_fuse_loop_mt(struct fuse *f, unsigned int max_threads, unsigned int idle_threads);

/// Unmounts (if still mounted) and destroys the handle.
void netdiskfs_fuse_teardown(struct fuse *f);

/// The private_data pointer given to netdiskfs_fuse_new, for the current request.
void *netdiskfs_fuse_private_data(void);

/// The thread id of the process that made the current request (0 when the kernel made it itself).
/// A thread's id, not its process's: map it to the thread group before comparing processes.
pid_t netdiskfs_fuse_caller_pid(void);

/// The user and group of the process that made the current request (the owner of what it creates).
void netdiskfs_fuse_caller_ids(uid_t *uid, gid_t *gid);

/// The fd of the /dev/fuse connection (for diagnostics).
int netdiskfs_fuse_fd(struct fuse *f);

#endif
