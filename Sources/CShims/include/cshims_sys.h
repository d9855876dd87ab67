/* Why: ioctl(2) and syscall(2) are variadic and unusable from Swift; these fix their types. */
#ifndef CSHIMS_SYS_H
#define CSHIMS_SYS_H
#include <errno.h>
#include <stdint.h>

/* ioctl with a pointer argument. Returns -1 and sets errno on failure, like ioctl(2). */
int cshims_ioctl_ptr(int fd, unsigned long request, void *arg);
/* ioctl with an integer argument. */
int cshims_ioctl_int(int fd, unsigned long request, unsigned long arg);
/* errno of the calling thread, readable from Swift without the Glibc macro. */
int cshims_errno(void);
/* memfd_create(2) with MFD_CLOEXEC: Glibc declares it only under _GNU_SOURCE. */
int cshims_memfd_create(const char *name);
void cshims_set_errno(int value);
/* Sequentially consistent 32-bit atomics on memory shared with a guest (the system-call
 * mailbox), which Swift's own atomics cannot address. */
uint32_t cshims_atomic_load_u32(const uint32_t *address);
void cshims_atomic_store_u32(uint32_t *address, uint32_t value);
int cshims_atomic_cas_u32(uint32_t *address, uint32_t expected, uint32_t desired);
/* lseek whences for sparse files, defined by Glibc only under _GNU_SOURCE. */
extern const int CSHIMS_SEEK_DATA;
extern const int CSHIMS_SEEK_HOLE;
/* O_DIRECT: Glibc defines it only under _GNU_SOURCE, which Swift's Glibc module lacks. */
extern const int CSHIMS_O_DIRECT;
/* SCHED_BATCH and SCHED_IDLE, likewise only under _GNU_SOURCE. */
extern const int CSHIMS_SCHED_BATCH;
extern const int CSHIMS_SCHED_IDLE;
/* The CPU's time-stamp counter (rdtsc), the clock a guest reads natively: benchmarks turn
 * guest-measured cycles into time with it. */
uint64_t cshims_read_timestamp_counter(void);
/* Names the calling thread (15 characters at most), as ps and /proc show it. */
int cshims_set_thread_name(const char *name);
/// The calling thread's kernel id (gettid), for its /proc/self/task entry.
int cshims_thread_id(void);
/* An eventfd, close-on-exec and non-blocking: Swift's Glibc module lacks sys/eventfd.h. */
int cshims_eventfd_nonblocking(void);
/* A pipe, both ends close-on-exec and non-blocking (pipe2 is not in Swift's Glibc module). */
int cshims_pipe_nonblocking(int ends[2]);
/* The next connection of a listening socket, close-on-exec and non-blocking (accept4 is not in Swift's Glibc module). */
int cshims_accept_nonblocking(int listener);
/* send() of up to `length` bytes with one descriptor passed along (SCM_RIGHTS) on a Unix socket,
 * MSG_NOSIGNAL: the count sent, or -1 and errno. The descriptor goes with the first byte. */
long cshims_send_with_descriptor(int socket, const void *bytes, unsigned long length, int descriptor);
/* recv() of up to `length` bytes that also takes the descriptors passed with them (SCM_RIGHTS,
 * received close-on-exec): up to `capacity` into `descriptors`, their count in `*count` (any
 * beyond `capacity` closed). The count read, 0 at the end, or -1 and errno. */
long cshims_recv_with_descriptors(int socket, void *bytes, unsigned long length, int *descriptors, int capacity, int *count);
#endif
