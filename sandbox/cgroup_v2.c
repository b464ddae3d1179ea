/* cgroup v2: one directory in the unified hierarchy. */
#include "cgroup.h"
#include "flint/util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int
v2_destroy (const flint_cgroup_t *cg)
{
  if (rmdir (cg->dirs[0]) < 0 && errno != ENOENT)
    return -errno;
  return 0;
}

static int
v2_set_limits (const flint_cgroup_t *cg, const flint_cgroup_limits_t *lim, flint_error_t *err)
{
  char val[64];
  int r = 0;

  if (lim->memory_bytes)
    {
      snprintf (val, sizeof val, "%llu", (unsigned long long) lim->memory_bytes);
      if ((r = flint__cg_write (cg->dirs[0], "memory.max", val)) < 0)
        goto fail;
      flint__cg_write (cg->dirs[0], "memory.swap.max", "0");
    }
  if (lim->cpu_millis)
    {
      snprintf (val, sizeof val, "%u 100000", lim->cpu_millis * 100);
      if ((r = flint__cg_write (cg->dirs[0], "cpu.max", val)) < 0)
        goto fail;
    }
  if (lim->pids_max)
    {
      snprintf (val, sizeof val, "%u", lim->pids_max);
      if ((r = flint__cg_write (cg->dirs[0], "pids.max", val)) < 0)
        goto fail;
    }
  return 0;
fail:
  return flint_error_set_errno (err, FLINT_EINTERNAL, r, "configure cgroup `%s`", cg->relpath);
}

static int
v2_create (const flint_cgroup_root_t *root, const char *id, const flint_cgroup_limits_t *lim, flint_cgroup_t *cg,
           flint_error_t *err)
{
  memset (cg, 0, sizeof *cg);
  snprintf (cg->relpath, sizeof cg->relpath, "%s/%s", root->parent, id);
  snprintf (cg->dirs[0], PATH_MAX, "%s/%s/%s", root->mounts[0], root->parent, id);
  snprintf (cg->ctrl[0], sizeof cg->ctrl[0], "unified");
  cg->ndirs = 1;
  if (mkdir (cg->dirs[0], 0755) < 0 && errno != EEXIST)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "create cgroup `%s`", cg->dirs[0]);
  if (v2_set_limits (cg, lim, err) < 0)
    {
      v2_destroy (cg);
      return -1;
    }
  return 0;
}

static int
v2_attach (const flint_cgroup_t *cg, pid_t pid)
{
  char val[32];
  snprintf (val, sizeof val, "%d", (int) pid);
  return flint__cg_write (cg->dirs[0], "cgroup.procs", val);
}

static int
v2_freeze (const flint_cgroup_t *cg, bool frozen)
{
  return flint__cg_write (cg->dirs[0], "cgroup.freeze", frozen ? "1" : "0");
}

static void
v2_explain (const flint_cgroup_t *cg, bool *oom_killed, bool *pids_hit)
{
  uint64_t v = 0;
  *oom_killed = flint__cg_read_key (cg->dirs[0], "memory.events", "oom_kill", &v) == 0 && v > 0;
  v = 0;
  *pids_hit = flint__cg_read_key (cg->dirs[0], "pids.events", "max", &v) == 0 && v > 0;
}

static int
v2_kill_all (const flint_cgroup_t *cg)
{
  if (flint__cg_write (cg->dirs[0], "cgroup.kill", "1") == 0)
    return 0;
  return flint__cg_kill_procs (cg->dirs[0]) < 0 ? -errno : 0;
}

const flint_cgroup_ops_t flint_cgroup_v2_ops = {
  .name = "v2",
  .create = v2_create,
  .set_limits = v2_set_limits,
  .attach = v2_attach,
  .freeze = v2_freeze,
  .explain = v2_explain,
  .kill_all = v2_kill_all,
  .destroy = v2_destroy,
};
