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
#include <unistd.h>
#include "fuse_channel.h"

#define NO_REQUEST UINT64_MAX

/// The INIT request's unique ID until its reply has gone out.
static _Atomic uint64_t init_unique = NO_REQUEST;
static _Atomic int kernel_offers_killpriv_v2;
static _Atomic int killpriv_v2_active;
/// Set by each read for the request the reading thread then handles.
static _Thread_local int request_drops_privileges;

#define FITS(body_len, type, field) ((body_len) >= offsetof(type, field) + sizeof(((type *)0)->field))

static void inspect_request(const void *buf, size_t n) {
    request_drops_privileges = 0;
    if (n < sizeof(struct fuse_in_header)) return;
    const struct fuse_in_header *h = buf;
    const char *body = (const char *)buf + sizeof *h;
    size_t len = n - sizeof *h;
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
static ssize_t channel_writev(int fd, struct iovec *iov, int count, void *userdata) {
    (void)userdata;
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
