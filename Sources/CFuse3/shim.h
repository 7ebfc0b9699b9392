// The API level must be defined in the header: Swift imports it with the
// importing target's flags, so a cSettings define would never reach it.
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
