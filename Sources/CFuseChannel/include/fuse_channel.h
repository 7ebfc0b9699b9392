#ifndef GRANARY_FUSE_CHANNEL_H
#define GRANARY_FUSE_CHANNEL_H

#include <stdint.h>

struct fuse_session;

/// Puts Granary's own reads and writes of /dev/fuse under a mounted session
/// (libfuse's custom I/O), so that the mount can use a kernel feature that
/// libfuse 3.14 cannot negotiate: FUSE_HANDLE_KILLPRIV_V2. Without it the
/// kernel asks the file system for `security.capability` before every
/// write(2), one extra round trip per write. With it the file system clears
/// setuid/setgid and file capabilities itself, on the writes, truncates and
/// chowns the kernel marks (see `granary_fuse_request_drops_privileges`).
/// Call after fuse_session_mount and before the loop. Returns 0 or -errno.
int granary_fuse_channel_install(struct fuse_session *se);

/// True (1) once the kernel agreed to FUSE_HANDLE_KILLPRIV_V2: the file
/// system must then honour `granary_fuse_request_drops_privileges`.
int granary_fuse_drops_privileges_itself(void);

/// True (1) when the request this thread is handling (a WRITE or SETATTR)
/// asks the file system to clear setuid/setgid and capabilities:
/// FUSE_WRITE_KILL_SUIDGID or FATTR_KILL_SUIDGID, which libfuse 3.14 does
/// not pass on. libfuse's loop reads and handles a request on one thread.
int granary_fuse_request_drops_privileges(void);

/// Requests of `opcode` answered so far on the thread that read them, and
/// the time from reading each to its reply: in total and the longest, in
/// nanoseconds. What the kernel and the caller add (queueing, wake-ups,
/// copies) is not in it.
void granary_fuse_served(uint32_t opcode, uint64_t *count, uint64_t *total_ns, uint64_t *max_ns);

/// A FUSE opcode's name in lower case ("lookup"), or NULL for one the
/// mount does not serve.
const char *granary_fuse_opcode_name(uint32_t opcode);

#endif
