/* The filesystem a worker sees. Built in the child after clone(CLONE_NEWNS), then pivot_root:
 *
 *   /            tmpfs, read-only after setup (only directories, symlinks and tiny /etc files)
 *   /usr         host /usr, read-only (with /bin, /lib, /lib64, /sbin as on the host)
 *   /etc         generated passwd, group, hosts, nsswitch.conf (resolv.conf for network endpoints);
 *                read-only binds of ld.so.cache, alternatives and ssl
 *   /bundle      the function's bundle, read-only
 *   /weights     the version's weights from the node weight store, read-only
 *   /.flint      flint-worker, read-only
 *   /tmp         private tmpfs, size-limited, the only writable place
 *   /proc        a fresh proc of the sandbox's pid namespace, /proc/sys read-only
 *   /dev         null, zero, full, random, urandom, tty; /dev/shm -> /tmp; GPU nodes on request
 *   /run/secrets the secrets the manifest lists (mode 0400)
 *
 * Nothing else of the host is visible: other bundles, the state directory, the weight store's
 * other objects, flintd's sockets. Everything is mounted nosuid, nodev where it can be. */
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
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define FAIL(what)                                                                            \
  do                                                                                          \
    {                                                                                         \
      *stage = (what);                                                                        \
      return -errno;                                                                          \
    }                                                                                         \
  while (0)

static int
bind_ro (const char *src, const char *dst, bool is_dir)
{
  if (is_dir)
    {
      if (mkdir (dst, 0755) < 0 && errno != EEXIST)
        return -1;
    }
  else
    {
      int fd = open (dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0444);
      if (fd < 0)
        return -1;
      close (fd);
    }
  if (mount (src, dst, NULL, MS_BIND | MS_REC, NULL) < 0)
    return -1;
  /* a bind mount takes its flags only on a remount */
  return mount (NULL, dst, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_REC, NULL);
}

static int
write_small (const char *path, const char *text, mode_t mode)
{
  _cleanup_close_ int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return -1;
  return flint_write_all (fd, text, strlen (text)) < 0 ? -1 : 0;
}

/* /bin, /lib, ...: symlinks on merged-/usr hosts (Debian 12), bind mounts otherwise. */
static int
top_level (const char *root, const char *name)
{
  char host[64], dst[PATH_MAX], target[PATH_MAX];
  struct stat st;
  ssize_t n;

  snprintf (host, sizeof host, "/%s", name);
  snprintf (dst, sizeof dst, "%s/%s", root, name);
  if (lstat (host, &st) < 0)
    return 0; /* not on this host (e.g. /lib64 elsewhere) */
  if (S_ISLNK (st.st_mode))
    {
      n = readlink (host, target, sizeof target - 1);
      if (n < 0)
        return -1;
      target[n] = '\0';
      return symlink (target, dst);
    }
  return bind_ro (host, dst, true);
}

int
flint__rootfs_build (const flint_sandbox_node_t *node, const flint_sandbox_spec_t *spec, const char **stage)
{
  const char *root = node->root_dir;
  char p[PATH_MAX], opts[128];
  static const char *const tops[] = { "bin", "lib", "lib32", "lib64", "libx32", "sbin" };
  static const char *const dirs[] = { "etc", "bundle", "tmp", "proc", "dev", "run", "run/secrets", ".flint" };

  /* our mounts must not leak back into the host (nor host mounts into us later) */
  if (mount (NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
    FAIL ("make / private");
  snprintf (opts, sizeof opts, "mode=0755,size=%u", 4u << 20);
  if (mount ("flint-root", root, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
    FAIL ("mount the root tmpfs");
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
    {
      snprintf (p, sizeof p, "%s/%s", root, dirs[i]);
      if (mkdir (p, 0755) < 0)
        FAIL ("create a root directory");
    }

  snprintf (p, sizeof p, "%s/usr", root);
  if (bind_ro ("/usr", p, true) < 0)
    FAIL ("bind /usr");
  FLINT_FAULT_HERE (node, "sandbox-mounts");
  for (size_t i = 0; i < sizeof tops / sizeof tops[0]; i++)
    if (top_level (root, tops[i]) < 0)
      FAIL ("bind a top-level directory");

  /* /etc: only what programs need to run; no host secrets (shadow, ssh, ...) */
  snprintf (p, sizeof p, "%s/etc/passwd", root);
  if (write_small (p, "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/tmp:/usr/sbin/nologin\n",
                   0644) < 0)
    FAIL ("write /etc/passwd");
  snprintf (p, sizeof p, "%s/etc/group", root);
  if (write_small (p, "root:x:0:\nnogroup:x:65534:\n", 0644) < 0)
    FAIL ("write /etc/group");
  snprintf (p, sizeof p, "%s/etc/hosts", root);
  if (write_small (p, "127.0.0.1 localhost\n::1 localhost\n", 0644) < 0)
    FAIL ("write /etc/hosts");
  snprintf (p, sizeof p, "%s/etc/nsswitch.conf", root);
  if (write_small (p, "passwd: files\ngroup: files\nhosts: files dns\n", 0644) < 0)
    FAIL ("write /etc/nsswitch.conf");
  snprintf (p, sizeof p, "%s/etc/ld.so.cache", root);
  if (access ("/etc/ld.so.cache", R_OK) == 0 && bind_ro ("/etc/ld.so.cache", p, false) < 0)
    FAIL ("bind /etc/ld.so.cache");
  snprintf (p, sizeof p, "%s/etc/alternatives", root);
  if (access ("/etc/alternatives", R_OK) == 0 && bind_ro ("/etc/alternatives", p, true) < 0)
    FAIL ("bind /etc/alternatives");
  snprintf (p, sizeof p, "%s/etc/ssl", root);
  if (access ("/etc/ssl", R_OK) == 0 && bind_ro ("/etc/ssl", p, true) < 0)
    FAIL ("bind /etc/ssl");
  if (spec->network)
    {
      /* slirp4netns answers DNS at 10.0.2.3 and forwards to the host's resolver */
      snprintf (p, sizeof p, "%s/etc/resolv.conf", root);
      if (write_small (p, "nameserver 10.0.2.3\n", 0644) < 0)
        FAIL ("write /etc/resolv.conf");
    }

  snprintf (p, sizeof p, "%s/bundle", root);
  if (bind_ro (spec->bundle_dir, p, true) < 0)
    FAIL ("bind the bundle");
  if (spec->weights_dir)
    {
      snprintf (p, sizeof p, "%s/weights", root);
      if (bind_ro (spec->weights_dir, p, true) < 0)
        FAIL ("bind the weights");
    }
  snprintf (p, sizeof p, "%s/.flint/worker", root);
  if (bind_ro (spec->argv[0], p, false) < 0)
    FAIL ("bind flint-worker");

  snprintf (p, sizeof p, "%s/tmp", root);
  snprintf (opts, sizeof opts, "mode=1777,size=%llu", (unsigned long long) (spec->tmp_bytes ? spec->tmp_bytes : 64u << 20));
  if (mount ("flint-tmp", p, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
    FAIL ("mount /tmp");

  snprintf (p, sizeof p, "%s/proc", root);
  if (mount ("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
    FAIL ("mount /proc");
  snprintf (p, sizeof p, "%s/proc/sys", root);
  if (mount (p, p, NULL, MS_BIND | MS_REC, NULL) < 0
      || mount (NULL, p, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
    FAIL ("make /proc/sys read-only");

  snprintf (p, sizeof p, "%s/dev", root);
  if (mount ("flint-dev", p, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") < 0)
    FAIL ("mount /dev");
  {
    static const struct { const char *name; unsigned maj, min; } devs[] = {
      { "null", 1, 3 }, { "zero", 1, 5 }, { "full", 1, 7 }, { "random", 1, 8 }, { "urandom", 1, 9 }, { "tty", 5, 0 },
    };
    for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++)
      {
        char host[64];
        snprintf (p, sizeof p, "%s/dev/%s", root, devs[i].name);
        snprintf (host, sizeof host, "/dev/%s", devs[i].name);
        if (mknod (p, S_IFCHR | 0666, makedev (devs[i].maj, devs[i].min)) < 0 && bind_ro (host, p, false) < 0)
          FAIL ("create a device node");
        chmod (p, 0666);
      }
    static const struct { const char *name, *target; } links[] = {
      { "fd", "/proc/self/fd" }, { "stdin", "/proc/self/fd/0" }, { "stdout", "/proc/self/fd/1" },
      { "stderr", "/proc/self/fd/2" }, { "shm", "/tmp" },
    };
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
      {
        snprintf (p, sizeof p, "%s/dev/%s", root, links[i].name);
        if (symlink (links[i].target, p) < 0)
          FAIL ("create a /dev symlink");
      }
  }
  if (spec->gpu)
    {
      static const char *const nv[] = { "nvidia0", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset" };
      for (size_t i = 0; i < sizeof nv / sizeof nv[0]; i++)
        {
          char host[64];
          snprintf (host, sizeof host, "/dev/%s", nv[i]);
          if (access (host, F_OK) < 0)
            continue;
          snprintf (p, sizeof p, "%s/dev/%s", root, nv[i]);
          {
            int fd = open (p, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
            if (fd < 0)
              FAIL ("create a GPU device node");
            close (fd);
          }
          if (mount (host, p, NULL, MS_BIND, NULL) < 0)
            FAIL ("bind a GPU device node");
        }
    }

  for (size_t i = 0; spec->file_names && spec->file_names[i]; i++)
    {
      _cleanup_close_ int fd = -1;
      snprintf (p, sizeof p, "%s/run/secrets/%s", root, spec->file_names[i]);
      fd = open (p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
      if (fd < 0 || flint_write_all (fd, spec->file_data[i], spec->file_lens[i]) < 0
          || fchown (fd, node->opts.uid, node->opts.gid) < 0)
        FAIL ("write a secret file");
    }

  /* switch roots and forget the host's */
  snprintf (p, sizeof p, "%s/.old", root);
  if (mkdir (p, 0700) < 0)
    FAIL ("create the old-root directory");
  if (syscall (SYS_pivot_root, root, p) < 0)
    FAIL ("pivot_root");
  if (chdir ("/") < 0)
    FAIL ("chdir /");
  if (umount2 ("/.old", MNT_DETACH) < 0)
    FAIL ("detach the host root");
  if (rmdir ("/.old") < 0)
    FAIL ("remove the old-root directory");
  if (mount (NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
    FAIL ("make the root read-only");
  return 0;
}
