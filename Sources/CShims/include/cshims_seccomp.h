#ifndef CSHIMS_SECCOMP_H
#define CSHIMS_SECCOMP_H

/* Why C: the seccomp filter is classic BPF over struct seccomp_data, and the system call
 * numbers are the kernel's __NR_ names, which only <sys/syscall.h> gives by name. */

/* What a call outside the engine worker's list gets. */
enum {
    CSHIMS_SECCOMP_KILL = 0, /* SECCOMP_RET_KILL_PROCESS: the worker ends with SIGSYS */
    CSHIMS_SECCOMP_LOG = 1,  /* SECCOMP_RET_LOG: allowed, and the kernel logs it (to find a missing one) */
};

/// Installs the engine worker's filter on every thread of the process (SECCOMP_FILTER_FLAG_TSYNC;
/// threads made later inherit it), after setting no_new_privs. Allowed: the system calls of
/// the worker's list; clone only with CLONE_THREAD (threads, never processes); clone3 gets
/// ENOSYS (its flags are behind a pointer the filter cannot read; glibc then uses clone). A
/// call of another architecture than x86-64, or an x32 call, kills the process whatever
/// `outside` says. Returns 0, or -errno (or the positive id of a thread TSYNC could not sync).
int cshims_seccomp_install_worker_filter(int outside);

/// How many system calls the worker's list allows, and the name of the `index`th (for reports).
int cshims_seccomp_worker_allowed_count(void);
const char *cshims_seccomp_worker_allowed_name(int index);

/// Calls the filter forbids, for the proof that it is live: `which` 0 makes fork() (a clone
/// without CLONE_THREAD; without the filter the child _exits at once and is reaped, and this
/// returns its pid), 1 makes getpid as an x32 call (nr | __X32_SYSCALL_BIT; without the filter
/// a kernel without x32 answers ENOSYS, returned as -ENOSYS). With the filter the process is
/// killed before this returns. `which` 2 makes a connect on no descriptor, which the filter
/// refuses without killing: -EACCES (without the filter -EBADF).
int cshims_seccomp_forbidden_call(int which);
/* In a forked child under the worker's filter (kill mode): opens a userfaultfd (with
 * UFFD_USER_MODE_ONLY when `userModeOnly`, as `WriteTracking` does) and registers and
 * write-protects an anonymous page with it. Returns 0 when the child got through, the
 * signal that ended it (SIGSYS: the filter), or -errno of a call that failed. */
int cshims_seccomp_probe_write_tracking(int userModeOnly);

#endif
