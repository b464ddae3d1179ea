/* The snapshotter service loop (see snapshotter.c). */
#ifndef FLINT_SNAPSHOTTER_H
#define FLINT_SNAPSHOTTER_H

#include <stdbool.h>

typedef struct flint_snapshotter_options_s {
  const char *run_dir;        /* flintd's RUN directory (tmpfs): slots, sandbox skeletons */
  const char *cgroup_parent;  /* parent cgroup of restored replicas (not the spawner's) */
  const char *criu;           /* path of the criu binary */
  const char *stage_dir;      /* where restore mount sources are staged (see snapshotter.c) */
  unsigned slots;             /* restore slots kept ready */
  bool userns;
} flint_snapshotter_options_t;

/* Serves node.proto Dump/Restore/Freeze/Kill frames on `sock` until it closes; then kills every
 * replica it restored. Returns the process exit status. Single-threaded; moves the process into
 * a private mount namespace. */
int flint_snapshotter_main (int sock, const flint_snapshotter_options_t *opts);

#endif
