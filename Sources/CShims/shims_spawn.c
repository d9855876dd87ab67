#define _GNU_SOURCE
#include "cshims_spawn.h"

int cshims_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

int cshims_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}

int cshims_spawn_setsid_flag(void) { return POSIX_SPAWN_SETSID; }
