/*
 * nullfs: a null-sink FUSE filesystem, the yardstick for scripts/bench-mount.
 *
 * Every path but "/" is an empty regular file that accepts writes and throws them away, with
 * st_blksize 1 MiB like netdiskfs, so `cp big /mnt/null/` measures the kernel/libfuse path alone.
 * A path named "/zero-N" is instead N bytes of zeros, so `cat /mnt/null/zero-N` measures the
 * kernel/libfuse read path alone (each read is a memset and a reply, as cheap as a read can be).
 * Build: cc -O2 -o scripts/nullfs scripts/nullfs.c $(pkg-config --cflags --libs fuse3)
 * Run:   scripts/nullfs -f -o max_threads=16 MOUNTPOINT
 */
#define FUSE_USE_VERSION 35
#include <fuse.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The size of a "/zero-N" file, or 0. */
static off_t zero_size(const char *path) {
    if (strncmp(path, "/zero-", 6) != 0) return 0;
    return (off_t)strtoll(path + 6, NULL, 10);
}

static int null_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
    (void)fi;
    memset(st, 0, sizeof(*st));
    st->st_blksize = 1 << 20;
    if (strcmp(path, "/") == 0) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | 0644;
        st->st_nlink = 1;
        st->st_size = zero_size(path);
    }
    return 0;
}

static int null_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                        struct fuse_file_info *fi, enum fuse_readdir_flags flags) {
    (void)path; (void)off; (void)fi; (void)flags;
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    return 0;
}

static int null_create(const char *path, mode_t mode, struct fuse_file_info *fi) { (void)path; (void)mode; (void)fi; return 0; }
static int null_open(const char *path, struct fuse_file_info *fi) { (void)path; (void)fi; return 0; }
static int null_truncate(const char *path, off_t size, struct fuse_file_info *fi) { (void)path; (void)size; (void)fi; return 0; }
static int null_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi) { (void)path; (void)tv; (void)fi; return 0; }
static int null_chmod(const char *path, mode_t mode, struct fuse_file_info *fi) { (void)path; (void)mode; (void)fi; return 0; }
static int null_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi) { (void)path; (void)uid; (void)gid; (void)fi; return 0; }
static int null_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)fi;
    off_t total = zero_size(path);
    if (off >= total) return 0;
    if ((off_t)size > total - off) size = (size_t)(total - off);
    memset(buf, 0, size);
    return (int)size;
}
static int null_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)path; (void)buf; (void)off; (void)fi;
    return (int)size;
}

/* The same read-ahead netdiskfs asks for, so reads compare like for like. */
static void *null_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
    (void)cfg;
    conn->max_readahead = 1 << 20;
    return NULL;
}

static const struct fuse_operations null_ops = {
    .init = null_init,
    .getattr = null_getattr,
    .readdir = null_readdir,
    .create = null_create,
    .open = null_open,
    .truncate = null_truncate,
    .utimens = null_utimens,
    .chmod = null_chmod,
    .chown = null_chown,
    .read = null_read,
    .write = null_write,
};

int main(int argc, char *argv[]) {
    return fuse_main(argc, argv, &null_ops, NULL);
}
