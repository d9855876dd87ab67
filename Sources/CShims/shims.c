#define _GNU_SOURCE
#include <sched.h>
#include "CShims.h"
#include <sys/ioctl.h>
#include <unistd.h>
#include <stdlib.h>
#include <numa.h>
#include <sys/mman.h>
#include <zlib.h>
#include <sys/eventfd.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <pthread.h>
#include <string.h>

int cshims_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
int cshims_ioctl_int(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }
int cshims_errno(void) { return errno; }
uint64_t cshims_read_timestamp_counter(void) {
    uint32_t low, high;
    __asm__ volatile("rdtsc" : "=a"(low), "=d"(high));
    return ((uint64_t)high << 32) | low;
}
uint32_t cshims_atomic_load_u32(const uint32_t *address) { return __atomic_load_n(address, __ATOMIC_SEQ_CST); }
void cshims_atomic_store_u32(uint32_t *address, uint32_t value) { __atomic_store_n(address, value, __ATOMIC_SEQ_CST); }
int cshims_atomic_cas_u32(uint32_t *address, uint32_t expected, uint32_t desired) {
    return __atomic_compare_exchange_n(address, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
const int CSHIMS_SEEK_DATA = SEEK_DATA;
const int CSHIMS_SEEK_HOLE = SEEK_HOLE;
int cshims_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }
void cshims_set_errno(int value) { errno = value; }
const int CSHIMS_O_DIRECT = O_DIRECT;
const int CSHIMS_SCHED_BATCH = SCHED_BATCH;
const int CSHIMS_SCHED_IDLE = SCHED_IDLE;
int cshims_set_thread_name(const char *name) { return pthread_setname_np(pthread_self(), name); }
int cshims_thread_id(void) { return (int)gettid(); }
int cshims_eventfd_nonblocking(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }
int cshims_pipe_nonblocking(int ends[2]) { return pipe2(ends, O_CLOEXEC | O_NONBLOCK); }

int cshims_accept_nonblocking(int listener) { return accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK); }

long cshims_send_with_descriptor(int socket, const void *bytes, unsigned long length, int descriptor) {
    union { char space[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control;
    memset(&control, 0, sizeof control);
    struct iovec part = { .iov_base = (void *)bytes, .iov_len = length };
    struct msghdr message = { .msg_iov = &part, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = sizeof control.space };
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(header), &descriptor, sizeof(int));
    return sendmsg(socket, &message, MSG_NOSIGNAL);
}

long cshims_recv_with_descriptors(int socket, void *bytes, unsigned long length, int *descriptors, int capacity, int *count) {
    union { char space[CMSG_SPACE(sizeof(int) * 8)]; struct cmsghdr align; } control;
    struct iovec part = { .iov_base = bytes, .iov_len = length };
    struct msghdr message = { .msg_iov = &part, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = sizeof control.space };
    *count = 0;
    long got = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
    if (got < 0) return got;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        int passed = (int)((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int index = 0; index < passed; index++) {
            int descriptor;
            memcpy(&descriptor, CMSG_DATA(header) + index * sizeof(int), sizeof(int));
            if (*count < capacity) descriptors[(*count)++] = descriptor; else close(descriptor);
        }
    }
    return got;
}

const unsigned long CSHIMS_KVM_GET_API_VERSION = KVM_GET_API_VERSION;
const unsigned long CSHIMS_KVM_CREATE_VM = KVM_CREATE_VM;
const unsigned long CSHIMS_KVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
const unsigned long CSHIMS_KVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
const unsigned long CSHIMS_KVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
const unsigned long CSHIMS_KVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
const unsigned long CSHIMS_KVM_CREATE_VCPU = KVM_CREATE_VCPU;
const unsigned long CSHIMS_KVM_RUN = KVM_RUN;
const unsigned long CSHIMS_KVM_GET_REGS = KVM_GET_REGS;
const unsigned long CSHIMS_KVM_SET_REGS = KVM_SET_REGS;
const unsigned long CSHIMS_KVM_GET_SREGS = KVM_GET_SREGS;
const unsigned long CSHIMS_KVM_SET_SREGS = KVM_SET_SREGS;
const unsigned long CSHIMS_KVM_SET_CPUID2 = KVM_SET_CPUID2;
const unsigned long CSHIMS_KVM_GET_XSAVE = KVM_GET_XSAVE;
const unsigned long CSHIMS_KVM_SET_XSAVE = KVM_SET_XSAVE;
const unsigned long CSHIMS_KVM_GET_XCRS = KVM_GET_XCRS;
const unsigned long CSHIMS_KVM_SET_XCRS = KVM_SET_XCRS;
const unsigned long CSHIMS_KVM_GET_MSRS = KVM_GET_MSRS;
const unsigned long CSHIMS_KVM_GET_STATS_FD = KVM_GET_STATS_FD;
const unsigned long CSHIMS_KVM_SET_MSRS = KVM_SET_MSRS;

_Static_assert(sizeof(struct kvm_regs) == 18 * 8, "kvm_regs layout changed");


struct kvm_sync_regs *cshims_kvm_run_sync_regs(struct kvm_run *run) { return &run->s.regs; }
uint64_t *cshims_kvm_run_valid_regs(struct kvm_run *run) { return (uint64_t *)&run->kvm_valid_regs; }
uint64_t *cshims_kvm_run_dirty_regs(struct kvm_run *run) { return (uint64_t *)&run->kvm_dirty_regs; }

struct cshims_kvm_io_exit cshims_kvm_run_io(const struct kvm_run *run) {
    struct cshims_kvm_io_exit io = {
        .direction = run->io.direction, .size = run->io.size, .port = run->io.port,
        .count = run->io.count, .data_offset = run->io.data_offset,
    };
    return io;
}
uint64_t cshims_kvm_run_fail_entry_reason(const struct kvm_run *run) {
    return run->fail_entry.hardware_entry_failure_reason;
}
uint32_t cshims_kvm_run_internal_suberror(const struct kvm_run *run) { return run->internal.suberror; }

struct kvm_cpuid2 *cshims_kvm_cpuid2_alloc(uint32_t entries) {
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + entries * sizeof(struct kvm_cpuid_entry2));
    if (c) c->nent = entries;
    return c;
}
struct kvm_msrs *cshims_kvm_msrs_alloc(uint32_t entries) {
    struct kvm_msrs *m = calloc(1, sizeof(*m) + entries * sizeof(struct kvm_msr_entry));
    if (m) m->nmsrs = entries;
    return m;
}

struct io_uring_sqe *cshims_uring_get_sqe(struct io_uring *ring) { return io_uring_get_sqe(ring); }
void cshims_uring_prep_read(struct io_uring_sqe *sqe, int fd, void *buf, unsigned nbytes, uint64_t offset) {
    io_uring_prep_read(sqe, fd, buf, nbytes, offset);
}
void cshims_uring_prep_write(struct io_uring_sqe *sqe, int fd, const void *buf, unsigned nbytes, uint64_t offset) {
    io_uring_prep_write(sqe, fd, buf, nbytes, offset);
}
void cshims_uring_prep_read_fixed(struct io_uring_sqe *sqe, int fd, void *buf, unsigned nbytes, uint64_t offset, int buf_index) {
    io_uring_prep_read_fixed(sqe, fd, buf, nbytes, offset, buf_index);
}
void cshims_uring_prep_write_fixed(struct io_uring_sqe *sqe, int fd, const void *buf, unsigned nbytes, uint64_t offset, int buf_index) {
    io_uring_prep_write_fixed(sqe, fd, buf, nbytes, offset, buf_index);
}
void cshims_uring_prep_fsync(struct io_uring_sqe *sqe, int fd, unsigned flags) { io_uring_prep_fsync(sqe, fd, flags); }
void cshims_uring_prep_nop(struct io_uring_sqe *sqe) { io_uring_prep_nop(sqe); }
void cshims_uring_sqe_set_data64(struct io_uring_sqe *sqe, uint64_t data) { io_uring_sqe_set_data64(sqe, data); }
void cshims_uring_sqe_set_flags(struct io_uring_sqe *sqe, unsigned flags) { io_uring_sqe_set_flags(sqe, flags); }
int cshims_uring_peek_cqe(struct io_uring *ring, struct io_uring_cqe **cqe) { return io_uring_peek_cqe(ring, cqe); }
int cshims_uring_wait_cqe(struct io_uring *ring, struct io_uring_cqe **cqe) { return io_uring_wait_cqe(ring, cqe); }
void cshims_uring_cqe_seen(struct io_uring *ring, struct io_uring_cqe *cqe) { io_uring_cqe_seen(ring, cqe); }
void cshims_uring_cq_advance(struct io_uring *ring, unsigned count) { io_uring_cq_advance(ring, count); }
unsigned cshims_uring_peek_batch(struct io_uring *ring, struct io_uring_cqe **out, unsigned max) {
    return io_uring_peek_batch_cqe(ring, out, max);
}
void cshims_uring_sqe_use_fixed_file(struct io_uring_sqe *sqe) { sqe->flags |= IOSQE_FIXED_FILE; }
void cshims_uring_prep_read_u64(struct io_uring_sqe *sqe, int fd, uint64_t *value) {
    io_uring_prep_read(sqe, fd, value, sizeof(*value), 0);
}
void cshims_uring_prep_fdatasync(struct io_uring_sqe *sqe, int fd) { io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC); }
uint64_t cshims_uring_cqe_get_data64(const struct io_uring_cqe *cqe) { return cqe->user_data; }
int cshims_uring_update_buffer(struct io_uring *ring, unsigned index, void *base, size_t length) {
    struct iovec iov = { .iov_base = base, .iov_len = length };
    __u64 tag = 0;
    return io_uring_register_buffers_update_tag(ring, index, &iov, &tag, 1);
}
int cshims_uring_update_file(struct io_uring *ring, unsigned index, int fd) {
    return io_uring_register_files_update(ring, index, &fd, 1);
}
int cshims_uring_wake_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }
int cshims_uring_wake(int fd) { return eventfd_write(fd, 1); }
int cshims_uring_opcode_supported(const struct io_uring_probe *probe, int opcode) {
    return io_uring_opcode_supported(probe, opcode);
}

int cshims_numa_max_node(void) {
    if (numa_available() < 0) return -1;
    return numa_max_node();
}
int cshims_numa_node_memory(int node, int64_t *total, int64_t *free_bytes) {
    if (numa_available() < 0) return -1;
    long long f = 0;
    long long t = numa_node_size64(node, &f);
    if (t < 0) return -1;
    *total = t;
    *free_bytes = f;
    return 0;
}
int cshims_numa_node_cpus(int node, int *cpus, int max) {
    if (numa_available() < 0) return -1;
    struct bitmask *mask = numa_allocate_cpumask();
    if (!mask) return -1;
    if (numa_node_to_cpus(node, mask) < 0) { numa_free_cpumask(mask); return -1; }
    int n = 0;
    for (unsigned i = 0; i < mask->size && n < max; i++)
        if (numa_bitmask_isbitset(mask, i)) cpus[n++] = (int)i;
    numa_free_cpumask(mask);
    return n;
}

int cshims_zlib_uncompress(uint8_t *dest, size_t *dest_len, const uint8_t *source, size_t source_len) {
    uLongf produced = *dest_len;
    int result = uncompress(dest, &produced, source, (uLong)source_len);
    *dest_len = produced;
    return result;
}
