/* Why: liburing's fast paths (get_sqe, prep_*, cqe_seen, peek) are static inline functions
 * and macros; these give Swift stable, prefixed entry points to them. <sys/select.h> must
 * come before <liburing.h>, or its fd_set definitions clash with Glibc's module. */
#ifndef CSHIMS_URING_H
#define CSHIMS_URING_H
#include <sys/select.h>
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
/* 1 if the kernel's probe says it supports `opcode`. */
int cshims_uring_opcode_supported(const struct io_uring_probe *probe, int opcode);
#endif
