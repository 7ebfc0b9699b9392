#ifndef GRANARY_SHIM_H
#define GRANARY_SHIM_H
#include <sys/types.h>

/// Asks the kernel to send `signal` to this process when its parent dies
/// (prctl(PR_SET_PDEATHSIG) is variadic, so Swift cannot call it directly).
/// Returns 0 or -1 with errno set.
int granary_set_parent_death_signal(int signal);



/// Makes stdout line-buffered even into a file or pipe (Swift 6 cannot touch
/// the C `stdout` global without a concurrency escape hatch).
void granary_line_buffer_stdout(void);
/// Starts asynchronous writeback of a file range (sync_file_range with
/// SYNC_FILE_RANGE_WRITE, which Glibc's Swift overlay does not export).
int granary_start_writeback(int fd, long long offset, long long length);
/// Deallocates a file range so it reads as zeros, keeping the file's size
/// (fallocate with FALLOC_FL_PUNCH_HOLE). Returns 0 or -1 with errno set.
int granary_punch_hole(int fd, long long offset, long long length);
/// O_DIRECT, which Glibc's Swift overlay does not export (it needs _GNU_SOURCE).
int granary_direct_io_flag(void);
/// Lowers the calling thread's scheduling priority to `nice` (Linux keeps
/// nice per thread; setpriority with the thread ID). Returns 0 or -1.
int granary_nice_this_thread(int nice);
/// Where Linux's struct tcp_info (linux/tcp.h; Glibc's copy of the struct
/// stops before these fields) keeps tcpi_bytes_acked and
/// tcpi_bytes_received, and its size: a transfer's progress is judged by
/// the bytes the peer acknowledged or sent, not by write calls, which
/// finish while megabytes still wait in the socket buffer.
void granary_tcp_info_layout(unsigned *bytes_acked_offset, unsigned *bytes_received_offset);
#endif
