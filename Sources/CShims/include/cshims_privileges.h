#ifndef CSHIMS_PRIVILEGES_H
#define CSHIMS_PRIVILEGES_H

/// Drops every capability of the calling thread for good: no_new_privs set, the bounding set
/// emptied (PR_CAPBSET_DROP of each capability), the ambient set cleared, and the effective,
/// permitted and inheritable sets set to empty (capset, version 3). These are per-thread
/// attributes: a process that calls it then execs from this thread has none left in any
/// thread (root's exec grants only what the bounding set allows: nothing). Returns 0, or
/// -errno of the first call that failed.
int cshims_drop_capabilities_of_this_thread(void);

#endif
