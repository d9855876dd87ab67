#ifndef CSHIMS_PRIVILEGES_H
#define CSHIMS_PRIVILEGES_H

/// Drops every capability of the calling thread for good: no_new_privs set, the bounding set
/// emptied (PR_CAPBSET_DROP of each capability), the ambient set cleared, and the effective,
/// permitted and inheritable sets set to empty (capset, version 3). These are per-thread
/// attributes: a process that calls it then execs from this thread has none left in any
/// thread (root's exec grants only what the bounding set allows: nothing). Returns 0, or
/// -errno of the first call that failed.
int cshims_drop_capabilities_of_this_thread(void);

/// What a Landlock rule allows beneath its path.
enum {
    /// Every write right the ruleset handles (files written, made, removed, renamed, truncated).
    CSHIMS_LANDLOCK_ALL_WRITES = 0,
    /// Making and removing UNIX sockets (and removing files): a folder that holds a socket.
    CSHIMS_LANDLOCK_SOCKETS = 1,
    /// Opening for writing only: a device such as /dev/kvm.
    CSHIMS_LANDLOCK_WRITE_FILE = 2,
};

/// Confines the calling thread, and what it execs, with Landlock: no write of any kind to the
/// file system (open for writing, make, remove, rename, link, truncate) but beneath
/// `paths[i]` with the rights of `kinds[i]`; no TCP bind or connect (ABI 4+); no signal to,
/// nor abstract UNIX socket of, a process outside the domain (ABI 6+). Reads stay open. Sets
/// no_new_privs first (Landlock's condition without CAP_SYS_ADMIN). Returns the Landlock ABI
/// used (> 0), 0 when the kernel has none (nothing done), or -errno of the call that failed.
int cshims_landlock_restrict_writes(const char *const *paths, const int *kinds, int count);

/// open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600) then unlink: 0, or the errno it got (a test
/// of the Landlock domain from inside).
int cshims_try_create(const char *path);

#endif
