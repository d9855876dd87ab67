#define _GNU_SOURCE
#include "cshims_fs.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/statfs.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

const int CSHIMS_O_PATH = O_PATH;
const int CSHIMS_O_TMPFILE = O_TMPFILE;
const int CSHIMS_O_NOATIME = O_NOATIME;
const int CSHIMS_O_LARGEFILE = 0100000; /* the x86-64 value; Glibc defines O_LARGEFILE as 0 on 64-bit */
const int CSHIMS_AT_EMPTY_PATH = AT_EMPTY_PATH;
const int CSHIMS_AT_NO_AUTOMOUNT = AT_NO_AUTOMOUNT;
const int CSHIMS_AT_STATX_SYNC_TYPE = AT_STATX_SYNC_TYPE;
const unsigned int CSHIMS_STATX_RESERVED = STATX__RESERVED;
const uint64_t CSHIMS_RESOLVE_IN_ROOT = RESOLVE_IN_ROOT;
const uint64_t CSHIMS_RESOLVE_BENEATH = RESOLVE_BENEATH;
const uint64_t CSHIMS_RESOLVE_NO_MAGICLINKS = RESOLVE_NO_MAGICLINKS;
const uint64_t CSHIMS_RESOLVE_NO_SYMLINKS = RESOLVE_NO_SYMLINKS;
const size_t CSHIMS_STAT_SIZE = sizeof(struct stat);
const size_t CSHIMS_STATX_SIZE = sizeof(struct statx);

_Static_assert(sizeof(struct stat) == 144, "x86-64 struct stat is 144 bytes");
_Static_assert(sizeof(struct statx) == 256, "struct statx is 256 bytes");

int cshims_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct open_how how = { .flags = flags, .mode = mode, .resolve = resolve };
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

int cshims_fstatat_bytes(int dirfd, const char *path, void *statbuf, int flags) {
    return (int)syscall(SYS_newfstatat, dirfd, path, statbuf, flags);
}

int cshims_statx_bytes(int dirfd, const char *path, int flags, unsigned int mask, void *statxbuf) {
    return (int)syscall(SYS_statx, dirfd, path, flags, mask, statxbuf);
}

long cshims_getdents64(int fd, void *buffer, size_t length) {
    return syscall(SYS_getdents64, fd, buffer, length);
}

const long CSHIMS_TMPFS_MAGIC = TMPFS_MAGIC;

/* The PAGEMAP_SCAN ABI (include/uapi/linux/fs.h, Linux 6.7), named here with a prefix of its
 * own: newer headers define the same names. */
enum {
    CSHIMS_PAGE_IS_WRITTEN_BIT = 1 << 1,
    CSHIMS_PAGE_IS_FILE_BIT = 1 << 2,
    CSHIMS_PAGE_IS_PRESENT_BIT = 1 << 3,
    CSHIMS_PAGE_IS_SWAPPED_BIT = 1 << 4,
    CSHIMS_PAGE_IS_PFNZERO_BIT = 1 << 5,
};
const uint64_t CSHIMS_PAGE_IS_PFNZERO = CSHIMS_PAGE_IS_PFNZERO_BIT;

struct cshims_page_region { uint64_t start, end, categories; };
struct cshims_pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
_Static_assert(sizeof(struct cshims_page_region) == 24, "struct page_region is three words");
_Static_assert(sizeof(struct cshims_pm_scan_arg) == 96, "struct pm_scan_arg is twelve words");
#define CSHIMS_PAGEMAP_SCAN _IOWR('f', 16, struct cshims_pm_scan_arg)
_Static_assert(CSHIMS_PAGEMAP_SCAN == 0xC0606610u, "PAGEMAP_SCAN's request number");
const unsigned int CSHIMS_PAGEMAP_SCAN_REQUEST = CSHIMS_PAGEMAP_SCAN;
/* PAGEMAP_SCAN's flag that fails the call unless every mapping in the range is registered for
 * asynchronous write protection. */
enum { CSHIMS_PM_SCAN_CHECK_WPASYNC = 1 << 1 };

/* One PAGEMAP_SCAN question: the runs of pages in [start, end) whose categories match. */
static long pagemap_runs(int fd, uint64_t start, uint64_t end, uint64_t *regions, size_t capacity, uint64_t *walkEnd,
                         uint64_t flags, uint64_t inverted, uint64_t required, uint64_t anyOf) {
    struct cshims_pm_scan_arg arg = {
        .size = sizeof(arg),
        .flags = flags,
        .start = start,
        .end = end,
        .vec = (uint64_t)(uintptr_t)regions,
        .vec_len = capacity,
        .category_inverted = inverted,
        .category_mask = required,
        .category_anyof_mask = anyOf,
        .return_mask = CSHIMS_PAGE_IS_PFNZERO_BIT,
    };
    long found = ioctl(fd, CSHIMS_PAGEMAP_SCAN, &arg);
    if (found >= 0) *walkEnd = arg.walk_end;
    return found;
}

long cshims_pagemap_private_runs(int fd, uint64_t start, uint64_t end, uint64_t *regions, size_t capacity, uint64_t *walkEnd) {
    /* Not a file's page (the FILE bit inverted and required), present or swapped. */
    return pagemap_runs(fd, start, end, regions, capacity, walkEnd, 0, CSHIMS_PAGE_IS_FILE_BIT, CSHIMS_PAGE_IS_FILE_BIT,
                        CSHIMS_PAGE_IS_PRESENT_BIT | CSHIMS_PAGE_IS_SWAPPED_BIT);
}

/* userfaultfd's features for write tracking (Linux 6.4 and 6.7), which this machine's headers
 * may not name. */
enum {
    CSHIMS_UFFD_FEATURE_WP_UNPOPULATED = 1 << 13,
    CSHIMS_UFFD_FEATURE_WP_ASYNC = 1 << 15,
};
const unsigned int CSHIMS_UFFDIO_API_REQUEST = UFFDIO_API;
const unsigned int CSHIMS_UFFDIO_REGISTER_REQUEST = UFFDIO_REGISTER;
const unsigned int CSHIMS_UFFDIO_WRITEPROTECT_REQUEST = UFFDIO_WRITEPROTECT;
const int CSHIMS_UFFD_USER_MODE_ONLY = UFFD_USER_MODE_ONLY;

int cshims_uffd_open_write_tracking(void) {
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0) return -1;
    struct uffdio_api api = { .api = UFFD_API, .features = CSHIMS_UFFD_FEATURE_WP_ASYNC | CSHIMS_UFFD_FEATURE_WP_UNPOPULATED };
    if (ioctl(fd, UFFDIO_API, &api) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int cshims_uffd_register_write_protection(int fd, uint64_t start, uint64_t length) {
    struct uffdio_register range = { .range = { .start = start, .len = length }, .mode = UFFDIO_REGISTER_MODE_WP };
    return ioctl(fd, UFFDIO_REGISTER, &range);
}

int cshims_uffd_write_protect(int fd, uint64_t start, uint64_t length) {
    struct uffdio_writeprotect protect = { .range = { .start = start, .len = length }, .mode = UFFDIO_WRITEPROTECT_MODE_WP };
    return ioctl(fd, UFFDIO_WRITEPROTECT, &protect);
}

long cshims_pagemap_written_runs(int fd, uint64_t start, uint64_t end, uint64_t *regions, size_t capacity, uint64_t *walkEnd) {
    /* Written (protection lifted), present or swapped: not asking whether a page is a file's
     * spares the kernel a look at each present page's struct page. */
    return pagemap_runs(fd, start, end, regions, capacity, walkEnd, CSHIMS_PM_SCAN_CHECK_WPASYNC, 0, CSHIMS_PAGE_IS_WRITTEN_BIT,
                        CSHIMS_PAGE_IS_PRESENT_BIT | CSHIMS_PAGE_IS_SWAPPED_BIT);
}

long cshims_file_system_type(const char *path) {
    struct statfs info;
    if (statfs(path, &info) != 0) return -1;
    return (long)info.f_type;
}
