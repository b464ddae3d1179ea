/* sandbox: builds the isolated environment every flint-worker runs in.
 *
 * A sandbox is a process tree in fresh namespaces (pid, mount, ipc, uts, net, cgroup; user
 * where the kernel allows), a root built from read-only bind mounts with the bundle at /bundle
 * and the weights at /weights, a size-limited private /tmp, its own /proc and a minimal /dev,
 * no capabilities, no_new_privs, an unprivileged uid, a seccomp allowlist, and a cgroup with
 * memory, CPU and pids limits. The design and every choice's reason: docs/SANDBOX.md.
 *
 * The library is used from a single-threaded process (flintd's spawner, the snapshotter):
 * unshare(CLONE_NEWUSER) fails in multi-threaded processes, and fork from a threaded process
 * is slow and hazardous. Functions return 0 / -1 with `err` unless stated otherwise. */
#ifndef FLINT_SANDBOX_H
#define FLINT_SANDBOX_H

#include "flint/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Node-wide sandbox settings, probed once at start (sandbox_probe). */
typedef struct flint_sandbox_node_s flint_sandbox_node_t;

typedef struct flint_sandbox_spec_s {
  const char *id;            /* unique replica id: names the cgroup and scratch dirs */
  const char *bundle_dir;    /* host dir → /bundle (read-only) */
  const char *weights_dir;   /* host dir → /weights (read-only); may be NULL */
  char *const *argv;         /* argv[0]: host path of the program (flint-worker) */
  char *const *env;          /* NULL-terminated KEY=VALUE list */
  const char *const *file_names;  /* files at /run/secrets/<name> (NULL-terminated), with: */
  const void *const *file_data;
  const size_t *file_lens;
  uint64_t memory_bytes;     /* 0 = no limit */
  uint32_t cpu_millis;       /* 0 = no limit */
  uint32_t pids_max;         /* 0 = no limit */
  uint64_t tmp_bytes;        /* size of /tmp */
  uint32_t nofile;           /* RLIMIT_NOFILE */
  bool network;              /* share the host network namespace (outbound access) */
  bool gpu;                  /* expose /dev/nvidia* */
  const char *hostname;
  /* fds handed to the worker: become its fds 1 and 2; not closed. The worker's channel (fd 3)
   * is a socketpair the sandbox creates inside its own network namespace (CRIU finds unix
   * sockets through the dumped netns): its other end comes back in *channel_out of spawn. */
  int stdout_fd;
  int stderr_fd;
} flint_sandbox_spec_t;

#define FLINT_SANDBOX_PHASES 6
typedef struct flint_sandbox_timings_s {
  double clone_ms;     /* clone() with the namespaces until the child runs */
  double cgroup_ms;    /* create the cgroup, set limits, move the child in */
  double mounts_ms;    /* build the root: binds, /tmp, /proc, /dev, pivot_root */
  double seccomp_ms;   /* creds, caps, no_new_privs and the seccomp filter */
  double exec_ms;      /* from the filter to execve() returning in the child */
  double total_ms;     /* spawn call to the worker running */
} flint_sandbox_timings_t;

typedef struct flint_sandbox_s flint_sandbox_t;

/* The mounts of a sandbox, in order (rootfs.c). The snapshotter declares every bind and the
 * /tmp tmpfs as CRIU externals under `key`, and maps them back to `host` on restore. */
typedef enum flint_mount_kind_e {
  FLINT_MNT_BIND_RO,   /* read-only bind of a host file or directory */
  FLINT_MNT_BIND_DEV,  /* bind of a host device node */
  FLINT_MNT_TMPFS,     /* /tmp */
  FLINT_MNT_PROC,      /* /proc of the sandbox's pid namespace */
} flint_mount_kind_t;

typedef struct flint_mount_s {
  flint_mount_kind_t kind;
  char inside[64];       /* mount point inside the sandbox: "/usr", "/dev/null" */
  char key[48];          /* stable external key: "usr", "dev-null" */
  char host[4096];       /* source on the host (binds) */
  char opts[64];         /* tmpfs options */
} flint_mount_t;

/* What a finished sandbox died of. */
typedef struct flint_sandbox_exit_s {
  int wait_status;
  bool oom_killed;
  bool pids_limit_hit;
  uint64_t memory_limit;
  char reason[256];   /* "exited with status 3", "killed by signal 9 (SIGKILL)",
                         "exceeded memory limit 256 MiB", ... */
} flint_sandbox_exit_t;

typedef struct flint_sandbox_options_s {
  bool isolate;              /* false: plain fork+exec, no isolation (development only) */
  bool userns;               /* run in a user namespace (ids mapped from uid_base) */
  uid_t uid_base;            /* host id of the sandbox's root with a user ns (100000) */
  const char *run_dir;       /* root-only scratch dir for sandbox roots (e.g. /run/flint/sandbox) */
  const char *cgroup_parent; /* cgroup name under which replicas go, e.g. "flint" */
  uid_t uid;                 /* unprivileged ids the worker runs as, inside (65534) */
  gid_t gid;
} flint_sandbox_options_t;

/* Probes the kernel (cgroup v1/v2, user namespaces, seccomp) once and prepares the node-wide
 * state: cgroup parent, the compiled seccomp filters. */
int flint_sandbox_node_new (const flint_sandbox_options_t *opts, flint_sandbox_node_t **out, flint_error_t *err);
void flint_sandbox_node_free (flint_sandbox_node_t *node);
/* A one-line description of what was detected ("cgroup v1, user namespaces: no, ..."). */
const char *flint_sandbox_node_describe (const flint_sandbox_node_t *node);

/* Creates the sandbox and starts argv in it. Returns when the program has been exec'd (or
 * failed to). The worker is the sandbox's pid 1; the caller reaps it with waitpid() on
 * flint_sandbox_pid() (it is the caller's child) and then calls flint_sandbox_finish(). */
int flint_sandbox_spawn (flint_sandbox_node_t *node, const flint_sandbox_spec_t *spec, flint_sandbox_t **out,
                         int *channel_out, flint_sandbox_timings_t *timings, flint_error_t *err);

/* Sandboxes for restored replicas (the snapshotter). CRIU recreates the namespaces and mounts
 * from the image; what must exist beforehand is the cgroup, which the restoring process joins
 * so that the restored tree is born inside it:
 *   flint_sandbox_prepare   creates the cgroup (no limits yet) and the sandbox record
 *   flint_sandbox_enter     in a forked child (the future criu swrk): join the cgroup and
 *                           unshare a cgroup namespace rooted there (async-signal-safe)
 *   flint_sandbox_set_limits applies a spec's memory, CPU and pids limits
 *   flint_sandbox_adopt     records the restored root's pid (the caller's child)
 * Kill, freeze and finish then work as for spawned sandboxes. */
int flint_sandbox_prepare (flint_sandbox_node_t *node, const char *id, flint_sandbox_t **out, flint_error_t *err);
int flint_sandbox_enter (const flint_sandbox_t *sb);
int flint_sandbox_set_limits (flint_sandbox_t *sb, const flint_sandbox_spec_t *spec, flint_error_t *err);
void flint_sandbox_adopt (flint_sandbox_t *sb, pid_t pid);
/* Renames the sandbox (a prepared slot becomes a replica). */
void flint_sandbox_set_id (flint_sandbox_t *sb, const char *id);

pid_t flint_sandbox_pid (const flint_sandbox_t *sb);
const char *flint_sandbox_id (const flint_sandbox_t *sb);

/* Kills every process of the sandbox (SIGKILL through the cgroup). -errno. */
int flint_sandbox_kill (flint_sandbox_t *sb);

/* Freezes (true) or thaws the sandbox's processes through the cgroup freezer. -errno. */
int flint_sandbox_freeze (flint_sandbox_t *sb, bool frozen);

/* After the caller reaped the pid with `wait_status`: explains the death (OOM, pids limit,
 * signal) into *exit_out, then removes the cgroup and scratch state and frees `sb`. */
void flint_sandbox_finish (flint_sandbox_t *sb, int wait_status, flint_sandbox_exit_t *exit_out);

/* Removes leftovers of sandboxes whose owner died (cgroups under the parent, scratch dirs),
 * killing what still runs there. Returns the number of sandboxes cleaned. */
int flint_sandbox_node_cleanup_stale (flint_sandbox_node_t *node);

/* Removes the node's parent cgroup (at the helper's exit, once every sandbox is finished). */
void flint_sandbox_node_remove_parent (flint_sandbox_node_t *node);

/* The mounts of a sandbox built for `spec`; returns how many were written to `out`. */
size_t flint_sandbox_mount_table (const flint_sandbox_node_t *node, const flint_sandbox_spec_t *spec,
                                  flint_mount_t *out, size_t max);

/* The root skeleton directory for a variant (built on first use): what CRIU restores the root
 * mount from. Returns 0 and the path, or -1 with `err`. */
int flint_sandbox_skeleton (flint_sandbox_node_t *node, bool network, bool gpu, char *path_out, size_t len,
                            flint_error_t *err);

/* The user namespace's id mapping of this node ("0 100000 65536"), or "" without one. */
const char *flint_sandbox_idmap (const flint_sandbox_node_t *node);

/* Formats a wait status for people ("killed by signal 11 (SIGSEGV)"). */
void flint_describe_wait_status (int wait_status, char *buf, size_t len);

#endif
