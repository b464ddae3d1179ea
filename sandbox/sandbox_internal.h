/* Internals shared by the sandbox library's files (not for its users). */
#ifndef FLINT_SANDBOX_INTERNAL_H
#define FLINT_SANDBOX_INTERNAL_H

#include "cgroup.h"
#include "sandbox.h"
#include "flint/util.h"

#include <linux/filter.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct flint_sandbox_node_s {
  flint_sandbox_options_t opts;
  char run_dir[PATH_MAX];
  char root_dir[PATH_MAX];      /* empty directory the sandbox roots are mounted on (per mount ns) */
  flint_cgroup_root_t cg;
  struct sock_fprog seccomp_standard;
  struct sock_fprog seccomp_gpu;
  bool have_nvidia;
  char top_links[8][16];        /* /bin, /lib, ...: symlinks on this host (merged /usr) */
  char top_dirs[8][16];         /* ... or real directories (bound read-only) */
  char idmap[64];               /* "0 100000 65536" with a user namespace */
  char fault[64];               /* FLINT_FAULT: a failure to inject (tests) */
  char describe[256];
};

struct flint_sandbox_s {
  char id[128];
  pid_t pid;
  bool isolated;
  flint_cgroup_t cg;
  const flint_cgroup_ops_t *cg_ops;
  uint64_t memory_limit;
  uint32_t pids_limit;
  int slirp_exit_fd;            /* network endpoints: closing it stops their slirp4netns */
};

/* Fault injection (tests only): FLINT_FAULT=<point> in the spawner's environment makes the
 * sandbox child die abruptly at that point, as if killed: "sandbox-mounts" (half-built root),
 * "sandbox-exec" (everything set up, just before execve). */
#define FLINT_FAULT_HERE(node, point)                                                   \
  do                                                                                    \
    {                                                                                   \
      if (flint_fault_listed ((node)->fault, (point)))                    \
        syscall (SYS_exit_group, 137);                                                  \
    }                                                                                   \
  while (0)

/* Paths inside every sandbox. */
#define FLINT_SANDBOX_WORKER "/.flint/worker"
#define FLINT_SANDBOX_BUNDLE "/bundle"
#define FLINT_SANDBOX_WEIGHTS "/weights"

/* seccomp.c: compiles the node's policies. */
int flint__seccomp_compile (flint_sandbox_node_t *node, flint_error_t *err);

/* rootfs.c: builds the root skeleton of a variant (once). */
int flint__rootfs_skeleton (flint_sandbox_node_t *node, bool network, bool gpu, char *path_out, size_t len,
                            flint_error_t *err);

/* rootfs.c: mounts `table` (sources opened by the parent: fds[i]) over the skeleton (skel_fd)
 * and pivots into it. Runs in the child, in its new mount namespace, with all capabilities of
 * its user namespace. On failure returns -errno and names the step in *stage. */
int flint__rootfs_build (const flint_sandbox_node_t *node, const flint_sandbox_spec_t *spec, const flint_mount_t *table,
                         const int *fds, size_t n, int skel_fd, const char **stage);

#endif
