/* cgroups for sandboxes: one cgroup per replica under a per-flintd parent, with memory, CPU and
 * pids limits and a freezer. Two implementations behind one table: cgroup_v1.c (one hierarchy
 * per controller, as on this development machine) and cgroup_v2.c (the unified hierarchy of
 * most production hosts). Which one is detected once, at start (flint_cgroup_probe). */
#ifndef FLINT_CGROUP_H
#define FLINT_CGROUP_H

#include "flint/error.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define FLINT_CG_MAX_CTRL 4

typedef struct flint_cgroup_limits_s {
  uint64_t memory_bytes;   /* 0 = none */
  uint32_t cpu_millis;     /* 0 = none */
  uint32_t pids_max;       /* 0 = none */
} flint_cgroup_limits_t;

/* A replica's cgroup: one directory per controller (v1) or one directory (v2). */
typedef struct flint_cgroup_s {
  char dirs[FLINT_CG_MAX_CTRL][PATH_MAX];
  char ctrl[FLINT_CG_MAX_CTRL][16];
  int ndirs;
  char procs_dir[PATH_MAX];  /* where to write the pid to attach it (for v1: every dir) */
  char relpath[PATH_MAX];    /* path relative to the hierarchy roots, e.g. "flint-ab12/echo-1-r3" */
} flint_cgroup_t;

typedef struct flint_cgroup_root_s flint_cgroup_root_t;

typedef struct flint_cgroup_ops_s {
  const char *name;
  /* Creates `cg` (under the parent) and applies `lim`. */
  int (*create) (const flint_cgroup_root_t *root, const char *id, const flint_cgroup_limits_t *lim,
                 flint_cgroup_t *cg, flint_error_t *err);
  /* (Re)applies limits to an existing cgroup. */
  int (*set_limits) (const flint_cgroup_t *cg, const flint_cgroup_limits_t *lim, flint_error_t *err);
  /* Moves `pid` into every hierarchy of `cg`. -errno. */
  int (*attach) (const flint_cgroup_t *cg, pid_t pid);
  /* Freezes or thaws every task of `cg`. -errno. */
  int (*freeze) (const flint_cgroup_t *cg, bool frozen);
  /* After death: did the memory controller OOM-kill, did the pids limit refuse a fork? */
  void (*explain) (const flint_cgroup_t *cg, bool *oom_killed, bool *pids_hit);
  /* SIGKILLs every task in `cg`. -errno. */
  int (*kill_all) (const flint_cgroup_t *cg);
  /* Removes the directories; -EBUSY while tasks remain. */
  int (*destroy) (const flint_cgroup_t *cg);
} flint_cgroup_ops_t;

struct flint_cgroup_root_s {
  const flint_cgroup_ops_t *ops;
  int version;                           /* 1 or 2 */
  char mounts[FLINT_CG_MAX_CTRL][PATH_MAX]; /* v1: memory, cpu, pids, freezer hierarchies; v2: one */
  char ctrl[FLINT_CG_MAX_CTRL][16];         /* v1: the controller of each mount */
  int nmounts;
  char parent[128];                      /* e.g. "flint-ab12cd34ef56" */
};

/* Detects the cgroup layout from /proc/self/mountinfo and creates the parent cgroup. Returns 0,
 * or -1 with `err` when no usable cgroup hierarchy exists (sandboxes then refuse to start: a
 * worker without limits is not a sandbox). */
int flint_cgroup_probe (const char *parent, flint_cgroup_root_t *root, flint_error_t *err);

/* Kills and removes every replica cgroup left under the parent (an earlier spawner died).
 * Returns how many were removed. */
int flint_cgroup_cleanup_stale (const flint_cgroup_root_t *root);

/* Removes the (empty) parent cgroup when its owner exits. -errno (-EBUSY while replicas
 * remain). */
int flint_cgroup_remove_parent (const flint_cgroup_root_t *root);

extern const flint_cgroup_ops_t flint_cgroup_v1_ops;
extern const flint_cgroup_ops_t flint_cgroup_v2_ops;

/* Shared helpers (cgroup_common.c). */
int flint__cg_write (const char *dir, const char *file, const char *value);
int flint__cg_read_key (const char *dir, const char *file, const char *key, uint64_t *value);
int flint__cg_kill_procs (const char *dir);

#endif
