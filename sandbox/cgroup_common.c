/* cgroup detection and helpers shared by the v1 and v2 implementations. */
#include "cgroup.h"
#include "flint/cleanup.h"
#include "flint/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int
flint__cg_write (const char *dir, const char *file, const char *value)
{
  char path[PATH_MAX];
  _cleanup_close_ int fd = -1;

  snprintf (path, sizeof path, "%s/%s", dir, file);
  fd = open (path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  return flint_write_all (fd, value, strlen (value));
}

int
flint__cg_read_key (const char *dir, const char *file, const char *key, uint64_t *value)
{
  char path[PATH_MAX], line[256];
  size_t klen = strlen (key);
  FILE *f;

  snprintf (path, sizeof path, "%s/%s", dir, file);
  f = fopen (path, "re");
  if (f == NULL)
    return -errno;
  while (fgets (line, sizeof line, f))
    if (strncmp (line, key, klen) == 0 && line[klen] == ' ')
      {
        *value = strtoull (line + klen + 1, NULL, 10);
        fclose (f);
        return 0;
      }
  fclose (f);
  return -ENOENT;
}

int
flint__cg_kill_procs (const char *dir)
{
  char path[PATH_MAX];
  FILE *f;
  int pid, n = 0;

  snprintf (path, sizeof path, "%s/cgroup.procs", dir);
  f = fopen (path, "re");
  if (f == NULL)
    return -errno;
  while (fscanf (f, "%d", &pid) == 1)
    if (kill (pid, SIGKILL) == 0)
      n++;
  fclose (f);
  return n;
}

/* Finds the cgroup mounts in /proc/self/mountinfo. */
int
flint_cgroup_probe (const char *parent, flint_cgroup_root_t *root, flint_error_t *err)
{
  static const char *const v1_ctrls[FLINT_CG_MAX_CTRL] = { "memory", "cpu", "pids", "freezer" };
  char v1[FLINT_CG_MAX_CTRL][PATH_MAX] = { { 0 } };
  char v2[PATH_MAX] = { 0 };
  char line[4096];
  FILE *f = fopen ("/proc/self/mountinfo", "re");

  memset (root, 0, sizeof *root);
  snprintf (root->parent, sizeof root->parent, "%s", parent);
  if (f == NULL)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "read /proc/self/mountinfo");
  while (fgets (line, sizeof line, f))
    {
      /* id parent major:minor root mountpoint options [optional...] - fstype source superopts */
      char mnt[PATH_MAX], fstype[64], superopts[1024];
      char *sep = strstr (line, " - ");
      if (sep == NULL || sscanf (line, "%*s %*s %*s %*s %4095s", mnt) != 1
          || sscanf (sep + 3, "%63s %*s %1023s", fstype, superopts) != 2)
        continue;
      if (strcmp (fstype, "cgroup2") == 0 && v2[0] == '\0')
        snprintf (v2, sizeof v2, "%s", mnt);
      else if (strcmp (fstype, "cgroup") == 0)
        {
          for (int i = 0; i < FLINT_CG_MAX_CTRL; i++)
            {
              char *p = superopts;
              char *tok;
              while ((tok = strsep (&p, ",")) != NULL)
                if (strcmp (tok, v1_ctrls[i]) == 0 && v1[i][0] == '\0')
                  snprintf (v1[i], sizeof v1[i], "%s", mnt);
              /* strsep destroyed superopts: re-read it for the next controller */
              sscanf (sep + 3, "%*s %*s %1023s", superopts);
            }
        }
    }
  fclose (f);

  if (v1[0][0] && v1[1][0] && v1[2][0])
    {
      /* v1 (possibly hybrid, with a unified hierarchy holding no controllers) */
      root->version = 1;
      root->ops = &flint_cgroup_v1_ops;
      for (int i = 0; i < FLINT_CG_MAX_CTRL; i++)
        if (v1[i][0])
          {
            char dir[PATH_MAX + 200];
            snprintf (root->mounts[root->nmounts], PATH_MAX, "%s", v1[i]);
            snprintf (root->ctrl[root->nmounts], sizeof root->ctrl[0], "%s", v1_ctrls[i]);
            snprintf (dir, sizeof dir, "%s/%s", v1[i], parent);
            if (mkdir (dir, 0755) < 0 && errno != EEXIST)
              return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "create cgroup `%s`", dir);
            root->nmounts++;
          }
      return 0;
    }
  if (v2[0])
    {
      char dir[PATH_MAX + 200];
      int r;
      root->version = 2;
      root->ops = &flint_cgroup_v2_ops;
      snprintf (root->mounts[0], PATH_MAX, "%s", v2);
      root->nmounts = 1;
      snprintf (dir, sizeof dir, "%s/%s", v2, parent);
      if (mkdir (dir, 0755) < 0 && errno != EEXIST)
        return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "create cgroup `%s`", dir);
      /* the controllers must be enabled on the way down to the replicas */
      r = flint__cg_write (v2, "cgroup.subtree_control", "+memory +cpu +pids");
      if (r < 0)
        return flint_error_set_errno (err, FLINT_EINTERNAL, r,
                                      "enable the memory, cpu and pids controllers in `%s` "
                                      "(is this process in a leaf cgroup of a delegated tree?)", v2);
      r = flint__cg_write (dir, "cgroup.subtree_control", "+memory +cpu +pids");
      if (r < 0)
        return flint_error_set_errno (err, FLINT_EINTERNAL, r, "enable controllers in `%s`", dir);
      return 0;
    }
  return flint_error_set (err, FLINT_EPRECONDITION,
                          "no usable cgroup hierarchy (need cgroup v2, or v1 with memory, cpu and pids mounted)");
}

int
flint_cgroup_cleanup_stale (const flint_cgroup_root_t *root)
{
  int cleaned = 0;

  for (int i = 0; i < root->nmounts; i++)
    {
      char dir[PATH_MAX + 200];
      DIR *d;
      struct dirent *de;

      snprintf (dir, sizeof dir, "%s/%s", root->mounts[i], root->parent);
      d = opendir (dir);
      if (d == NULL)
        continue;
      while ((de = readdir (d)) != NULL)
        {
          char sub[PATH_MAX * 2];
          if (de->d_type != DT_DIR || de->d_name[0] == '.')
            continue;
          snprintf (sub, sizeof sub, "%s/%s", dir, de->d_name);
          if (root->version == 1 && strcmp (root->ctrl[i], "freezer") == 0)
            flint__cg_write (sub, "freezer.state", "THAWED");
          flint__cg_kill_procs (sub);
          for (int tries = 0; tries < 50; tries++)
            {
              if (rmdir (sub) == 0 || errno == ENOENT)
                {
                  cleaned++;
                  break;
                }
              usleep (2000);
            }
        }
      closedir (d);
    }
  return cleaned;
}

int
flint_cgroup_remove_parent (const flint_cgroup_root_t *root)
{
  int ret = 0;

  for (int i = 0; i < root->nmounts; i++)
    {
      char dir[PATH_MAX + 200];
      snprintf (dir, sizeof dir, "%s/%s", root->mounts[i], root->parent);
      if (rmdir (dir) < 0 && errno != ENOENT)
        ret = -errno;
    }
  return ret;
}
