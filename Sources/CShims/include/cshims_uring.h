/* Why: liburing's fast paths (get_sqe, prep_*, cqe_seen, peek) are static inline functions
 * and macros; these give Swift stable, prefixed entry points to them. <sys/select.h> must
 * come before <liburing.h>, or its fd_set definitions clash with Glibc's module. */
#ifndef CSHIMS_URING_H
#define CSHIMS_URING_H
#include <sys/select.h>
/* The kernel's definition of the io_uring structs first (the one swift-system's CSystem
 * includes too); liburing's copy shares its include guard and so steps aside. */
#include <linux/io_uring.h>
#include <liburing.h>

struct io_uring_sqe *cshims_uring_get_sqe(struct io_uring *ring);
void cshims_uring_prep_read(struct io_uring_sqe *sqe, int fd, void *buf, unsigned nbytes, uint64_t offset);
void cshims_uring_prep_write(struct io_uring_sqe *sqe, int fd, const void *buf, unsigned nbytes, uint64_t offset);
void cshims_uring_prep_read_fixed(struct io_uring_sqe *sqe, int fd, void *buf, unsigned nbytes, uint64_t offset, int buf_index);
void cshims_uring_prep_write_fixed(struct io_uring_sqe *sqe, int fd, const void *buf, unsigned nbytes, uint64_t offset, int buf_index);
void cshims_uring_prep_fsync(struct io_uring_sqe *sqe, int fd, unsigned flags);
void cshims_uring_prep_nop(struct io_uring_sqe *sqe);
void cshims_uring_sqe_set_data64(struct io_uring_sqe *sqe, uint64_t data);
void cshims_uring_sqe_set_flags(struct io_uring_sqe *sqe, unsigned flags);
int cshims_uring_peek_cqe(struct io_uring *ring, struct io_uring_cqe **cqe);
int cshims_uring_wait_cqe(struct io_uring *ring, struct io_uring_cqe **cqe);
void cshims_uring_cqe_seen(struct io_uring *ring, struct io_uring_cqe *cqe);
void cshims_uring_cq_advance(struct io_uring *ring, unsigned count);
/* Copies up to `max` ready completions into `out` without blocking; returns how many. */
unsigned cshims_uring_peek_batch(struct io_uring *ring, struct io_uring_cqe **out, unsigned max);
/* Marks the SQE's fd as an index into the ring's registered-file table. */
void cshims_uring_sqe_use_fixed_file(struct io_uring_sqe *sqe);
/* Reads an 8-byte counter (an eventfd) into `value`. */
void cshims_uring_prep_read_u64(struct io_uring_sqe *sqe, int fd, uint64_t *value);
/* fdatasync through the ring. */
void cshims_uring_prep_fdatasync(struct io_uring_sqe *sqe, int fd);
uint64_t cshims_uring_cqe_get_data64(const struct io_uring_cqe *cqe);
/* Places one buffer (or, with base NULL, an empty slot) at `index` of a sparse buffer table. */
int cshims_uring_update_buffer(struct io_uring *ring, unsigned index, void *base, size_t length);
/* Places one descriptor (or -1, an empty slot) at `index` of a sparse file table. */
int cshims_uring_update_file(struct io_uring *ring, unsigned index, int fd);
/* An eventfd (close-on-exec) that wakes a thread waiting on its ring; -1 and errno on failure. */
int cshims_uring_wake_eventfd(void);
/* Adds 1 to the eventfd's counter. */
int cshims_uring_wake(int fd);
/* 1 if the kernel's probe says it supports `opcode`. */
int cshims_uring_opcode_supported(const struct io_uring_probe *probe, int opcode);
#endif
