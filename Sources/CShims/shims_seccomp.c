#define _GNU_SOURCE
#include "cshims_seccomp.h"
#include "cshims_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/kvm.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef __X32_SYSCALL_BIT
#define __X32_SYSCALL_BIT 0x40000000
#endif

#define CALL(name) { #name, SYS_##name }

/* The system calls an engine worker makes once it has started (its engine, SQLite state and
 * socket made), found by tracing workers (strace -f) through WorkerTests, DaemonTests and
 * LoadRunTests with VMFORK_WORKERS=2, then read against the host calls of the engine's
 * sources (ProcessVM serves guests' file calls with the host's: the *at calls, xattrs,
 * sendfile, pipes, polls). The most frequent first: the filter compares them in this order.
 * Judged apart, before this list: clone (threads only), clone3 (ENOSYS), ioctl (KVM's, two
 * terminal requests, PAGEMAP_SCAN and three of userfaultfd's), userfaultfd (user-mode faults
 * only), prctl (thread names), socket (EACCES). Not here, so
 * fatal: execve and every way to make a process, ptrace, mount and namespaces, bpf,
 * perf_event_open, keyctl, io_uring (its requests would bypass the filter), set_mempolicy,
 * mbind, sched_setaffinity (the NUMA binding is made before: see WorkerConfinement), capset,
 * setuid and friends. */
static const struct { const char *name; int number; } worker_calls[] = {
    /* vCPUs, locks, the runtime's threads and queues */
    CALL(futex), CALL(sched_yield), CALL(read), CALL(write), CALL(pread64), CALL(pwrite64),
    CALL(fcntl), CALL(newfstatat), CALL(close), CALL(recvfrom), CALL(sendto), CALL(mmap),
    CALL(openat), CALL(epoll_wait), CALL(rt_sigprocmask), CALL(gettid), CALL(timerfd_settime),
    CALL(getrandom), CALL(mprotect), CALL(epoll_ctl), CALL(poll), CALL(munmap), CALL(madvise),
    CALL(lseek), CALL(setpriority), CALL(getpriority), CALL(sched_setscheduler), CALL(rseq), CALL(set_robust_list),
    CALL(exit), CALL(exit_group), CALL(getpid), CALL(uname), CALL(clock_gettime),
    CALL(clock_nanosleep), CALL(nanosleep), CALL(clock_getres), CALL(gettimeofday),
    CALL(restart_syscall), CALL(rt_sigreturn), CALL(rt_sigaction), CALL(rt_sigsuspend),
    CALL(sigaltstack), CALL(tgkill), CALL(kill), CALL(brk), CALL(mremap), CALL(set_tid_address),
    CALL(arch_prctl), CALL(sched_getaffinity), CALL(get_mempolicy), CALL(timerfd_create),
    CALL(timerfd_gettime), CALL(eventfd2), CALL(epoll_create1), CALL(prlimit64), CALL(sysinfo),
    CALL(getuid), CALL(geteuid), CALL(getgid), CALL(getegid), CALL(umask),
    /* the socket: connections accepted, replies, the end of a stream */
    CALL(accept), CALL(accept4), CALL(shutdown), CALL(recvmsg), CALL(sendmsg),
    /* guest memory and state files */
    CALL(memfd_create), CALL(ftruncate), CALL(fallocate), CALL(fdatasync), CALL(fsync),
    CALL(msync), CALL(flock), CALL(fstat),
    /* files: state, logs, layer disks, and the guests' file calls served on the rootfs */
    CALL(openat2), CALL(readlink), CALL(readlinkat), CALL(getdents64), CALL(getcwd),
    CALL(chdir), CALL(fchdir), CALL(statx), CALL(lstat), CALL(stat), CALL(access),
    CALL(faccessat), CALL(faccessat2), CALL(unlink), CALL(unlinkat), CALL(rmdir), CALL(mkdir),
    CALL(mkdirat), CALL(rename), CALL(renameat), CALL(renameat2), CALL(link), CALL(linkat),
    CALL(symlink), CALL(symlinkat), CALL(chmod), CALL(fchmod), CALL(fchmodat), CALL(fchown),
    CALL(fchownat), CALL(utimensat), CALL(truncate), CALL(statfs), CALL(fstatfs),
    CALL(getxattr), CALL(lgetxattr), CALL(fgetxattr), CALL(listxattr), CALL(llistxattr),
    CALL(flistxattr), CALL(sendfile), CALL(copy_file_range), CALL(readv), CALL(writev),
    CALL(preadv), CALL(pwritev), CALL(dup), CALL(dup2), CALL(dup3), CALL(pipe), CALL(pipe2),
    CALL(ppoll), CALL(select), CALL(pselect6),
    /* a warm parent's pipes copied for each child container (GuestObjects) */
    CALL(tee),
};

#undef CALL

static const int worker_call_count = (int)(sizeof worker_calls / sizeof worker_calls[0]);

int cshims_seccomp_worker_allowed_count(void) { return worker_call_count; }

const char *cshims_seccomp_worker_allowed_name(int index) {
    if (index < 0 || index >= worker_call_count) return 0;
    return worker_calls[index].name;
}

#define LOAD(field) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (unsigned)offsetof(struct seccomp_data, field))
#define RETURN(value) BPF_STMT(BPF_RET | BPF_K, (value))
#define IF_EQUAL(value, then, otherwise) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)(value), (then), (otherwise))

int cshims_seccomp_install_worker_filter(int outside) {
    /* Layout: the architecture and x32 checks, then the calls judged by their arguments (each
     * block ends in its own returns, so every jump is short), then one comparison per allowed
     * call jumping to the ALLOW at the end, then the action for the rest. A jump offset is
     * 8 bits, so the list stays under 250 entries. On x86-64 an argument's low 32 bits are
     * the word at args[n]; ioctl's request and prctl's option are 32-bit in the kernel. */
    enum { head = 48 };
    struct sock_filter program[head + 250 + 2];
    if (worker_call_count > 250) return -E2BIG;
    const unsigned rest = outside == CSHIMS_SECCOMP_LOG ? SECCOMP_RET_LOG : SECCOMP_RET_KILL_PROCESS;
    int at = 0;
    program[at++] = (struct sock_filter)LOAD(arch);
    program[at++] = (struct sock_filter)IF_EQUAL(AUDIT_ARCH_X86_64, 1, 0);
    program[at++] = (struct sock_filter)RETURN(SECCOMP_RET_KILL_PROCESS);
    program[at++] = (struct sock_filter)LOAD(nr);
    program[at++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, __X32_SYSCALL_BIT, 0, 1);
    program[at++] = (struct sock_filter)RETURN(SECCOMP_RET_KILL_PROCESS);
    /* ioctl: KVM's (type 0xAE), the two a guest's terminal may ask of the host's,
     * PAGEMAP_SCAN (a pooled VM's restore asks its own page map which pages were written),
     * and the three a pooled VM's write tracking makes on its userfaultfd. */
    program[at++] = (struct sock_filter)IF_EQUAL(SYS_ioctl, 0, 11);
    program[at++] = (struct sock_filter)LOAD(args[1]);
    program[at++] = (struct sock_filter)IF_EQUAL(TCGETS, 8, 0);
    program[at++] = (struct sock_filter)IF_EQUAL(TIOCGWINSZ, 7, 0);
    program[at++] = (struct sock_filter)IF_EQUAL(CSHIMS_PAGEMAP_SCAN_REQUEST, 6, 0);
    program[at++] = (struct sock_filter)IF_EQUAL(CSHIMS_UFFDIO_API_REQUEST, 5, 0);
    program[at++] = (struct sock_filter)IF_EQUAL(CSHIMS_UFFDIO_REGISTER_REQUEST, 4, 0);
    program[at++] = (struct sock_filter)IF_EQUAL(CSHIMS_UFFDIO_WRITEPROTECT_REQUEST, 3, 0);
    program[at++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0xff00);
    program[at++] = (struct sock_filter)IF_EQUAL(KVMIO << 8, 1, 0);
    program[at++] = (struct sock_filter)RETURN(rest);
    program[at++] = (struct sock_filter)RETURN(SECCOMP_RET_ALLOW);
    /* userfaultfd: for user-mode faults only (UFFD_USER_MODE_ONLY), the flag that keeps a
     * userfaultfd from holding up the kernel's own accesses; the engine's (write tracking of a
     * pooled VM's memory, `WriteTracking`) never hands a fault to user space at all. */
    program[at++] = (struct sock_filter)IF_EQUAL(SYS_userfaultfd, 0, 4);
    program[at++] = (struct sock_filter)LOAD(args[0]);
    program[at++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, (unsigned)CSHIMS_UFFD_USER_MODE_ONLY, 0, 1);
    program[at++] = (struct sock_filter)RETURN(SECCOMP_RET_ALLOW);
    program[at++] = (struct sock_filter)RETURN(rest);
    /* clone: a thread (CLONE_THREAD set) is allowed, a process is not. */
    program[at++] = (struct sock_filter)IF_EQUAL(SYS_clone, 0, 4);
    program[at++] = (struct sock_filter)LOAD(args[0]);
    program[at++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1);
    program[at++] = (struct sock_filter)RETURN(SECCOMP_RET_ALLOW);
    program[at++] = (struct sock_filter)RETURN(rest);
    /* clone3: ENOSYS, so that glibc's pthread_create falls back to clone, judged above (its
     * flags are behind a pointer the filter cannot read). */
    program[at++] = (struct sock_filter)IF_EQUAL(SYS_clone3, 0, 1);
    program[at++] = (struct sock_filter)RETURN(SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA));
    /* prctl: naming threads only (the runtime names each of its threads). */
    program[at++] = (struct sock_filter)IF_EQUAL(SYS_prctl, 0, 5);
    program[at++] = (struct sock_filter)LOAD(args[0]);
    program[at++] = (struct sock_filter)IF_EQUAL(PR_SET_NAME, 2, 0);
    program[at++] = (struct sock_filter)IF_EQUAL(PR_GET_NAME, 1, 0);
    program[at++] = (struct sock_filter)RETURN(rest);
    program[at++] = (struct sock_filter)RETURN(SECCOMP_RET_ALLOW);
    /* socket and connect: EACCES. A worker makes no socket once it listens; libdispatch opens
     * /dev/log (syslog) to say that a thread's priority could not be raised, and copes with a
     * refusal. A thread whose socket() came just before the filter reaches connect() after it
     * (a fresh-clone CI run lost a starting worker so, on a loaded host): refused too, glibc's
     * syslog closes its socket and goes on. */
    program[at++] = (struct sock_filter)IF_EQUAL(SYS_socket, 1, 0);
    program[at++] = (struct sock_filter)IF_EQUAL(SYS_connect, 0, 1);
    program[at++] = (struct sock_filter)RETURN(SECCOMP_RET_ERRNO | (EACCES & SECCOMP_RET_DATA));
    if (at > head) return -E2BIG;
    /* The accumulator holds nr here: the blocks above loaded an argument only on paths that returned. */
    for (int index = 0; index < worker_call_count; index++) {
        unsigned char to_allow = (unsigned char)(worker_call_count - index);
        program[at++] = (struct sock_filter)IF_EQUAL(worker_calls[index].number, to_allow, 0);
    }
    program[at++] = (struct sock_filter)RETURN(rest);
    program[at++] = (struct sock_filter)RETURN(SECCOMP_RET_ALLOW);
    struct sock_fprog filter = { .len = (unsigned short)at, .filter = program };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -errno;
    long result = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &filter);
    if (result < 0) return -errno;
    return (int)result;
}

int cshims_seccomp_forbidden_call(int which) {
    if (which == 2) {
        /* A connect to syslog's socket path on no descriptor: the filter answers EACCES before
         * the kernel would look at the descriptor (EBADF without the filter). */
        struct sockaddr_un address = { .sun_family = AF_UNIX, .sun_path = "/dev/log" };
        return connect(-1, (struct sockaddr *)&address, sizeof address) < 0 ? -errno : 0;
    }
    if (which == 1) {
        long result = syscall(__X32_SYSCALL_BIT | SYS_getpid);
        return result < 0 ? -errno : (int)result;
    }
    pid_t child = fork();
    if (child == 0) _exit(0);
    if (child < 0) return -errno;
    int status = 0;
    waitpid(child, &status, 0);
    return child;
}

int cshims_seccomp_probe_write_tracking(int userModeOnly) {
    /* The child makes only system calls (no allocation: this process has other threads). */
    pid_t child = fork();
    if (child < 0) return -errno;
    if (child == 0) {
        if (cshims_seccomp_install_worker_filter(CSHIMS_SECCOMP_KILL) != 0) _exit(100);
        void *page = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED) _exit(101);
        int fd;
        if (userModeOnly) {
            fd = cshims_uffd_open_write_tracking();
        } else {
            fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        }
        if (fd < 0) _exit(errno & 0x7f);
        if (cshims_uffd_register_write_protection(fd, (uint64_t)(uintptr_t)page, 4096) != 0) _exit(errno & 0x7f);
        if (cshims_uffd_write_protect(fd, (uint64_t)(uintptr_t)page, 4096) != 0) _exit(errno & 0x7f);
        _exit(0);
    }
    int status = 0;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) return -errno;
    }
    if (WIFSIGNALED(status)) return WTERMSIG(status);
    return -WEXITSTATUS(status);
}
