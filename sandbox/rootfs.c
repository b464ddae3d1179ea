/* The filesystem a worker sees, and the table that describes it.
 *
 *   /            a read-only bind of a prepared skeleton directory (RUN/sandbox/skel-*): mount
 *                points, the /bin -> usr/bin links of a merged-/usr host, /dev links, and the
 *                generated /etc files (passwd, group, hosts, nsswitch.conf, resolv.conf)
 *   /usr         host /usr, read-only
 *   /etc/...     read-only binds of ld.so.cache, alternatives and ssl
 *   /bundle      the function's bundle, read-only
 *   /weights     the version's weights from the node weight store, read-only
 *   /.flint      flint-worker, read-only
 *   /dev/...     binds of null, zero, full, random, urandom, tty; GPU nodes on request
 *   /tmp         private tmpfs, size-limited: the only writable place
 *   /proc        a fresh proc of the sandbox's pid namespace
 *
 * Nothing else of the host is visible. The shape is what CRIU can checkpoint and restore cheaply
 * (docs/SNAPSHOTS.md): the root is a host directory CRIU restores from (`root`), every bind is
 * declared external under a stable key, and /tmp is an external tmpfs so no tmpfs content has to
 * be archived. The same table (flint_sandbox_mount_table) drives the sandbox and the snapshotter.
 *
 * Bind sources are opened (O_PATH) by the spawner before clone and mounted from /proc/self/fd:
 * the child runs in a user namespace whose ids cannot traverse flintd's root-only directories. */
#include "sandbox_internal.h"
#include "flint/cleanup.h"
#include "flint/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *const dev_nodes[] = { "null", "zero", "full", "random", "urandom", "tty" };
static const char *const gpu_nodes[] = { "nvidia0", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset" };
static const char *const etc_binds[][2] = {
  { "/etc/ld.so.cache", "etc-ld-so-cache" },
  { "/etc/alternatives", "etc-alternatives" },
  { "/etc/ssl", "etc-ssl" },
};

static void
add (flint_mount_t *out, size_t max, size_t *n, flint_mount_kind_t kind, const char *inside, const char *key,
     const char *host)
{
  flint_mount_t *m;
  if (*n >= max)
    return;
  m = &out[(*n)++];
  memset (m, 0, sizeof *m);
  m->kind = kind;
  snprintf (m->inside, sizeof m->inside, "%s", inside);
  snprintf (m->key, sizeof m->key, "%s", key);
  snprintf (m->host, sizeof m->host, "%s", host ? host : "");
}

size_t
flint_sandbox_mount_table (const flint_sandbox_node_t *node, const flint_sandbox_spec_t *spec, flint_mount_t *out,
                           size_t max)
{
  size_t n = 0;
  char inside[64], key[48], host[64];
  struct stat st;

  add (out, max, &n, FLINT_MNT_BIND_RO, "/usr", "usr", "/usr");
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (node->top_dirs) && node->top_dirs[i][0]; i++)
    {
      snprintf (inside, sizeof inside, "/%s", node->top_dirs[i]);
      snprintf (key, sizeof key, "top-%s", node->top_dirs[i]);
      add (out, max, &n, FLINT_MNT_BIND_RO, inside, key, inside);
    }
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (etc_binds); i++)
    if (lstat (etc_binds[i][0], &st) == 0)
      add (out, max, &n, FLINT_MNT_BIND_RO, etc_binds[i][0], etc_binds[i][1], etc_binds[i][0]);
  add (out, max, &n, FLINT_MNT_BIND_RO, FLINT_SANDBOX_BUNDLE, "bundle", spec->bundle_dir);
  if (spec->weights_dir)
    add (out, max, &n, FLINT_MNT_BIND_RO, FLINT_SANDBOX_WEIGHTS, "weights", spec->weights_dir);
  add (out, max, &n, FLINT_MNT_BIND_RO, FLINT_SANDBOX_WORKER, "worker", spec->argv[0]);
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (dev_nodes); i++)
    {
      snprintf (inside, sizeof inside, "/dev/%s", dev_nodes[i]);
      snprintf (key, sizeof key, "dev-%s", dev_nodes[i]);
      add (out, max, &n, FLINT_MNT_BIND_DEV, inside, key, inside);
    }
  if (spec->gpu)
    for (size_t i = 0; i < FLINT_ARRAY_SIZE (gpu_nodes); i++)
      {
        snprintf (host, sizeof host, "/dev/%s", gpu_nodes[i]);
        if (access (host, F_OK) < 0)
          continue;
        snprintf (key, sizeof key, "dev-%s", gpu_nodes[i]);
        add (out, max, &n, FLINT_MNT_BIND_DEV, host, key, host);
      }
  add (out, max, &n, FLINT_MNT_TMPFS, "/tmp", "tmp", NULL);
  snprintf (out[n - 1].opts, sizeof out[n - 1].opts, "mode=1777,size=%llu",
            (unsigned long long) (spec->tmp_bytes ? spec->tmp_bytes : 64u << 20));
  add (out, max, &n, FLINT_MNT_PROC, "/proc", "proc", NULL);
  return n;
}

/* ---- skeletons ------------------------------------------------------------------------- */

static int
write_small (const char *path, const char *text)
{
  _cleanup_close_ int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return -errno;
  return flint_write_all (fd, text, strlen (text));
}

static int
touch (const char *path)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return -errno;
  close (fd);
  return 0;
}

/* Builds (once per variant) the directory every sandbox's root is a read-only bind of. */
int
flint__rootfs_skeleton (flint_sandbox_node_t *node, bool network, bool gpu, char *path_out, size_t len,
                        flint_error_t *err)
{
  static const char *const dirs[] = { "usr", "bundle", "weights", "tmp", "proc", "dev", "etc", "run", ".flint" };
  static const struct { const char *name, *target; } dev_links[] = {
    { "fd", "/proc/self/fd" }, { "stdin", "/proc/self/fd/0" }, { "stdout", "/proc/self/fd/1" },
    { "stderr", "/proc/self/fd/2" }, { "shm", "/tmp" },
  };
  char root[PATH_MAX], tmp[PATH_MAX], p[PATH_MAX + 64], target[PATH_MAX];
  flint_mount_t table[64];
  flint_sandbox_spec_t probe = { .argv = (char *const[]) { (char *) "/", NULL }, .gpu = gpu, .weights_dir = "/" };
  size_t n;
  int r = 0;

  snprintf (root, sizeof root, "%s/skel-%s%s", node->run_dir, network ? "net" : "nonet", gpu ? "-gpu" : "");
  snprintf (path_out, len, "%s", root);
  if (access (root, F_OK) == 0)
    return 0;
  /* built aside and renamed into place: a half-built skeleton is never used */
  snprintf (tmp, sizeof tmp, "%s.tmp-%d", root, (int) getpid ());
  flint_rm_rf (tmp);
  if (mkdir (tmp, 0755) < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "create `%s`", tmp);
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (dirs) && r == 0; i++)
    {
      snprintf (p, sizeof p, "%s/%s", tmp, dirs[i]);
      r = mkdir (p, 0755) < 0 ? -errno : 0;
    }
  /* /bin, /lib, ...: the same links as the host's merged /usr */
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (node->top_links) && node->top_links[i][0] && r == 0; i++)
    {
      ssize_t k;
      snprintf (p, sizeof p, "/%s", node->top_links[i]);
      k = readlink (p, target, sizeof target - 1);
      if (k < 0)
        r = -errno;
      else
        {
          target[k] = '\0';
          snprintf (p, sizeof p, "%s/%s", tmp, node->top_links[i]);
          r = symlink (target, p) < 0 ? -errno : 0;
        }
    }
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (node->top_dirs) && node->top_dirs[i][0] && r == 0; i++)
    {
      snprintf (p, sizeof p, "%s/%s", tmp, node->top_dirs[i]);
      r = mkdir (p, 0755) < 0 ? -errno : 0;
    }
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (dev_links) && r == 0; i++)
    {
      snprintf (p, sizeof p, "%s/dev/%s", tmp, dev_links[i].name);
      r = symlink (dev_links[i].target, p) < 0 ? -errno : 0;
    }
  /* /etc: only what programs need; no host secrets (shadow, ssh keys, ...) */
  if (r == 0)
    {
      snprintf (p, sizeof p, "%s/etc/passwd", tmp);
      r = write_small (p, "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/tmp:/usr/sbin/nologin\n");
    }
  if (r == 0)
    {
      snprintf (p, sizeof p, "%s/etc/group", tmp);
      r = write_small (p, "root:x:0:\nnogroup:x:65534:\n");
    }
  if (r == 0)
    {
      snprintf (p, sizeof p, "%s/etc/hosts", tmp);
      r = write_small (p, "127.0.0.1 localhost\n::1 localhost\n");
    }
  if (r == 0)
    {
      snprintf (p, sizeof p, "%s/etc/nsswitch.conf", tmp);
      r = write_small (p, "passwd: files\ngroup: files\nhosts: files dns\n");
    }
  if (r == 0 && network)
    {
      /* slirp4netns answers DNS at 10.0.2.3 and forwards to the host's resolver */
      snprintf (p, sizeof p, "%s/etc/resolv.conf", tmp);
      r = write_small (p, "nameserver 10.0.2.3\n");
    }
  /* mount points of the binds: directories for directories, empty files for files */
  n = flint_sandbox_mount_table (node, &probe, table, FLINT_ARRAY_SIZE (table));
  for (size_t i = 0; i < n && r == 0; i++)
    {
      struct stat st;
      snprintf (p, sizeof p, "%s%s", tmp, table[i].inside);
      if (access (p, F_OK) == 0 || table[i].kind == FLINT_MNT_TMPFS || table[i].kind == FLINT_MNT_PROC)
        continue;
      if (table[i].kind != FLINT_MNT_BIND_DEV && strcmp (table[i].key, "worker") != 0
          && stat (table[i].host, &st) == 0 && S_ISDIR (st.st_mode))
        r = mkdir (p, 0755) < 0 ? -errno : 0;
      else
        r = touch (p);
    }
  if (r == 0 && rename (tmp, root) < 0 && errno != EEXIST && errno != ENOTEMPTY)
    r = -errno;
  if (r < 0)
    {
      flint_rm_rf (tmp);
      return flint_error_set_errno (err, FLINT_EINTERNAL, r, "build the sandbox skeleton `%s`", root);
    }
  flint_rm_rf (tmp);
  return 0;
}

/* ---- in the child ---------------------------------------------------------------------- */

#define FAIL(what)                                                                            \
  do                                                                                          \
    {                                                                                         \
      *stage = (what);                                                                        \
      return -errno;                                                                          \
    }                                                                                         \
  while (0)

/* A read-only remount of a bind must keep the flags the source mount has locked (a user
 * namespace cannot clear nosuid, nodev, noexec or atime flags it inherited). */
static int
remount_ro (const char *dst)
{
  struct statvfs sv;
  unsigned long fl = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV;

  if (statvfs (dst, &sv) < 0)
    return -1;
  if (sv.f_flag & ST_NOEXEC)
    fl |= MS_NOEXEC;
  if (sv.f_flag & ST_NOATIME)
    fl |= MS_NOATIME;
  if (sv.f_flag & ST_NODIRATIME)
    fl |= MS_NODIRATIME;
  if (sv.f_flag & ST_RELATIME)
    fl |= MS_RELATIME;
  return mount (NULL, dst, NULL, fl, NULL);
}

int
flint__rootfs_build (const flint_sandbox_node_t *node, const flint_sandbox_spec_t *spec, const flint_mount_t *table,
                     const int *fds, size_t n, int skel_fd, const char **stage)
{
  char src[64], dst[PATH_MAX];
  const char *base = "/tmp"; /* in our private mount namespace: a scratch tmpfs to build on */
  const char *r = "/tmp/r";

  (void) spec;
  if (mount (NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
    FAIL ("make / private");
  if (mount ("flint-scratch", base, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0700") < 0)
    FAIL ("mount the scratch tmpfs");
  if (mkdir (r, 0755) < 0)
    FAIL ("create the new root's mount point");
  snprintf (src, sizeof src, "/proc/self/fd/%d", skel_fd);
  if (mount (src, r, NULL, MS_BIND, NULL) < 0 || remount_ro (r) < 0)
    FAIL ("bind the root skeleton");
  for (size_t i = 0; i < n; i++)
    {
      const flint_mount_t *m = &table[i];
      snprintf (dst, sizeof dst, "%s%s", r, m->inside);
      switch (m->kind)
        {
        case FLINT_MNT_BIND_RO:
        case FLINT_MNT_BIND_DEV:
          snprintf (src, sizeof src, "/proc/self/fd/%d", fds[i]);
          if (mount (src, dst, NULL, MS_BIND | MS_REC, NULL) < 0)
            FAIL ("bind mount");
          if (m->kind == FLINT_MNT_BIND_RO && remount_ro (dst) < 0)
            FAIL ("make a bind read-only");
          if (strcmp (m->key, "usr") == 0)
            FLINT_FAULT_HERE (node, "sandbox-mounts");
          break;
        case FLINT_MNT_TMPFS:
          if (mount ("flint-tmp", dst, "tmpfs", MS_NOSUID | MS_NODEV, m->opts) < 0)
            FAIL ("mount /tmp");
          break;
        case FLINT_MNT_PROC:
          if (mount ("proc", dst, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
            FAIL ("mount /proc");
          break;
        }
    }
  /* switch roots: the old one is stacked under the new and detached */
  if (chdir (r) < 0)
    FAIL ("chdir to the new root");
  if (syscall (SYS_pivot_root, ".", ".") < 0)
    FAIL ("pivot_root");
  if (umount2 (".", MNT_DETACH) < 0)
    FAIL ("detach the host root");
  if (chdir ("/") < 0)
    FAIL ("chdir /");
  return 0;
}
