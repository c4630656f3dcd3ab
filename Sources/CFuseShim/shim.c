#include "CFuseShim.h"
#include <stdlib.h>

/* The explicit-config loop of libfuse >= 3.12. We compile against FUSE_USE_VERSION 35, where the
 * fuse_loop_mt macro selects the old config struct without a thread limit (libfuse then logs
 * "Ignoring invalid max threads value"), so declare the 3.12 entry point ourselves. The config
 * is opaque and built with fuse_loop_cfg_create, so only its pointer crosses this call. */
int fuse_loop_mt_312(struct fuse *f, struct fuse_loop_config *config);

struct fuse *netdiskfs_fuse_new(int argc, char *argv[], const struct fuse_operations *ops, void *user_data) {
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse *f = fuse_new(&args, ops, sizeof(*ops), user_data);
    fuse_opt_free_args(&args);
    return f;
}

int netdiskfs_fuse_mount(struct fuse *f, const char *mountpoint) {
    return fuse_mount(f, mountpoint) == 0 ? 0 : -1;
}

int netdiskfs_fuse_loop_mt(struct fuse *f, unsigned int max_threads, unsigned int idle_threads) {
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (config == NULL) return -1;
    fuse_loop_cfg_set_max_threads(config, max_threads);
    /* Up to idle_threads stay alive between bursts (creating a thread per request costs more than an
     * idle one); the rest, started while many writers waited on backpressure, exit with their
     * 1 MiB request buffers. */
    fuse_loop_cfg_set_idle_threads(config, idle_threads < max_threads ? idle_threads : max_threads);
    fuse_loop_cfg_set_clone_fd(config, 0);
    int rc = fuse_loop_mt_312(f, config);
    fuse_loop_cfg_destroy(config);
    return rc;
}

void netdiskfs_fuse_teardown(struct fuse *f) {
    fuse_unmount(f);
    fuse_destroy(f);
}

void *netdiskfs_fuse_private_data(void) {
    struct fuse_context *context = fuse_get_context();
    return context ? context->private_data : NULL;
}

int netdiskfs_fuse_fd(struct fuse *f) {
    return fuse_session_fd(fuse_get_session(f));
}

pid_t netdiskfs_fuse_caller_pid(void) {
    struct fuse_context *context = fuse_get_context();
    return context ? context->pid : 0;
}

void netdiskfs_fuse_caller_ids(uid_t *uid, gid_t *gid) {
    struct fuse_context *context = fuse_get_context();
    *uid = context ? context->uid : 0;
    *gid = context ? context->gid : 0;
}
