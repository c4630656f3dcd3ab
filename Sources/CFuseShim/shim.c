#include "CFuseShim.h"

int netdiskfs_fuse_main(int argc, char *argv[], const struct fuse_operations *ops, void *user_data) {
    return fuse_main(argc, argv, ops, user_data);
}
