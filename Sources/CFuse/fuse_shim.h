#define FUSE_USE_VERSION 35
#include <fuse.h>
#include <fuse_lowlevel.h>
