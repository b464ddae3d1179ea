/* examples/hostile: a function that tries to escape its sandbox, one attack per request.
 *
 * Input: "ATTACK [ARG]". Output: "blocked: <what stopped it>" when the sandbox held, or
 * "ESCAPED: <what it got>" when it did not. The escape suite (tests/integration/
 * test_sandbox.py) runs every attack and asserts "blocked"; `flint invoke hostile --data list`
 * lists them. Never deploy this anywhere but a test node. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <flint/function.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

FLINT_FUNCTION_ABI;

static flint_output_t *cur;

static int
say (const char *fmt, ...)
{
  char buf[1024];
  va_list ap;
  int n;
  va_start (ap, fmt);
  n = vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  return flint_output_write (cur, buf, (size_t) (n < (int) sizeof buf ? n : (int) sizeof buf - 1));
}

/* A syscall result: blocked when it failed. */
static int
expect_fail (long r, const char *what)
{
  if (r < 0)
    return say ("blocked: %s: %s", what, strerror (errno));
  return say ("ESCAPED: %s succeeded (%ld)", what, r);
}

static int
read_file (const char *path)
{
  char buf[256];
  int fd = open (path, O_RDONLY);
  ssize_t n;
  if (fd < 0)
    return say ("blocked: open %s: %s", path, strerror (errno));
  n = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (n < 0)
    return say ("blocked: read %s: %s", path, strerror (errno));
  buf[n] = '\0';
  return say ("ESCAPED: read %zd bytes of %s", n, path);
}

static int
write_file (const char *path)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0)
    return say ("blocked: create %s: %s", path, strerror (errno));
  if (write (fd, "pwned\n", 6) != 6)
    {
      int e = errno;
      close (fd);
      return say ("blocked: write %s: %s", path, strerror (e));
    }
  close (fd);
  return say ("ESCAPED: wrote %s", path);
}

static int
attack (const char *name, const char *arg)
{
  if (strcmp (name, "list") == 0)
    return say ("read-shadow read-path list-root write-bundle write-etc write-usr fill-tmp connect-flintd "
                "connect-internet see-processes kill-host ptrace-host fork-bomb allocate mount unshare setns "
                "chroot pivot-root clone-newns load-module bpf perf-event keyctl userfaultfd io-uring "
                "write-proc-sys write-sys reboot setuid-root mknod read-secrets raw-socket dev-mem "
                "open-by-handle sethostname set-link write-ipc-sysctl");
  /* probes (not attacks): what the sandbox shows, for the tests to compare */
  if (strcmp (name, "list-dev") == 0)
    {
      DIR *d = opendir ("/dev");
      struct dirent *de;
      if (d == NULL)
        return say ("error: opendir /dev: %s", strerror (errno));
      while ((de = readdir (d)) != NULL)
        if (de->d_name[0] != '.')
          say ("%s\n", de->d_name);
      closedir (d);
      return 0;
    }
  if (strcmp (name, "list-mounts") == 0)
    {
      /* mount points, as the sandbox's own /proc reports them */
      FILE *f = fopen ("/proc/self/mountinfo", "re");
      char line[1024];
      if (f == NULL)
        return say ("error: open mountinfo: %s", strerror (errno));
      while (fgets (line, sizeof line, f))
        {
          char point[512];
          if (sscanf (line, "%*s %*s %*s %*s %511s", point) == 1)
            say ("%s\n", point);
        }
      fclose (f);
      return 0;
    }
  if (strcmp (name, "rlimits") == 0)
    {
      struct rlimit nofile, core;
      if (getrlimit (RLIMIT_NOFILE, &nofile) < 0 || getrlimit (RLIMIT_CORE, &core) < 0)
        return say ("error: getrlimit: %s", strerror (errno));
      return say ("nofile %llu %llu core %llu %llu", (unsigned long long) nofile.rlim_cur,
                  (unsigned long long) nofile.rlim_max, (unsigned long long) core.rlim_cur,
                  (unsigned long long) core.rlim_max);
    }
  if (strcmp (name, "hostname") == 0)
    {
      char h[128];
      if (gethostname (h, sizeof h) < 0)
        return say ("error: gethostname: %s", strerror (errno));
      return say ("%s", h);
    }
  if (strcmp (name, "loopback") == 0)
    {
      /* a TCP connection to ourselves over lo: "up" when the sandbox's loopback works */
      struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
      socklen_t len = sizeof sa;
      int l = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c = -1, r = -1, e;
      if (l >= 0 && bind (l, (struct sockaddr *) &sa, sizeof sa) == 0 && listen (l, 1) == 0
          && getsockname (l, (struct sockaddr *) &sa, &len) == 0)
        {
          c = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
          if (c >= 0)
            r = connect (c, (struct sockaddr *) &sa, sizeof sa);
        }
      e = errno;
      if (c >= 0)
        close (c);
      if (l >= 0)
        close (l);
      return r == 0 ? say ("up") : say ("down: %s", strerror (e));
    }
  if (strcmp (name, "connect-to") == 0)
    {
      /* arg "IP:PORT"; a 3 s budget, so an unanswered SYN does not hold the request */
      struct sockaddr_in sa = { .sin_family = AF_INET };
      char ip[64];
      const char *colon = strrchr (arg, ':');
      struct pollfd pfd;
      int fd, r, e = 0;
      socklen_t elen = sizeof e;
      if (colon == NULL || (size_t) (colon - arg) >= sizeof ip)
        return say ("error: expected IP:PORT");
      memcpy (ip, arg, (size_t) (colon - arg));
      ip[colon - arg] = '\0';
      sa.sin_port = htons ((unsigned short) atoi (colon + 1));
      if (inet_pton (AF_INET, ip, &sa.sin_addr) != 1)
        return say ("error: bad address `%s`", ip);
      fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      if (fd < 0)
        return say ("failed: socket: %s", strerror (errno));
      r = connect (fd, (struct sockaddr *) &sa, sizeof sa);
      if (r < 0 && errno == EINPROGRESS)
        {
          pfd.fd = fd;
          pfd.events = POLLOUT;
          r = poll (&pfd, 1, 3000);
          if (r == 0)
            e = ETIMEDOUT;
          else if (r < 0 || getsockopt (fd, SOL_SOCKET, SO_ERROR, &e, &elen) < 0)
            e = errno;
          r = e ? -1 : 0;
          errno = e;
        }
      e = errno;
      close (fd);
      if (r == 0)
        return say ("connected %s", arg);
      return say ("failed: connect %s: %s", arg, strerror (e));
    }
  if (strcmp (name, "read-shadow") == 0)
    return read_file ("/etc/shadow");
  if (strcmp (name, "read-path") == 0)
    return read_file (arg);
  if (strcmp (name, "list-root") == 0)
    {
      /* everything at / must be what the sandbox put there */
      static const char *const known[] = { ".", "..", "bin", "lib", "lib32", "lib64", "libx32", "sbin", "usr",
                                           "etc", "bundle", "weights", "tmp", "proc", "dev", "run", ".flint" };
      DIR *d = opendir ("/");
      struct dirent *de;
      char extra[512] = "";
      if (d == NULL)
        return say ("blocked: opendir /: %s", strerror (errno));
      while ((de = readdir (d)) != NULL)
        {
          int ok = 0;
          for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok |= strcmp (de->d_name, known[i]) == 0;
          if (!ok && strlen (extra) + strlen (de->d_name) + 2 < sizeof extra)
            strcat (strcat (extra, " "), de->d_name);
        }
      closedir (d);
      if (extra[0])
        return say ("ESCAPED: host entries visible at /:%s", extra);
      return say ("blocked: / holds only the sandbox's own entries");
    }
  if (strcmp (name, "write-bundle") == 0)
    return write_file ("/bundle/pwned");
  if (strcmp (name, "write-etc") == 0)
    return write_file ("/etc/passwd");
  if (strcmp (name, "write-usr") == 0)
    return write_file ("/usr/bin/pwned");
  if (strcmp (name, "fill-tmp") == 0)
    {
      long limit = atol (arg);
      char chunk[65536];
      long total = 0;
      int fd = open ("/tmp/fill", O_WRONLY | O_CREAT | O_TRUNC, 0600);
      memset (chunk, 'x', sizeof chunk);
      if (fd < 0)
        return say ("ESCAPED: cannot even create /tmp/fill: %s", strerror (errno));
      for (;;)
        {
          ssize_t n = write (fd, chunk, sizeof chunk);
          if (n <= 0)
            break;
          total += n;
          if (total > limit * 4)
            break;
        }
      close (fd);
      unlink ("/tmp/fill");
      if (total > limit)
        return say ("ESCAPED: wrote %ld bytes into /tmp, limit %ld", total, limit);
      return say ("blocked: /tmp full after %ld bytes (limit %ld)", total, limit);
    }
  if (strcmp (name, "connect-flintd") == 0 || strcmp (name, "connect-internet") == 0)
    {
      struct sockaddr_in sa = { .sin_family = AF_INET };
      int fd = socket (AF_INET, SOCK_STREAM, 0), r;
      const char *ip = strcmp (name, "connect-flintd") == 0 ? "127.0.0.1" : "1.1.1.1";
      if (fd < 0)
        return say ("blocked: socket: %s", strerror (errno));
      sa.sin_port = htons ((unsigned short) (strcmp (name, "connect-flintd") == 0 ? atoi (arg) : 80));
      inet_pton (AF_INET, ip, &sa.sin_addr);
      r = connect (fd, (struct sockaddr *) &sa, sizeof sa);
      close (fd);
      if (r == 0)
        return say ("ESCAPED: connected to %s:%d", ip, ntohs (sa.sin_port));
      return say ("blocked: connect %s:%d: %s", ip, ntohs (sa.sin_port), strerror (errno));
    }
  if (strcmp (name, "see-processes") == 0)
    {
      DIR *d = opendir ("/proc");
      struct dirent *de;
      int n = 0;
      if (d == NULL)
        return say ("blocked: opendir /proc: %s", strerror (errno));
      while ((de = readdir (d)) != NULL)
        if (de->d_name[0] >= '0' && de->d_name[0] <= '9')
          n++;
      closedir (d);
      if (n > 2)
        return say ("ESCAPED: %d processes visible", n);
      return say ("blocked: only %d process(es) visible (pid %d is me)", n, (int) getpid ());
    }
  if (strcmp (name, "kill-host") == 0)
    return expect_fail (kill ((pid_t) atoi (arg), SIGKILL), "kill the host pid");
  if (strcmp (name, "ptrace-host") == 0)
    return expect_fail (ptrace (PTRACE_ATTACH, (pid_t) atoi (arg), NULL, NULL), "ptrace the host pid");
  if (strcmp (name, "fork-bomb") == 0)
    {
      long limit = atol (arg), n = 0;
      int e = 0;
      for (;;)
        {
          pid_t p = fork ();
          if (p < 0)
            {
              e = errno;
              break;
            }
          if (p == 0)
            {
              pause ();
              _exit (0);
            }
          if (++n > limit * 4)
            break;
        }
      kill (-1, SIGKILL); /* as pid 1, this kills every other process of the sandbox */
      while (waitpid (-1, NULL, 0) > 0 || errno == EINTR)
        ;
      if (n >= limit)
        return say ("ESCAPED: forked %ld processes, limit %ld", n, limit);
      return say ("blocked: fork failed after %ld children: %s", n, strerror (e));
    }
  if (strcmp (name, "allocate") == 0)
    {
      size_t mb = (size_t) atol (arg);
      char *p = malloc (mb << 20);
      if (p == NULL)
        return say ("blocked: malloc of %zu MiB refused", mb);
      for (size_t i = 0; i < mb << 20; i += 4096)
        p[i] = 1; /* the OOM killer should end us here */
      return say ("ESCAPED: touched %zu MiB", mb);
    }
  if (strcmp (name, "mount") == 0)
    return expect_fail (mount ("tmpfs", "/tmp", "tmpfs", 0, NULL), "mount");
  if (strcmp (name, "unshare") == 0)
    return expect_fail (unshare (CLONE_NEWUSER | CLONE_NEWNS), "unshare(NEWUSER|NEWNS)");
  if (strcmp (name, "setns") == 0)
    {
      int fd = open ("/proc/1/ns/mnt", O_RDONLY);
      long r = fd < 0 ? -1 : setns (fd, 0);
      return expect_fail (r, "setns");
    }
  if (strcmp (name, "chroot") == 0)
    {
      /* the classic escape: chroot into a subdirectory while keeping a cwd outside it */
      mkdir ("/tmp/jail", 0700);
      return expect_fail (chroot ("/tmp/jail"), "chroot");
    }
  if (strcmp (name, "pivot-root") == 0)
    return expect_fail (syscall (SYS_pivot_root, "/tmp", "/tmp"), "pivot_root");
  if (strcmp (name, "clone-newns") == 0)
    {
      long r = syscall (SYS_clone, CLONE_NEWNS | SIGCHLD, NULL, NULL, NULL, NULL);
      if (r == 0)
        _exit (0);
      if (r > 0)
        waitpid ((pid_t) r, NULL, 0);
      return expect_fail (r, "clone(CLONE_NEWNS)");
    }
  if (strcmp (name, "load-module") == 0)
    return expect_fail (syscall (SYS_finit_module, 0, "", 0), "finit_module");
  if (strcmp (name, "bpf") == 0)
    {
      union bpf_attr attr;
      memset (&attr, 0, sizeof attr);
      attr.map_type = BPF_MAP_TYPE_ARRAY;
      attr.key_size = 4;
      attr.value_size = 4;
      attr.max_entries = 1;
      return expect_fail (syscall (SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr), "bpf(BPF_MAP_CREATE)");
    }
  if (strcmp (name, "perf-event") == 0)
    {
      struct perf_event_attr pa;
      memset (&pa, 0, sizeof pa);
      pa.type = PERF_TYPE_SOFTWARE;
      pa.size = sizeof pa;
      pa.config = PERF_COUNT_SW_CPU_CLOCK;
      return expect_fail (syscall (SYS_perf_event_open, &pa, 0, -1, -1, 0), "perf_event_open");
    }
  if (strcmp (name, "keyctl") == 0)
    return expect_fail (syscall (SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0), "keyctl");
  if (strcmp (name, "userfaultfd") == 0)
    return expect_fail (syscall (SYS_userfaultfd, 0), "userfaultfd");
  if (strcmp (name, "io-uring") == 0)
    {
      char params[120];
      memset (params, 0, sizeof params);
      return expect_fail (syscall (SYS_io_uring_setup, 4, params), "io_uring_setup");
    }
  if (strcmp (name, "write-proc-sys") == 0)
    return write_file ("/proc/sys/kernel/hostname");
  if (strcmp (name, "write-sys") == 0)
    return write_file ("/sys/kernel/mm/transparent_hugepage/enabled");
  if (strcmp (name, "reboot") == 0)
    return expect_fail (syscall (SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_CAD_ON, NULL),
                        "reboot");
  if (strcmp (name, "setuid-root") == 0)
    {
      long r = setuid (0);
      if (r == 0 || geteuid () == 0)
        return say ("ESCAPED: uid is now %d", (int) geteuid ());
      return say ("blocked: setuid(0): %s (uid %d)", strerror (errno), (int) getuid ());
    }
  if (strcmp (name, "mknod") == 0)
    return expect_fail (mknod ("/tmp/sda", S_IFBLK | 0600, makedev (8, 0)), "mknod a block device");
  if (strcmp (name, "read-secrets") == 0)
    {
      /* another endpoint's secret: neither in our environment nor in /run/secrets */
      char path[256];
      extern char **environ;
      for (char **e = environ; *e; e++)
        if (strstr (*e, arg))
          return say ("ESCAPED: found `%s` in the environment", arg);
      snprintf (path, sizeof path, "/run/secrets/%s", arg);
      if (access (path, F_OK) == 0)
        return say ("ESCAPED: %s exists", path);
      return say ("blocked: no trace of `%s` in the environment or /run/secrets", arg);
    }
  if (strcmp (name, "raw-socket") == 0)
    {
      int fd = socket (AF_PACKET, SOCK_RAW, 0);
      if (fd >= 0)
        close (fd);
      return expect_fail (fd, "socket(AF_PACKET)");
    }
  /* the sandbox's UTS, IPC and network namespaces are not the worker's to change (a restored
   * replica's come from the snapshotter's restore slot, a cold one's from the spawner) */
  if (strcmp (name, "sethostname") == 0)
    return expect_fail (sethostname ("pwned", 5), "sethostname");
  if (strcmp (name, "set-link") == 0)
    {
      struct ifreq ifr;
      int fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      long r;
      if (fd < 0)
        return say ("blocked: socket(AF_INET): %s", strerror (errno));
      memset (&ifr, 0, sizeof ifr);
      snprintf (ifr.ifr_name, sizeof ifr.ifr_name, "lo");
      ifr.ifr_mtu = 1280;
      r = ioctl (fd, SIOCSIFMTU, &ifr);
      close (fd);
      return expect_fail (r, "set the MTU of lo");
    }
  if (strcmp (name, "write-ipc-sysctl") == 0)
    return write_file ("/proc/sys/kernel/shmmax");
  if (strcmp (name, "dev-mem") == 0)
    return read_file ("/dev/mem");
  if (strcmp (name, "open-by-handle") == 0)
    {
      char fh[136];
      memset (fh, 0, sizeof fh);
      *(unsigned *) fh = 8;
      return expect_fail (syscall (SYS_open_by_handle_at, AT_FDCWD, fh, O_RDONLY), "open_by_handle_at");
    }
  return flint_fail (cur, FLINT_FN_INVALID_ARGUMENT, "unknown attack `%s` (try `list`)", name);
}

int
flint_invoke (flint_ctx_t *ctx, const flint_input_t *in, flint_output_t *out)
{
  char buf[512], *arg;
  size_t n = in->len < sizeof buf - 1 ? in->len : sizeof buf - 1;

  (void) ctx;
  memcpy (buf, in->data, n);
  buf[n] = '\0';
  arg = strchr (buf, ' ');
  if (arg)
    *arg++ = '\0';
  cur = out;
  return attack (buf, arg ? arg : "");
}
