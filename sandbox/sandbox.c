/* Sandbox creation, death explanation and clean-up.
 *
 * Isolated spawn, step by step (parent = the single-threaded spawner, child = the future worker):
 *
 *   parent: create the cgroup with its limits
 *   parent: clone(NEWPID | NEWNS | NEWIPC | NEWUTS | NEWNET) ───────▶ child (pid 1 of its ns)
 *   parent: move the child into the cgroup, then release it ───────▶ child: unshare(NEWCGROUP)
 *                                                                    (so its cgroup is its root)
 *                                                         child: setsid, death signal, lo up,
 *                                                                hostname, rootfs + pivot_root,
 *                                                                rlimits, drop caps and ids,
 *                                                                no_new_privs, seccomp, execve
 *   parent: reads the child's report pipe (close-on-exec) until EOF: per-phase timings, or the
 *           step that failed with its errno.
 *
 * The child never returns into the spawner: it reports and _exits on any failure. A child killed
 * in the middle leaves nothing: its mounts live in its own mount namespace, its processes in its
 * pid namespace, and the parent removes the cgroup when it reaps it. */
#include "sandbox_internal.h"
#include "flint/cleanup.h"
#include "flint/util.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* What the child reports through its pipe before exec (or instead of it). */
typedef struct child_report_s {
  int failed;        /* 1: `err` at `stage`; 0: timings */
  int err;
  char stage[96];
  double mounts_ms;
  double seccomp_ms;
  uint64_t exec_start_ns;
} child_report_t;

/* ---- node ------------------------------------------------------------------------------ */

int
flint_sandbox_node_new (const flint_sandbox_options_t *opts, flint_sandbox_node_t **out, flint_error_t *err)
{
  flint_sandbox_node_t *node = calloc (1, sizeof *node);
  int r;

  if (node == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  node->opts = *opts;
  if (!opts->isolate)
    {
      snprintf (node->describe, sizeof node->describe, "no isolation (development mode)");
      *out = node;
      return 0;
    }
  if (geteuid () != 0)
    {
      free (node);
      return flint_error_set (err, FLINT_EPERM, "sandboxes need root (or run flintd with --no-sandbox to develop)");
    }
  snprintf (node->run_dir, sizeof node->run_dir, "%s", opts->run_dir);
  snprintf (node->root_dir, sizeof node->root_dir, "%s/root", opts->run_dir);
  r = flint_mkdir_p (node->root_dir, 0700);
  if (r < 0)
    {
      free (node);
      return flint_error_set_errno (err, FLINT_EINTERNAL, r, "create `%s`", node->root_dir);
    }
  if (flint_cgroup_probe (opts->cgroup_parent, &node->cg, err) < 0 || flint__seccomp_compile (node, err) < 0)
    {
      flint_sandbox_node_free (node);
      return -1;
    }
  node->have_nvidia = access ("/dev/nvidiactl", F_OK) == 0;
  {
    static const char *const tops[] = { "bin", "sbin", "lib", "lib32", "lib64", "libx32" };
    size_t nl = 0, nd = 0;
    for (size_t i = 0; i < FLINT_ARRAY_SIZE (tops); i++)
      {
        char p[32];
        struct stat st;
        snprintf (p, sizeof p, "/%s", tops[i]);
        if (lstat (p, &st) < 0)
          continue;
        if (S_ISLNK (st.st_mode))
          snprintf (node->top_links[nl++], sizeof node->top_links[0], "%s", tops[i]);
        else if (S_ISDIR (st.st_mode))
          snprintf (node->top_dirs[nd++], sizeof node->top_dirs[0], "%s", tops[i]);
      }
  }
  if (opts->userns)
    snprintf (node->idmap, sizeof node->idmap, "0 %u 65536", (unsigned) opts->uid_base);
  {
    char skel[PATH_MAX];
    if (flint__rootfs_skeleton (node, false, false, skel, sizeof skel, err) < 0)
      {
        flint_sandbox_node_free (node);
        return -1;
      }
  }
  if (getenv ("FLINT_FAULT"))
    snprintf (node->fault, sizeof node->fault, "%s", getenv ("FLINT_FAULT"));
  snprintf (node->describe, sizeof node->describe,
            "namespaces %spid+mnt+ipc+uts+net+cgroup, cgroup %s (%s), seccomp %u+%u instructions, uid %u%s%s%s",
            opts->userns ? "user+" : "", node->cg.ops->name, node->cg.parent, node->seccomp_standard.len,
            node->seccomp_gpu.len, (unsigned) opts->uid, opts->userns ? " (user ns map " : "", node->idmap,
            node->have_nvidia ? "), GPU device nodes present" : opts->userns ? ")" : "");
  *out = node;
  return 0;
}

void
flint_sandbox_node_free (flint_sandbox_node_t *node)
{
  if (node == NULL)
    return;
  free (node->seccomp_standard.filter);
  free (node->seccomp_gpu.filter);
  free (node);
}

const char *
flint_sandbox_node_describe (const flint_sandbox_node_t *node)
{
  return node->describe;
}

int
flint_sandbox_skeleton (flint_sandbox_node_t *node, bool network, bool gpu, char *path_out, size_t len,
                        flint_error_t *err)
{
  return flint__rootfs_skeleton (node, network, gpu, path_out, len, err);
}

const char *
flint_sandbox_idmap (const flint_sandbox_node_t *node)
{
  return node->idmap;
}

void
flint_sandbox_node_remove_parent (flint_sandbox_node_t *node)
{
  if (node->opts.isolate)
    flint_cgroup_remove_parent (&node->cg);
}

int
flint_sandbox_node_cleanup_stale (flint_sandbox_node_t *node)
{
  if (!node->opts.isolate)
    return 0;
  return flint_cgroup_cleanup_stale (&node->cg);
}

/* ---- the child --------------------------------------------------------------------------- */

static void __attribute__((noreturn))
child_fail (int report_fd, const char *stage, int errnum)
{
  child_report_t rep = { .failed = 1, .err = errnum };
  snprintf (rep.stage, sizeof rep.stage, "%s", stage);
  (void) !write (report_fd, &rep, sizeof rep);
  _exit (127);
}

/* Puts the worker's fds at 3 (channel), 1 and 2. The sources may themselves sit on 1..3, so
 * they are first moved above the targets, then placed. */
static int
install_fds (const flint_sandbox_spec_t *spec, int channel)
{
  int ch = fcntl (channel, F_DUPFD_CLOEXEC, 10);
  int out = fcntl (spec->stdout_fd, F_DUPFD_CLOEXEC, 10);
  int err = fcntl (spec->stderr_fd, F_DUPFD_CLOEXEC, 10);

  if (ch < 0 || out < 0 || err < 0)
    return -1;
  if (dup2 (ch, 3) < 0 || dup2 (out, 1) < 0 || dup2 (err, 2) < 0)
    return -1;
  close (ch);
  close (out);
  close (err);
  return 0;
}

static int
loopback_up (void)
{
  struct ifreq ifr;
  int fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int r = -1;

  if (fd < 0)
    return -1;
  memset (&ifr, 0, sizeof ifr);
  snprintf (ifr.ifr_name, sizeof ifr.ifr_name, "lo");
  if (ioctl (fd, SIOCGIFFLAGS, &ifr) == 0)
    {
      ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
      r = ioctl (fd, SIOCSIFFLAGS, &ifr);
    }
  close (fd);
  return r;
}

static int
drop_privileges (const flint_sandbox_node_t *node)
{
  /* the bounding set first (needs CAP_SETPCAP, gone after setuid) */
  for (int cap = 0; cap <= 63; cap++)
    if (prctl (PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
      return -1;
  prctl (PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  /* in a user namespace setgroups is denied (and the group list is already empty) */
  if (!node->opts.userns && setgroups (0, NULL) < 0)
    return -1;
  if (setresgid (node->opts.gid, node->opts.gid, node->opts.gid) < 0)
    return -1;
  /* leaving uid 0 without SECBIT_KEEP_CAPS clears the permitted and effective sets */
  if (setresuid (node->opts.uid, node->opts.uid, node->opts.uid) < 0)
    return -1;
  {
    struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    memset (data, 0, sizeof data);
    if (syscall (SYS_capset, &hdr, data) < 0)
      return -1;
  }
  return prctl (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

/* Makes the worker's channel inside the sandbox's network namespace and sends one end to the
 * spawner over the bootstrap socket. Returns the worker's end. */
static int
make_channel (int boot)
{
  int sp[2];
  union {
    char buf[CMSG_SPACE (sizeof (int))];
    struct cmsghdr align;
  } cbuf;
  char byte = 'c';
  struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
  struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf, .msg_controllen = sizeof cbuf.buf };
  struct cmsghdr *cm;

  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
    return -1;
  memset (&cbuf, 0, sizeof cbuf);
  cm = CMSG_FIRSTHDR (&mh);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN (sizeof (int));
  memcpy (CMSG_DATA (cm), &sp[0], sizeof (int));
  if (sendmsg (boot, &mh, MSG_NOSIGNAL) != 1)
    return -1;
  close (sp[0]);
  return sp[1];
}

static void __attribute__((noreturn))
child_main (const flint_sandbox_node_t *node, const flint_sandbox_spec_t *spec, int boot, int report_fd,
            const flint_mount_t *table, size_t nmounts, const char *skel)
{
  int fds[48];
  int skel_fd;
  child_report_t rep = { 0 };
  const char *stage = "";
  char go;
  uint64_t t0;
  int r, channel;
  char *worker_argv[8];
  int keep[1];

  /* die with the spawner; the "go" byte (sent once the cgroup and the id maps are set up)
   * proves it is still there, since getppid() is 0 across a new pid namespace */
  if (prctl (PR_SET_PDEATHSIG, SIGKILL) < 0)
    _exit (127);
  if (read (boot, &go, 1) != 1)
    _exit (127);
  if (report_fd <= 3)
    report_fd = fcntl (report_fd, F_DUPFD_CLOEXEC, 10);
  keep[0] = report_fd;
  /* Open the bind sources now, while our credentials are still the spawner's (host uid 0, so
   * flintd's root-only directories are traversable) and in our own mount namespace (a bind's
   * source must belong to the namespace that mounts it). */
  skel_fd = open (skel, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (skel_fd < 0)
    child_fail (report_fd, "open the root skeleton", errno);
  for (size_t i = 0; i < nmounts; i++)
    if (table[i].kind == FLINT_MNT_BIND_RO || table[i].kind == FLINT_MNT_BIND_DEV)
      {
        fds[i] = open (table[i].host, O_PATH | O_CLOEXEC);
        if (fds[i] < 0)
          child_fail (report_fd, table[i].inside, errno);
      }
  /* become the user namespace's root (still host uid 0 until now, which the map does not cover:
   * files we created would fail with EOVERFLOW) */
  if (node->opts.userns && (setresgid (0, 0, 0) < 0 || setresuid (0, 0, 0) < 0))
    child_fail (report_fd, "become root of the user namespace", errno);
  channel = make_channel (boot);
  if (channel < 0)
    child_fail (report_fd, "create the worker's channel", errno);
  close (boot);
  if (unshare (CLONE_NEWCGROUP) < 0)
    child_fail (report_fd, "unshare the cgroup namespace", errno);
  if (setsid () < 0)
    child_fail (report_fd, "setsid", errno);
  if (loopback_up () < 0)
    child_fail (report_fd, "bring up the loopback interface", errno);
  if (sethostname (spec->hostname, strlen (spec->hostname)) < 0)
    child_fail (report_fd, "sethostname", errno);
  if (install_fds (spec, channel) < 0)
    child_fail (report_fd, "set up the worker's fds", errno);
  close (channel);

  t0 = flint_now_ns ();
  r = flint__rootfs_build (node, spec, table, fds, nmounts, skel_fd, &stage);
  if (r < 0)
    child_fail (report_fd, stage, -r);
  {
    int devnull = open ("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0 || dup2 (devnull, 0) < 0)
      child_fail (report_fd, "open /dev/null", errno);
    if (devnull != 0)
      close (devnull);
  }
  rep.mounts_ms = (double) (flint_now_ns () - t0) / 1e6;

  t0 = flint_now_ns ();
  {
    struct rlimit nofile = { spec->nofile ? spec->nofile : 1024, spec->nofile ? spec->nofile : 1024 };
    struct rlimit core = { 0, 0 };
    if (setrlimit (RLIMIT_NOFILE, &nofile) < 0 || setrlimit (RLIMIT_CORE, &core) < 0)
      child_fail (report_fd, "set rlimits", errno);
  }
  if (chdir ("/tmp") < 0)
    child_fail (report_fd, "chdir /tmp", errno);
  if (drop_privileges (node) < 0)
    child_fail (report_fd, "drop privileges", errno);
  {
    sigset_t none;
    sigemptyset (&none);
    sigprocmask (SIG_SETMASK, &none, NULL);
  }
  flint_close_fds_except (4, keep, 1);
  {
    const struct sock_fprog *prog = spec->gpu ? &node->seccomp_gpu : &node->seccomp_standard;
    if (prctl (PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog, 0, 0) < 0)
      child_fail (report_fd, "load the seccomp filter", errno);
  }
  rep.seccomp_ms = (double) (flint_now_ns () - t0) / 1e6;
  rep.exec_start_ns = flint_now_ns ();
  (void) !write (report_fd, &rep, sizeof rep);
  FLINT_FAULT_HERE (node, "sandbox-exec");

  worker_argv[0] = (char *) FLINT_SANDBOX_WORKER;
  worker_argv[1] = NULL;
  for (int i = 1; i < 7 && spec->argv[i]; i++)
    worker_argv[i] = spec->argv[i], worker_argv[i + 1] = NULL;
  execve (FLINT_SANDBOX_WORKER, worker_argv, spec->env);
  child_fail (report_fd, "execve flint-worker", errno);
}

/* ---- plain (development) spawn ----------------------------------------------------------- */

static void __attribute__((noreturn))
plain_child (const flint_sandbox_spec_t *spec, int boot, int report_fd)
{
  int keep[2], channel;
  char go;

  prctl (PR_SET_PDEATHSIG, SIGKILL);
  setsid ();
  if (read (boot, &go, 1) != 1)
    _exit (127);
  if (report_fd <= 3)
    report_fd = fcntl (report_fd, F_DUPFD_CLOEXEC, 10);
  keep[0] = 3;
  keep[1] = report_fd;
  channel = make_channel (boot);
  if (channel < 0 || install_fds (spec, channel) < 0)
    child_fail (report_fd, "set up the worker's fds", errno);
  close (channel);
  close (boot);
  {
    int devnull = open ("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0 || dup2 (devnull, 0) < 0)
      child_fail (report_fd, "open /dev/null", errno);
  }
  flint_close_fds_except (4, keep, 2);
  if (chdir (spec->bundle_dir) < 0)
    child_fail (report_fd, "chdir to the bundle", errno);
  if (spec->nofile)
    {
      struct rlimit rl = { spec->nofile, spec->nofile };
      setrlimit (RLIMIT_NOFILE, &rl);
    }
  {
    sigset_t none;
    sigemptyset (&none);
    sigprocmask (SIG_SETMASK, &none, NULL);
  }
  execve (spec->argv[0], spec->argv, spec->env);
  child_fail (report_fd, "execve", errno);
}

/* ---- outbound network ------------------------------------------------------------------------ */

/* `network: true`: the sandbox still gets its own network namespace, and slirp4netns (user-mode
 * NAT, the mechanism of rootless containers) gives it a tap device with outbound access. The
 * host's loopback, and with it flintd's ports, stays out of reach (--disable-host-loopback).
 * slirp4netns runs in its own sandbox (--enable-sandbox, --enable-seccomp) and exits when
 * `*exit_fd_out` is closed. */
static int
start_slirp (pid_t target, int *exit_fd_out, flint_error_t *err)
{
  int ready[2], exitp[2];
  pid_t pid;
  char c = 0;
  struct pollfd pfd;

  if (access ("/usr/bin/slirp4netns", X_OK) < 0)
    return flint_error_set (err, FLINT_EPRECONDITION,
                            "`network: true` needs slirp4netns (apt-get install slirp4netns)");
  if (pipe2 (ready, O_CLOEXEC) < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "pipe");
  if (pipe2 (exitp, O_CLOEXEC) < 0)
    {
      close (ready[0]), close (ready[1]);
      return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "pipe");
    }
  pid = fork ();
  if (pid == 0)
    {
      char tpid[16], rfd[32], efd[32];
      int keep[2] = { 3, 4 };
      if (dup2 (ready[1], 3) < 0 || dup2 (exitp[0], 4) < 0)
        _exit (127);
      flint_close_fds_except (5, keep, 2);
      setsid ();
      prctl (PR_SET_PDEATHSIG, SIGKILL);
      snprintf (tpid, sizeof tpid, "%d", (int) target);
      snprintf (rfd, sizeof rfd, "--ready-fd=3");
      snprintf (efd, sizeof efd, "--exit-fd=4");
      execl ("/usr/bin/slirp4netns", "slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
             "--enable-sandbox", "--enable-seccomp", rfd, efd, tpid, "tap0", (char *) NULL);
      _exit (127);
    }
  close (ready[1]);
  close (exitp[0]);
  if (pid < 0)
    {
      close (ready[0]), close (exitp[1]);
      return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "fork slirp4netns");
    }
  pfd.fd = ready[0];
  pfd.events = POLLIN;
  if (poll (&pfd, 1, 5000) <= 0 || read (ready[0], &c, 1) != 1 || c != '1')
    {
      close (ready[0]);
      close (exitp[1]); /* makes it exit, if it runs */
      kill (pid, SIGKILL);
      return flint_error_set (err, FLINT_EINTERNAL, "slirp4netns did not configure the sandbox's network");
    }
  close (ready[0]);
  *exit_fd_out = exitp[1];
  return 0;
}

/* ---- spawn ------------------------------------------------------------------------------- */

/* Reads the child's reports until EOF (exec happened or it died). Returns 0, or -1 with `err`. */
static int
collect_reports (int fd, const char *id, bool isolated, child_report_t *timing, flint_error_t *err)
{
  child_report_t rep;
  ssize_t n;
  int got_timing = 0;

  for (;;)
    {
      n = flint_read_all (fd, &rep, sizeof rep);
      if (n == 0)
        break;
      if (n != (ssize_t) sizeof rep)
        return flint_error_set (err, FLINT_EINTERNAL, "sandbox `%s`: the child died during setup", id);
      if (rep.failed)
        return flint_error_set_errno (err, FLINT_EINTERNAL, rep.err, "sandbox `%s`: %s", id, rep.stage);
      *timing = rep;
      got_timing = 1;
    }
  /* an isolated child reports its timings just before execve; a plain one reports only errors */
  if (!got_timing && isolated)
    return flint_error_set (err, FLINT_EINTERNAL, "sandbox `%s`: the child died during setup", id);
  return 0;
}

/* Receives the parent's end of the worker's channel from the child (make_channel). */
static int
recv_channel (int boot)
{
  union {
    char buf[CMSG_SPACE (sizeof (int))];
    struct cmsghdr align;
  } cbuf;
  char byte;
  struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
  struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf, .msg_controllen = sizeof cbuf.buf };
  struct cmsghdr *cm;
  int fd;
  ssize_t n;

  do
    n = recvmsg (boot, &mh, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n != 1)
    return n == 0 ? -EPIPE : -errno;
  cm = CMSG_FIRSTHDR (&mh);
  if (cm == NULL || cm->cmsg_type != SCM_RIGHTS)
    return -EPROTO;
  memcpy (&fd, CMSG_DATA (cm), sizeof fd);
  return fd;
}

static int
write_proc (pid_t pid, const char *file, const char *value)
{
  char path[64];
  _cleanup_close_ int fd = -1;
  snprintf (path, sizeof path, "/proc/%d/%s", (int) pid, file);
  fd = open (path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  return flint_write_all (fd, value, strlen (value));
}

int
flint_sandbox_spawn (flint_sandbox_node_t *node, const flint_sandbox_spec_t *spec, flint_sandbox_t **out,
                     int *channel_out, flint_sandbox_timings_t *timings, flint_error_t *err)
{
  uint64_t t_start = flint_now_ns (), t;
  int report[2] = { -1, -1 }, boot[2] = { -1, -1 };
  child_report_t rep = { 0 };
  flint_sandbox_t *sb;
  flint_sandbox_timings_t tm = { 0 };
  flint_mount_t table[48];
  size_t nmounts = 0;
  char skel[PATH_MAX] = "";
  int channel = -1;
  pid_t pid;
  int r;

  if (spec->gpu && node->opts.isolate && !node->have_nvidia)
    return flint_error_set (err, FLINT_EPRECONDITION, "sandbox `%s`: the manifest asks for a GPU and this node has none",
                            spec->id);
  sb = calloc (1, sizeof *sb);
  if (sb == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  snprintf (sb->id, sizeof sb->id, "%s", spec->id);
  sb->isolated = node->opts.isolate;
  sb->memory_limit = spec->memory_bytes;
  sb->pids_limit = spec->pids_max;
  sb->pid = -1;
  sb->slirp_exit_fd = -1;

  if (pipe2 (report, O_CLOEXEC) < 0 || socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, boot) < 0)
    {
      r = flint_error_set_errno (err, FLINT_EINTERNAL, errno, "sandbox `%s`: pipe", spec->id);
      goto fail;
    }
  if (sb->isolated)
    {
      flint_cgroup_limits_t lim = { spec->memory_bytes, spec->cpu_millis, spec->pids_max };

      if (flint__rootfs_skeleton (node, spec->network, spec->gpu, skel, sizeof skel, err) < 0)
        {
          r = -1;
          goto fail;
        }
      nmounts = flint_sandbox_mount_table (node, spec, table, FLINT_ARRAY_SIZE (table));
      t = flint_now_ns ();
      sb->cg_ops = node->cg.ops;
      if (sb->cg_ops->create (&node->cg, spec->id, &lim, &sb->cg, err) < 0)
        {
          sb->cg_ops = NULL;
          r = -1;
          goto fail;
        }
      tm.cgroup_ms = (double) (flint_now_ns () - t) / 1e6;
      t = flint_now_ns ();
      pid = (pid_t) syscall (SYS_clone,
                             CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET
                                 | (node->opts.userns ? CLONE_NEWUSER : 0) | SIGCHLD,
                             NULL, NULL, NULL, NULL);
    }
  else
    {
      t = flint_now_ns ();
      pid = fork ();
    }
  if (pid < 0)
    {
      r = flint_error_set_errno (err, FLINT_EINTERNAL, errno, "sandbox `%s`: clone", spec->id);
      goto fail;
    }
  if (pid == 0)
    {
      close (report[0]);
      close (boot[0]);
      if (sb->isolated)
        child_main (node, spec, boot[1], report[1], table, nmounts, skel);
      plain_child (spec, boot[1], report[1]);
    }
  tm.clone_ms = (double) (flint_now_ns () - t) / 1e6;
  sb->pid = pid;
  close (report[1]);
  close (boot[1]);
  report[1] = boot[1] = -1;
  if (sb->isolated)
    {
      t = flint_now_ns ();
      r = sb->cg_ops->attach (&sb->cg, pid);
      if (r < 0)
        {
          flint_error_set_errno (err, FLINT_EINTERNAL, r, "sandbox `%s`: move the worker into its cgroup", spec->id);
          r = -1;
          goto fail;
        }
      tm.cgroup_ms += (double) (flint_now_ns () - t) / 1e6;
      if (node->opts.userns
          && ((r = write_proc (pid, "setgroups", "deny")) < 0 || (r = write_proc (pid, "uid_map", node->idmap)) < 0
              || (r = write_proc (pid, "gid_map", node->idmap)) < 0))
        {
          flint_error_set_errno (err, FLINT_EINTERNAL, r, "sandbox `%s`: write the user namespace's id maps", spec->id);
          r = -1;
          goto fail;
        }
      if (spec->network && start_slirp (pid, &sb->slirp_exit_fd, err) < 0)
        {
          r = flint_error_prefix (err, "sandbox `%s`: network", spec->id);
          goto fail;
        }
    }
  if (write (boot[0], "g", 1) != 1)
    {
      r = flint_error_set_errno (err, FLINT_EINTERNAL, errno, "sandbox `%s`: release the child", spec->id);
      goto fail;
    }
  channel = recv_channel (boot[0]);
  if (channel < 0 && collect_reports (report[0], spec->id, sb->isolated, &rep, err) < 0)
    {
      r = -1;
      goto fail;
    }
  if (channel < 0)
    {
      r = flint_error_set_errno (err, FLINT_EINTERNAL, -channel, "sandbox `%s`: receive the worker's channel", spec->id);
      goto fail;
    }
  close (boot[0]);
  boot[0] = -1;
  if (collect_reports (report[0], spec->id, sb->isolated, &rep, err) < 0)
    {
      r = -1;
      goto fail;
    }
  close (report[0]);
  report[0] = -1;
  tm.mounts_ms = rep.mounts_ms;
  tm.seccomp_ms = rep.seccomp_ms;
  tm.total_ms = (double) (flint_now_ns () - t_start) / 1e6;
  if (rep.exec_start_ns)
    tm.exec_ms = (double) (flint_now_ns () - rep.exec_start_ns) / 1e6;
  if (timings)
    *timings = tm;
  *channel_out = channel;
  *out = sb;
  return 0;

fail:
  if (channel >= 0)
    close (channel);
  for (int i = 0; i < 2; i++)
    {
      if (report[i] >= 0)
        close (report[i]);
      if (boot[i] >= 0)
        close (boot[i]);
    }
  if (sb->pid > 0)
    {
      kill (sb->pid, SIGKILL);
      waitpid (sb->pid, NULL, 0);
    }
  if (sb->cg_ops)
    {
      for (int i = 0; i < 100 && sb->cg_ops->destroy (&sb->cg) == -EBUSY; i++)
        usleep (1000);
    }
  if (sb->slirp_exit_fd >= 0)
    close (sb->slirp_exit_fd);
  free (sb);
  return r;
}

int
flint_sandbox_prepare (flint_sandbox_node_t *node, const char *id, flint_sandbox_t **out, flint_error_t *err)
{
  flint_cgroup_limits_t none = { 0, 0, 0 };
  flint_sandbox_t *sb;

  if (!node->opts.isolate)
    return flint_error_set (err, FLINT_EPRECONDITION, "restores need isolated sandboxes");
  sb = calloc (1, sizeof *sb);
  if (sb == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  snprintf (sb->id, sizeof sb->id, "%s", id);
  sb->isolated = true;
  sb->pid = -1;
  sb->slirp_exit_fd = -1;
  sb->cg_ops = node->cg.ops;
  if (sb->cg_ops->create (&node->cg, id, &none, &sb->cg, err) < 0)
    {
      free (sb);
      return -1;
    }
  *out = sb;
  return 0;
}

int
flint_sandbox_enter (const flint_sandbox_t *sb)
{
  int r = sb->cg_ops->attach (&sb->cg, getpid ());
  if (r < 0)
    return r;
  return unshare (CLONE_NEWCGROUP) < 0 ? -errno : 0;
}

int
flint_sandbox_set_limits (flint_sandbox_t *sb, const flint_sandbox_spec_t *spec, flint_error_t *err)
{
  flint_cgroup_limits_t lim = { spec->memory_bytes, spec->cpu_millis, spec->pids_max };
  sb->memory_limit = spec->memory_bytes;
  sb->pids_limit = spec->pids_max;
  return sb->cg_ops->set_limits (&sb->cg, &lim, err);
}

void
flint_sandbox_adopt (flint_sandbox_t *sb, pid_t pid)
{
  sb->pid = pid;
}

void
flint_sandbox_set_id (flint_sandbox_t *sb, const char *id)
{
  snprintf (sb->id, sizeof sb->id, "%s", id);
}

pid_t
flint_sandbox_pid (const flint_sandbox_t *sb)
{
  return sb->pid;
}

const char *
flint_sandbox_id (const flint_sandbox_t *sb)
{
  return sb->id;
}

int
flint_sandbox_kill (flint_sandbox_t *sb)
{
  /* killing pid 1 of the namespace takes every process of the sandbox with it (a prepared
   * sandbox has no pid yet: never kill(-1)) */
  if (sb->pid > 0 && kill (sb->pid, SIGKILL) < 0 && errno != ESRCH)
    return -errno;
  if (sb->cg_ops)
    sb->cg_ops->kill_all (&sb->cg);
  return 0;
}

int
flint_sandbox_freeze (flint_sandbox_t *sb, bool frozen)
{
  if (sb->cg_ops == NULL)
    return -ENOTSUP;
  return sb->cg_ops->freeze (&sb->cg, frozen);
}

void
flint_describe_wait_status (int wait_status, char *buf, size_t len)
{
  if (WIFEXITED (wait_status))
    snprintf (buf, len, "exited with status %d", WEXITSTATUS (wait_status));
  else if (WIFSIGNALED (wait_status))
    {
      const char *abbrev = sigabbrev_np (WTERMSIG (wait_status));
      snprintf (buf, len, "killed by signal %d (SIG%s)%s", WTERMSIG (wait_status), abbrev ? abbrev : "?",
                WCOREDUMP (wait_status) ? ", core dumped" : "");
    }
  else
    snprintf (buf, len, "ended with wait status 0x%x", (unsigned) wait_status);
}

void
flint_sandbox_finish (flint_sandbox_t *sb, int wait_status, flint_sandbox_exit_t *exit_out)
{
  bool oom = false, pids_hit = false;

  if (sb->slirp_exit_fd >= 0)
    close (sb->slirp_exit_fd); /* slirp4netns exits; the spawner reaps it with the others */
  if (sb->cg_ops)
    {
      sb->cg_ops->explain (&sb->cg, &oom, &pids_hit);
      /* the namespace's other processes die with pid 1, but not in the same instant */
      sb->cg_ops->kill_all (&sb->cg);
      for (int i = 0; i < 200 && sb->cg_ops->destroy (&sb->cg) == -EBUSY; i++)
        usleep (500);
    }
  if (exit_out)
    {
      char why[128];
      memset (exit_out, 0, sizeof *exit_out);
      exit_out->wait_status = wait_status;
      exit_out->memory_limit = sb->memory_limit;
      exit_out->oom_killed = oom;
      exit_out->pids_limit_hit = pids_hit;
      if (sb->isolated && WIFEXITED (wait_status) && WEXITSTATUS (wait_status) > 128
          && WEXITSTATUS (wait_status) < 128 + 32)
        {
          /* flint-worker is pid 1: it reports signals it raised itself as 128 + N (worker.c) */
          int sig = WEXITSTATUS (wait_status) - 128;
          const char *abbrev = sigabbrev_np (sig);
          snprintf (why, sizeof why, "killed by signal %d (SIG%s)", sig, abbrev ? abbrev : "?");
        }
      else
        flint_describe_wait_status (wait_status, why, sizeof why);
      if (oom)
        {
          char sz[32];
          flint_format_size (sb->memory_limit, sz, sizeof sz);
          snprintf (exit_out->reason, sizeof exit_out->reason, "exceeded memory limit %s (%s)", sz, why);
        }
      else if (pids_hit && WIFSIGNALED (wait_status))
        snprintf (exit_out->reason, sizeof exit_out->reason, "%s after hitting its limit of %u processes/threads", why,
                  sb->pids_limit);
      else
        snprintf (exit_out->reason, sizeof exit_out->reason, "%s", why);
    }
  free (sb);
}
