#ifndef NETDISKFS_CFUSESHIM_H
#define NETDISKFS_CFUSESHIM_H
#include "../../CFuse/fuse_shim.h"

/// fuse_main is a macro; Swift can only call a real function.
int netdiskfs_fuse_main(int argc, char *argv[], const struct fuse_operations *ops, void *user_data);

#endif
