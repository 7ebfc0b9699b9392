#define _GNU_SOURCE
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "granary_shim.h"
#include <sys/prctl.h>

int granary_set_parent_death_signal(int signal) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0, 0, 0);
}

#include <stdio.h>
void granary_line_buffer_stdout(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
}

#include <fcntl.h>
int granary_start_writeback(int fd, long long offset, long long length) {
    return sync_file_range(fd, (off_t)offset, (off_t)length, SYNC_FILE_RANGE_WRITE);
}

#include <linux/falloc.h>
int granary_punch_hole(int fd, long long offset, long long length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
}

int granary_direct_io_flag(void) {
    return O_DIRECT;
}

int granary_nice_this_thread(int nice) {
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
}

#include <linux/tcp.h>
#include <stddef.h>
void granary_tcp_info_layout(unsigned *bytes_acked_offset, unsigned *bytes_received_offset) {
    *bytes_acked_offset = (unsigned)offsetof(struct tcp_info, tcpi_bytes_acked);
    *bytes_received_offset = (unsigned)offsetof(struct tcp_info, tcpi_bytes_received);
}
