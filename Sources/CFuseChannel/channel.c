// Custom I/O for the FUSE session: see fuse_channel.h for why.
#define _GNU_SOURCE
#define FUSE_USE_VERSION 312
#include <fuse3/fuse_lowlevel.h>
#include <linux/fuse.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "fuse_channel.h"

#define NO_REQUEST UINT64_MAX

/// The INIT request's unique ID until its reply has gone out.
static _Atomic uint64_t init_unique = NO_REQUEST;
static _Atomic int kernel_offers_killpriv_v2;
static _Atomic int killpriv_v2_active;
/// Set by each read for the request the reading thread then handles.
static _Thread_local int request_drops_privileges;

/// The request this thread read last, and when, until it is answered:
/// for the service times `granary status` shows.
static _Thread_local uint64_t current_unique = NO_REQUEST;
static _Thread_local uint32_t current_opcode;
static _Thread_local uint64_t current_start_ns;

#define OPCODES 64
static _Atomic uint64_t served_count[OPCODES];
static _Atomic uint64_t served_ns[OPCODES];
static _Atomic uint64_t served_max_ns[OPCODES];

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

#define FITS(body_len, type, field) ((body_len) >= offsetof(type, field) + sizeof(((type *)0)->field))

static void inspect_request(const void *buf, size_t n) {
    request_drops_privileges = 0;
    if (n < sizeof(struct fuse_in_header)) return;
    const struct fuse_in_header *h = buf;
    const char *body = (const char *)buf + sizeof *h;
    size_t len = n - sizeof *h;
    current_unique = h->unique;
    current_opcode = h->opcode;
    current_start_ns = now_ns();
    switch (h->opcode) {
    case FUSE_INIT:
        if (FITS(len, struct fuse_init_in, flags)) {
            const struct fuse_init_in *in = (const void *)body;
            atomic_store(&kernel_offers_killpriv_v2, (in->flags & FUSE_HANDLE_KILLPRIV_V2) != 0);
            atomic_store(&init_unique, h->unique);
        }
        break;
    case FUSE_WRITE:
        if (FITS(len, struct fuse_write_in, write_flags))
            request_drops_privileges = (((const struct fuse_write_in *)body)->write_flags & FUSE_WRITE_KILL_SUIDGID) != 0;
        break;
    case FUSE_SETATTR:
        if (FITS(len, struct fuse_setattr_in, valid))
            request_drops_privileges = (((const struct fuse_setattr_in *)body)->valid & FATTR_KILL_SUIDGID) != 0;
        break;
    default:
        break;
    }
}

static ssize_t channel_read(int fd, void *buf, size_t len, void *userdata) {
    (void)userdata;
    ssize_t n = read(fd, buf, len);
    if (n > 0) inspect_request(buf, (size_t)n);
    return n;
}

/// The INIT reply gains FUSE_HANDLE_KILLPRIV_V2 (and loses the coarser v1)
/// when the kernel offered it; every other reply goes out untouched.
/// Counts the request this thread is answering. A reply sent from another
/// thread (none is, today) would go uncounted rather than mismatched.
static void note_served(void) {
    if (current_unique == NO_REQUEST || current_opcode >= OPCODES) return;
    uint64_t took = now_ns() - current_start_ns;
    atomic_fetch_add_explicit(&served_count[current_opcode], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&served_ns[current_opcode], took, memory_order_relaxed);
    uint64_t max = atomic_load_explicit(&served_max_ns[current_opcode], memory_order_relaxed);
    while (took > max && !atomic_compare_exchange_weak_explicit(&served_max_ns[current_opcode], &max, took,
                                                               memory_order_relaxed, memory_order_relaxed)) {}
    current_unique = NO_REQUEST;
}

static ssize_t channel_writev(int fd, struct iovec *iov, int count, void *userdata) {
    (void)userdata;
    if (count >= 1 && iov[0].iov_len >= sizeof(struct fuse_out_header)
        && ((const struct fuse_out_header *)iov[0].iov_base)->unique == current_unique)
        note_served();
    uint64_t init = atomic_load(&init_unique);
    if (init != NO_REQUEST && count >= 2 && iov[0].iov_len >= sizeof(struct fuse_out_header)) {
        const struct fuse_out_header *out = iov[0].iov_base;
        if (out->unique == init) {
            if (out->error == 0 && atomic_load(&kernel_offers_killpriv_v2) && FITS(iov[1].iov_len, struct fuse_init_out, flags)) {
                struct fuse_init_out *o = iov[1].iov_base;
                o->flags = (o->flags & ~(uint32_t)FUSE_HANDLE_KILLPRIV) | FUSE_HANDLE_KILLPRIV_V2;
                atomic_store(&killpriv_v2_active, 1);
            }
            atomic_store(&init_unique, NO_REQUEST);
        }
    }
    return writev(fd, iov, count);
}

/// Read replies splice cache files into /dev/fuse; libfuse does so under
/// custom I/O only through this.
static ssize_t channel_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
                                   unsigned int flags, void *userdata) {
    (void)userdata;
    note_served();  // a READ's reply, header and data, from the thread that read it
    return splice(fdin, offin, fdout, offout, len, flags);
}

int granary_fuse_channel_install(struct fuse_session *se) {
    static const struct fuse_custom_io io = {
        .writev = channel_writev,
        .read = channel_read,
        .splice_receive = NULL,  // requests are read whole, so each is inspected
        .splice_send = channel_splice_send,
    };
    return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

int granary_fuse_drops_privileges_itself(void) { return atomic_load(&killpriv_v2_active); }

int granary_fuse_request_drops_privileges(void) { return request_drops_privileges; }

void granary_fuse_served(uint32_t opcode, uint64_t *count, uint64_t *total_ns, uint64_t *max_ns) {
    int known = opcode < OPCODES;
    *count = known ? atomic_load(&served_count[opcode]) : 0;
    *total_ns = known ? atomic_load(&served_ns[opcode]) : 0;
    *max_ns = known ? atomic_load(&served_max_ns[opcode]) : 0;
}

const char *granary_fuse_opcode_name(uint32_t opcode) {
    switch (opcode) {
    case FUSE_LOOKUP: return "lookup";
    case FUSE_GETATTR: return "getattr";
    case FUSE_SETATTR: return "setattr";
    case FUSE_READLINK: return "readlink";
    case FUSE_SYMLINK: return "symlink";
    case FUSE_MKNOD: return "mknod";
    case FUSE_MKDIR: return "mkdir";
    case FUSE_UNLINK: return "unlink";
    case FUSE_RMDIR: return "rmdir";
    case FUSE_RENAME: return "rename";
    case FUSE_LINK: return "link";
    case FUSE_OPEN: return "open";
    case FUSE_READ: return "read";
    case FUSE_WRITE: return "write";
    case FUSE_STATFS: return "statfs";
    case FUSE_RELEASE: return "release";
    case FUSE_FSYNC: return "fsync";
    case FUSE_SETXATTR: return "setxattr";
    case FUSE_GETXATTR: return "getxattr";
    case FUSE_LISTXATTR: return "listxattr";
    case FUSE_REMOVEXATTR: return "removexattr";
    case FUSE_FLUSH: return "flush";
    case FUSE_INIT: return "init";
    case FUSE_OPENDIR: return "opendir";
    case FUSE_READDIR: return "readdir";
    case FUSE_RELEASEDIR: return "releasedir";
    case FUSE_FSYNCDIR: return "fsyncdir";
    case FUSE_ACCESS: return "access";
    case FUSE_CREATE: return "create";
    case FUSE_IOCTL: return "ioctl";
    case FUSE_POLL: return "poll";
    case FUSE_FALLOCATE: return "fallocate";
    case FUSE_READDIRPLUS: return "readdirplus";
    case FUSE_RENAME2: return "rename2";
    case FUSE_LSEEK: return "lseek";
    case FUSE_COPY_FILE_RANGE: return "copy_file_range";
    default: return NULL;
    }
}
