/* cgroup v1: one directory per controller hierarchy (memory, cpu, pids, freezer). */
#include "cgroup.h"
#include "flint/util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *
dir_of (const flint_cgroup_t *cg, const char *ctrl)
{
  for (int i = 0; i < cg->ndirs; i++)
    if (strcmp (cg->ctrl[i], ctrl) == 0)
      return cg->dirs[i];
  return NULL;
}

static int
v1_destroy (const flint_cgroup_t *cg)
{
  int ret = 0;
  for (int i = 0; i < cg->ndirs; i++)
    if (rmdir (cg->dirs[i]) < 0 && errno != ENOENT)
      ret = -errno;
  return ret;
}

static int
v1_set_limits (const flint_cgroup_t *cg, const flint_cgroup_limits_t *lim, flint_error_t *err)
{
  char val[64];
  const char *d;
  int r;

  if (lim->memory_bytes && (d = dir_of (cg, "memory")))
    {
      snprintf (val, sizeof val, "%llu", (unsigned long long) lim->memory_bytes);
      if ((r = flint__cg_write (d, "memory.limit_in_bytes", val)) < 0)
        goto fail;
      /* no swap escape hatch where swap accounting exists */
      flint__cg_write (d, "memory.memsw.limit_in_bytes", val);
      flint__cg_write (d, "memory.swappiness", "0");
    }
  if (lim->cpu_millis && (d = dir_of (cg, "cpu")))
    {
      snprintf (val, sizeof val, "%u", lim->cpu_millis * 100); /* period 100 ms */
      if ((r = flint__cg_write (d, "cpu.cfs_period_us", "100000")) < 0 || (r = flint__cg_write (d, "cpu.cfs_quota_us", val)) < 0)
        goto fail;
      snprintf (val, sizeof val, "%u", lim->cpu_millis * 1024 / 1000 < 2 ? 2 : lim->cpu_millis * 1024 / 1000);
      flint__cg_write (d, "cpu.shares", val);
    }
  if (lim->pids_max && (d = dir_of (cg, "pids")))
    {
      snprintf (val, sizeof val, "%u", lim->pids_max);
      if ((r = flint__cg_write (d, "pids.max", val)) < 0)
        goto fail;
    }
  return 0;
fail:
  return flint_error_set_errno (err, FLINT_EINTERNAL, r, "configure cgroup `%s`", cg->relpath);
}

static int
v1_create (const flint_cgroup_root_t *root, const char *id, const flint_cgroup_limits_t *lim, flint_cgroup_t *cg,
           flint_error_t *err)
{
  memset (cg, 0, sizeof *cg);
  snprintf (cg->relpath, sizeof cg->relpath, "%s/%s", root->parent, id);
  for (int i = 0; i < root->nmounts; i++)
    {
      snprintf (cg->dirs[i], PATH_MAX, "%s/%s/%s", root->mounts[i], root->parent, id);
      snprintf (cg->ctrl[i], sizeof cg->ctrl[i], "%s", root->ctrl[i]);
      if (mkdir (cg->dirs[i], 0755) < 0 && errno != EEXIST)
        {
          int e = errno;
          cg->ndirs = i;
          v1_destroy (cg);
          return flint_error_set_errno (err, FLINT_EINTERNAL, e, "create cgroup `%s`", cg->dirs[i]);
        }
      cg->ndirs = i + 1;
    }
  if (v1_set_limits (cg, lim, err) < 0)
    {
      v1_destroy (cg);
      return -1;
    }
  return 0;
}

static int
v1_attach (const flint_cgroup_t *cg, pid_t pid)
{
  char val[32];
  snprintf (val, sizeof val, "%d", (int) pid);
  for (int i = 0; i < cg->ndirs; i++)
    {
      int r = flint__cg_write (cg->dirs[i], "cgroup.procs", val);
      if (r < 0)
        return r;
    }
  return 0;
}

static int
v1_freeze (const flint_cgroup_t *cg, bool frozen)
{
  const char *d = dir_of (cg, "freezer");
  if (d == NULL)
    return -ENOTSUP;
  return flint__cg_write (d, "freezer.state", frozen ? "FROZEN" : "THAWED");
}

static void
v1_explain (const flint_cgroup_t *cg, bool *oom_killed, bool *pids_hit)
{
  uint64_t v = 0;
  const char *d;

  *oom_killed = *pids_hit = false;
  if ((d = dir_of (cg, "memory")) && flint__cg_read_key (d, "memory.oom_control", "oom_kill", &v) == 0 && v > 0)
    *oom_killed = true;
  if ((d = dir_of (cg, "pids")) && flint__cg_read_key (d, "pids.events", "max", &v) == 0 && v > 0)
    *pids_hit = true;
}

static int
v1_kill_all (const flint_cgroup_t *cg)
{
  const char *d = dir_of (cg, "pids");
  const char *fz = dir_of (cg, "freezer");
  int r;
  /* frozen tasks cannot die: thaw first */
  if (fz)
    flint__cg_write (fz, "freezer.state", "THAWED");
  r = flint__cg_kill_procs (d ? d : cg->dirs[0]);
  return r < 0 ? r : 0;
}

const flint_cgroup_ops_t flint_cgroup_v1_ops = {
  .name = "v1",
  .create = v1_create,
  .set_limits = v1_set_limits,
  .attach = v1_attach,
  .freeze = v1_freeze,
  .explain = v1_explain,
  .kill_all = v1_kill_all,
  .destroy = v1_destroy,
};
