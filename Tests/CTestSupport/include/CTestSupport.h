#ifndef CTESTSUPPORT_H
#define CTESTSUPPORT_H

#include <spawn.h>

/// pipe2(fds, O_CLOEXEC): a pipe no child inherits unless it is dup2'ed into one. Returns 0,
/// or -1 with errno set. (pipe2 needs _GNU_SOURCE, which Swift's Glibc module lacks.)
int chroma_test_pipe_cloexec(int fds[2]);

/// posix_spawn_file_actions_addclosefrom_np: the child closes every descriptor from `low`
/// on. Returns 0 or an errno.
int chroma_test_spawn_close_from(posix_spawn_file_actions_t *actions, int low);

#endif
