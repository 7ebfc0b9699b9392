#ifndef GRANARY_FUSE_CHANNEL_H
#define GRANARY_FUSE_CHANNEL_H

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

#endif
