#ifndef CSHIMS_SPAWN_H
#define CSHIMS_SPAWN_H

#include <spawn.h>

/// posix_spawn_file_actions_addclosefrom_np (glibc 2.34, declared only with _GNU_SOURCE):
/// the child closes every descriptor from `from` up before it runs the program.
int cshims_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int from);

/// posix_spawn_file_actions_addchdir_np (glibc 2.29, _GNU_SOURCE): the child changes to
/// `path` before it runs the program.
int cshims_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path);

/// POSIX_SPAWN_SETSID (glibc 2.26, _GNU_SOURCE): the child starts a session of its own.
int cshims_spawn_setsid_flag(void);

#endif
