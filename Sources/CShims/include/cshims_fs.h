/* Why: openat2(2), statx(2), newfstatat(2) and getdents64(2) are reached through syscall(2)
 * (variadic, or undeclared by Glibc), and the O_ / AT_ / RESOLVE_ constants the guest file
 * layer needs are either _GNU_SOURCE-only or in kernel headers Swift does not import. The
 * stat-like calls take untyped buffers because they write the kernel's bytes straight into
 * guest memory, which need not be aligned for the C structs. */
#ifndef CSHIMS_FS_H
#define CSHIMS_FS_H
#include <stdint.h>
#include <stddef.h>

extern const int CSHIMS_O_PATH;
extern const int CSHIMS_O_TMPFILE;
extern const int CSHIMS_O_NOATIME;
extern const int CSHIMS_O_LARGEFILE;
extern const int CSHIMS_AT_EMPTY_PATH;
extern const int CSHIMS_AT_NO_AUTOMOUNT;
extern const int CSHIMS_AT_STATX_SYNC_TYPE;
extern const unsigned int CSHIMS_STATX_RESERVED;
extern const uint64_t CSHIMS_RESOLVE_IN_ROOT;
extern const uint64_t CSHIMS_RESOLVE_BENEATH;
extern const uint64_t CSHIMS_RESOLVE_NO_MAGICLINKS;
extern const uint64_t CSHIMS_RESOLVE_NO_SYMLINKS;
/* Sizes of the kernel structs the guest receives (x86-64 ABI): struct stat, struct statx. */
extern const size_t CSHIMS_STAT_SIZE;
extern const size_t CSHIMS_STATX_SIZE;

/* openat2(2) with a struct open_how built from the three fields; -1 and errno on failure. */
int cshims_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);
/* newfstatat(2) writing the kernel's struct stat bytes to `statbuf` (CSHIMS_STAT_SIZE bytes). */
int cshims_fstatat_bytes(int dirfd, const char *path, void *statbuf, int flags);
/* statx(2) writing the kernel's struct statx bytes to `statxbuf` (CSHIMS_STATX_SIZE bytes). */
int cshims_statx_bytes(int dirfd, const char *path, int flags, unsigned int mask, void *statxbuf);
/* getdents64(2): linux_dirent64 records into `buffer`; bytes written, 0 at the end, or -1. */
long cshims_getdents64(int fd, void *buffer, size_t length);
/* statfs(2)'s f_type of the file system holding `path` (TMPFS_MAGIC for a tmpfs), or -1 and
 * errno: Glibc's sys/statfs.h is not part of the module Swift imports. */
long cshims_file_system_type(const char *path);
extern const long CSHIMS_TMPFS_MAGIC;
/* PAGEMAP_SCAN (Linux 6.7) on the /proc/self/pagemap open at `fd`, whose ABI this machine's
 * headers may lack: the runs of pages in [start, end) that are present or swapped and not a
 * file's (a private mapping's own copies, and the zero page), each as three words in
 * `regions` (start, end, and CSHIMS_PAGE_IS_PFNZERO when the run is the zero page), at most
 * `capacity` runs. Returns the runs written, with `*walkEnd` the address the walk reached
 * (below `end` when `regions` filled), or -1 and errno (ENOTTY: a kernel without it). */
long cshims_pagemap_private_runs(int fd, uint64_t start, uint64_t end, uint64_t *regions, size_t capacity, uint64_t *walkEnd);
extern const uint64_t CSHIMS_PAGE_IS_PFNZERO;
/* The PAGEMAP_SCAN ioctl's request number (the worker's seccomp filter allows it). */
extern const unsigned int CSHIMS_PAGEMAP_SCAN_REQUEST;

/* Write tracking with userfaultfd (Linux 6.7: asynchronous write protection). A userfaultfd
 * for user-mode faults only (no fault is ever handed to user space: the kernel itself lifts a
 * page's write protection at its first write, from user or kernel mode alike) with
 * UFFD_FEATURE_WP_ASYNC and UFFD_FEATURE_WP_UNPOPULATED; its descriptor, or -1 and errno
 * (EPERM: not allowed here; EINVAL: a kernel without the features). */
int cshims_uffd_open_write_tracking(void);
/* Registers [start, start + length) with the userfaultfd `fd` for write protection; 0, or -1 and errno. */
int cshims_uffd_register_write_protection(int fd, uint64_t start, uint64_t length);
/* Write-protects [start, start + length) (pages not yet there too); 0, or -1 and errno. */
int cshims_uffd_write_protect(int fd, uint64_t start, uint64_t length);
/* PAGEMAP_SCAN for the runs of pages in [start, end) written since their write protection
 * (present or swapped, their protection lifted), as `cshims_pagemap_private_runs` gives its
 * runs (CSHIMS_PAGE_IS_PFNZERO marks the zero page, which a read outside the protected range
 * maps). Fails with EPERM when a mapping in the range is not registered for asynchronous
 * write protection (PM_SCAN_CHECK_WPASYNC). */
long cshims_pagemap_written_runs(int fd, uint64_t start, uint64_t end, uint64_t *regions, size_t capacity, uint64_t *walkEnd);
/* The request numbers the worker's seccomp filter allows on a userfaultfd, and the flag its
 * userfaultfd(2) must carry (UFFD_USER_MODE_ONLY). */
extern const unsigned int CSHIMS_UFFDIO_API_REQUEST;
extern const unsigned int CSHIMS_UFFDIO_REGISTER_REQUEST;
extern const unsigned int CSHIMS_UFFDIO_WRITEPROTECT_REQUEST;
extern const int CSHIMS_UFFD_USER_MODE_ONLY;
#endif
