#define _GNU_SOURCE
#include "cshims_privileges.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <linux/capability.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

/* One thread's drop (capabilities and no_new_privs are per-thread attributes). */
static int drop_this_thread(void) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -errno;
    /* Every capability the kernel may know; ones it does not answer EINVAL. Needs
       CAP_SETPCAP, so before the permitted set goes. */
    for (int capability = 0; capability <= 63; capability++) {
        if (prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 && errno != EINVAL) return -errno;
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) return -errno;
    struct __user_cap_header_struct header;
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    memset(&header, 0, sizeof header);
    memset(data, 0, sizeof data);
    header.version = _LINUX_CAPABILITY_VERSION_3;
    if (syscall(SYS_capset, &header, data) != 0) return -errno;
    return 0;
}

int cshims_drop_capabilities_of_this_thread(void) { return drop_this_thread(); }

/* Landlock's ABI, from the kernel's uapi (declared here: the build host's headers may predate
   the fields of later ABIs). */
enum {
    LL_CREATE_RULESET = 444, LL_ADD_RULE = 445, LL_RESTRICT_SELF = 446,
    LL_CREATE_RULESET_VERSION = 1, LL_RULE_PATH_BENEATH = 1,
};
#define LL_FS_WRITE_FILE (1ULL << 1)
#define LL_FS_REMOVE_DIR (1ULL << 4)
#define LL_FS_REMOVE_FILE (1ULL << 5)
#define LL_FS_MAKE_CHAR (1ULL << 6)
#define LL_FS_MAKE_DIR (1ULL << 7)
#define LL_FS_MAKE_REG (1ULL << 8)
#define LL_FS_MAKE_SOCK (1ULL << 9)
#define LL_FS_MAKE_FIFO (1ULL << 10)
#define LL_FS_MAKE_BLOCK (1ULL << 11)
#define LL_FS_MAKE_SYM (1ULL << 12)
#define LL_FS_REFER (1ULL << 13)
#define LL_FS_TRUNCATE (1ULL << 14)
#define LL_NET_BIND_TCP (1ULL << 0)
#define LL_NET_CONNECT_TCP (1ULL << 1)
#define LL_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)
#define LL_SCOPE_SIGNAL (1ULL << 1)

struct ll_ruleset_attr { uint64_t handled_access_fs, handled_access_net, scoped; };
struct ll_path_beneath { uint64_t allowed_access; int32_t parent_fd; } __attribute__((packed));

int cshims_landlock_restrict_writes(const char *const *paths, const int *kinds, int count) {
    long abi = syscall(LL_CREATE_RULESET, NULL, 0, LL_CREATE_RULESET_VERSION);
    if (abi < 0) return (errno == ENOSYS || errno == EOPNOTSUPP) ? 0 : -errno;
    uint64_t writes = LL_FS_WRITE_FILE | LL_FS_REMOVE_DIR | LL_FS_REMOVE_FILE | LL_FS_MAKE_CHAR | LL_FS_MAKE_DIR | LL_FS_MAKE_REG
        | LL_FS_MAKE_SOCK | LL_FS_MAKE_FIFO | LL_FS_MAKE_BLOCK | LL_FS_MAKE_SYM;
    if (abi >= 2) writes |= LL_FS_REFER;
    if (abi >= 3) writes |= LL_FS_TRUNCATE;
    struct ll_ruleset_attr attributes = { writes, 0, 0 };
    size_t size = sizeof attributes.handled_access_fs;
    if (abi >= 4) { attributes.handled_access_net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP; size += sizeof attributes.handled_access_net; }
    if (abi >= 6) { attributes.scoped = LL_SCOPE_ABSTRACT_UNIX_SOCKET | LL_SCOPE_SIGNAL; size += sizeof attributes.scoped; }
    int ruleset = (int)syscall(LL_CREATE_RULESET, &attributes, size, 0);
    if (ruleset < 0) return -errno;
    int result = 0;
    for (int index = 0; index < count && result == 0; index++) {
        uint64_t allowed = kinds[index] == CSHIMS_LANDLOCK_SOCKETS ? (LL_FS_MAKE_SOCK | LL_FS_REMOVE_FILE)
            : kinds[index] == CSHIMS_LANDLOCK_WRITE_FILE ? LL_FS_WRITE_FILE : writes;
        int fd = open(paths[index], O_PATH | O_CLOEXEC);
        if (fd < 0) { result = -errno; break; }
        struct stat info;
        /* A rule on a file takes only the rights that apply to files. */
        if (fstat(fd, &info) == 0 && !S_ISDIR(info.st_mode)) allowed &= LL_FS_WRITE_FILE | LL_FS_TRUNCATE;
        struct ll_path_beneath rule = { allowed & writes, fd };
        if (syscall(LL_ADD_RULE, ruleset, LL_RULE_PATH_BENEATH, &rule, 0) != 0) result = -errno;
        close(fd);
    }
    if (result == 0 && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) result = -errno;
    if (result == 0 && syscall(LL_RESTRICT_SELF, ruleset, 0) != 0) result = -errno;
    close(ruleset);
    return result == 0 ? (int)abi : result;
}

int cshims_try_create(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return errno;
    close(fd);
    unlink(path);
    return 0;
}
