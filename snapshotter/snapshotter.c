/* The snapshotter service: checkpoints warmed workers into in-memory images with CRIU and
 * restores replicas from them, fast.
 *
 * A restore is on the critical path of a request that arrived for an endpoint at zero, so
 * everything that can happen before the request does happen before it: a pool of restore
 * "slots" is kept ready, each holding
 *   - a prepared sandbox cgroup, already joined (the first cgroup v1 migration after a quiet
 *     period costs 13-16 ms of rcu_sync) by
 *   - a `criu swrk` process, forked and exec'd ahead, living in a cgroup namespace rooted at
 *     that cgroup, so the restored tree is born inside it;
 *   - a fresh channel socketpair and stdout/stderr pipes for the new replica (inherited by
 *     criu and swapped in for the dumped ones through inherit_fd);
 *   - a fresh tmpfs for the replica's /tmp (an external mount: no tar of tmpfs content).
 * A restore is then one RPC; slots are refilled when no request waits. The choices and their
 * measurements are in docs/SNAPSHOTS.md.
 *
 * Mount sources. CRIU bind-mounts each external mount from inside the restored user namespace,
 * where the sandbox's root maps to an unprivileged host uid: a source below a root-only
 * directory (flintd's state and run directories are 0700) cannot be looked up from there. So
 * the snapshotter runs in a private mount namespace with a small tmpfs at `stage_dir` (0711,
 * on a path every uid may traverse): sources that are not reachable are bind-mounted there for
 * the duration of a restore. The private namespace keeps these mounts, and the slots' /tmp
 * tmpfs, out of the host's mount table; dumps run in the host's namespace, where the workers
 * were created.
 *
 * Protocol (node.proto): Dump → Dumped; Restore → Restored (+ channel, stdout, stderr fds);
 * Freeze, Kill, Exited as for the spawner (supervisor.c).
 *
 * Fault injection (tests): FLINT_FAULT=snapshot-dump makes every dump fail as CRIU would,
 * FLINT_FAULT=snapshot-restore every restore (after the slot was used, so the rollback runs). */
#include "snapshotter.h"
#include "criu.h"
#include "devckpt.h"
#include "images.h"
#include "spawner.h"
#include "supervisor.h"
#include "flint/cleanup.h"
#include "flint/log.h"
#include "flint/util.h"
#include "flint-config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

typedef Flint__Node__V1__NodeFrame node_frame_t;

#define MAX_SLOTS 16
#define MAX_MOUNTS 48

/* The namespaces a restored replica inherits from its slot instead of having CRIU recreate them
 * (see slot_make_ns), in this order everywhere. */
enum { NS_UTS, NS_IPC, NS_NET, NS_COUNT };
static const int ns_flag[NS_COUNT] = { CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWNET };
static const char *const ns_name[NS_COUNT] = { "uts", "ipc", "net" };

typedef struct slot_s {
  bool ready;
  flint_sandbox_t *sb;      /* the prepared cgroup */
  flint_criu_t criu;        /* swrk inside it */
  int chan[2];              /* [0] for flintd, [1] inherited by the restored worker */
  int out[2], err[2];       /* [0] read ends for flintd, [1] inherited */
  int work_fd;              /* CRIU's work directory (restore.log) */
  int ns[NS_COUNT];         /* the slot's own UTS, IPC and network namespaces (see slot_make_ns) */
  char dir[PATH_MAX];       /* RUN/snapshotter/slot-N: root-only, holds `work` */
  char stage[PATH_MAX];     /* STAGE/slot-N: mount sources the restored user namespace can reach */
  char tmp[PATH_MAX + 8];   /* STAGE/slot-N/tmp: a fresh tmpfs, the replica's /tmp */
  uint64_t tmp_size;
  char staged[MAX_MOUNTS][48]; /* keys of sources bind-mounted under `stage` for one restore */
  size_t nstaged;
} slot_t;

typedef struct snap_s {
  flint_supervisor_t sv;
  flint_snapshotter_options_t opts;
  char criu_version[32];
  char kernel[128];
  char kdat[PATH_MAX];
  slot_t slots[MAX_SLOTS];
  unsigned next_slot_id;
  int own_ns[NS_COUNT];     /* our UTS, IPC and network namespaces (NS_UTS, NS_IPC, NS_NET) */
  int host_mntns;           /* the namespace dumps run in */
  char fault[128];
  char criu_log_dir[PATH_MAX]; /* FLINT_CRIU_LOG_DIR: keep every restore's CRIU log (level 4) there */
} snap_t;

static bool
fault (const snap_t *s, const char *point)
{
  return flint_fault_listed (s->fault, point);
}

/* ---- namespaces --------------------------------------------------------------------------- */

/* Steps back into our own namespace of kind `i` after working in another one. We cannot stay in
 * a slot's or a replica's namespace: failing to return aborts (flintd restarts us). */
static void
ns_return (const snap_t *s, int i)
{
  if (setns (s->own_ns[i], ns_flag[i]) < 0)
    {
      flint_err ("cannot return to our %s namespace: %s", ns_name[i], strerror (errno));
      abort ();
    }
}

/* Brings lo up in the network namespace we are in. -errno. */
static int
loopback_up (void)
{
  struct ifreq ifr;
  int sk, r = -1, e = 0;

  sk = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sk < 0)
    return -errno;
  memset (&ifr, 0, sizeof ifr);
  snprintf (ifr.ifr_name, sizeof ifr.ifr_name, "lo");
  if (ioctl (sk, SIOCGIFFLAGS, &ifr) == 0)
    {
      ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
      r = ioctl (sk, SIOCSIFFLAGS, &ifr);
    }
  e = errno;
  close (sk);
  return r < 0 ? -e : 0;
}

/* The loopback of a replica restored from an image that carries its own network namespace
 * (taken before images left it to the slot): CRIU created it empty (its own netns restore execs
 * `ip`); we are root of the initial user namespace: step in, bring lo up, step out. */
static int
loopback_up_in (snap_t *s, pid_t pid)
{
  char path[64];
  _cleanup_close_ int ns = -1;
  int r;

  snprintf (path, sizeof path, "/proc/%d/ns/net", (int) pid);
  ns = open (path, O_RDONLY | O_CLOEXEC);
  if (ns < 0 || setns (ns, CLONE_NEWNET) < 0)
    return -errno;
  r = loopback_up ();
  ns_return (s, NS_NET);
  return r;
}

/* A replica's UTS, IPC and network namespaces, made with its slot, ahead of the request. The
 * slot's criu swrk is started inside them (slot_enter_cb), so the restored tree is born in them
 * and CRIU recreates none of them: images leave them out (see dump_join_ns). Recreating them
 * was the largest part of a restore (docs/SNAPSHOTS.md: the UTS values alone are written
 * through a process CRIU forks into the restored user namespace). The loopback is up; the
 * hostname is set per restore (slot_set_hostname).
 *
 * We create them, so they belong to the initial user namespace; the worker, an unprivileged uid
 * in its own user namespace, can change nothing in them (hostname, IPC limits, interfaces), as
 * in the namespaces the spawner gives cold replicas; docs/SANDBOX.md. */
static int
slot_make_ns (snap_t *s, slot_t *sl, flint_error_t *err)
{
  int r = 0;

  if (unshare (CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET) < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "restore slot: create its namespaces");
  for (int i = 0; i < NS_COUNT && r == 0; i++)
    {
      char p[32];
      snprintf (p, sizeof p, "/proc/self/ns/%s", ns_name[i]);
      sl->ns[i] = open (p, O_RDONLY | O_CLOEXEC);
      if (sl->ns[i] < 0)
        r = -errno;
    }
  if (r == 0)
    r = loopback_up ();
  for (int i = 0; i < NS_COUNT; i++)
    ns_return (s, i);
  if (r < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, -r, "restore slot: set up its namespaces");
  return 0;
}

/* The replica's hostname (the endpoint's name, as the spawner sets it) in the slot's UTS
 * namespace. -errno. */
static int
slot_set_hostname (snap_t *s, slot_t *sl, const char *name)
{
  int r;

  if (setns (sl->ns[NS_UTS], CLONE_NEWUTS) < 0)
    return -errno;
  r = sethostname (name, strlen (name)) < 0 ? -errno : 0;
  ns_return (s, NS_UTS);
  return r;
}

/* True when the IPC namespace `fd` holds no System V objects (shared memory, message queues,
 * semaphores): only then may a dump leave it to the slot, whose IPC namespace is empty. */
static bool
ipc_ns_empty (snap_t *s, int fd)
{
  static const char *const files[] = { "/proc/sysvipc/shm", "/proc/sysvipc/msg", "/proc/sysvipc/sem" };
  bool empty = true;

  if (setns (fd, CLONE_NEWIPC) < 0)
    return false;
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (files) && empty; i++)
    {
      FILE *f = fopen (files[i], "re");
      char line[256];
      int lines = 0;
      if (f == NULL)
        {
          empty = false;
          break;
        }
      while (fgets (line, sizeof line, f))
        lines++;
      fclose (f);
      empty = lines <= 1; /* the header */
    }
  ns_return (s, NS_IPC);
  return empty;
}

/* ---- slots ------------------------------------------------------------------------------- */

/* In the slot's criu swrk, before exec: its cgroup (and a cgroup namespace rooted there), and the
 * slot's namespaces. Async-signal-safe. */
static int
slot_enter_cb (void *data)
{
  const slot_t *sl = data;
  int r = flint_sandbox_enter (sl->sb);

  for (int i = 0; i < NS_COUNT && r == 0; i++)
    if (setns (sl->ns[i], ns_flag[i]) < 0)
      r = -errno;
  return r;
}

static void
unstage (slot_t *sl)
{
  for (size_t i = 0; i < sl->nstaged; i++)
    {
      char p[PATH_MAX + 64];
      snprintf (p, sizeof p, "%s/%s", sl->stage, sl->staged[i]);
      umount2 (p, MNT_DETACH);
      if (unlink (p) < 0)
        rmdir (p);
    }
  sl->nstaged = 0;
}

/* Closes the slot's fds and removes its mounts and directories; the cgroup (sl->sb) is the
 * caller's: it became a replica's, or is finished by the caller. */
static void
slot_release (slot_t *sl, bool kill_criu)
{
  int *fds[] = { &sl->chan[0], &sl->chan[1], &sl->out[0], &sl->out[1], &sl->err[0], &sl->err[1], &sl->work_fd,
                 &sl->ns[0],   &sl->ns[1],   &sl->ns[2] };
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (fds); i++)
    if (*fds[i] >= 0)
      {
        close (*fds[i]);
        *fds[i] = -1;
      }
  if (sl->criu.pid > 0)
    {
      if (kill_criu)
        kill (sl->criu.pid, SIGKILL);
      /* the supervisor's reaper collects it */
      flint_criu_close (&sl->criu, true);
    }
  unstage (sl);
  if (sl->tmp[0])
    umount2 (sl->tmp, MNT_DETACH);
  if (sl->stage[0])
    flint_rm_rf (sl->stage);
  if (sl->dir[0])
    flint_rm_rf (sl->dir);
  sl->tmp[0] = sl->stage[0] = sl->dir[0] = '\0';
  sl->ready = false;
}

static void
slot_discard (slot_t *sl)
{
  slot_release (sl, true);
  if (sl->sb)
    {
      flint_sandbox_kill (sl->sb);
      flint_sandbox_finish (sl->sb, 0, NULL);
      sl->sb = NULL;
    }
}

/* Prepares one slot (see the file comment). Not on the request path, except when the pool ran
 * dry. */
static int
slot_prepare (snap_t *s, slot_t *sl, flint_error_t *err)
{
  char id[64], path[PATH_MAX + 16], opts[64];
  int keep[4];

  memset (sl, 0, sizeof *sl);
  sl->chan[0] = sl->chan[1] = sl->out[0] = sl->out[1] = sl->err[0] = sl->err[1] = sl->work_fd = -1;
  sl->ns[0] = sl->ns[1] = sl->ns[2] = -1;
  sl->criu.pid = sl->criu.sk = -1;
  snprintf (id, sizeof id, "slot-%u", s->next_slot_id++);
  if (flint_sandbox_prepare (s->sv.node, id, &sl->sb, err) < 0)
    return -1;
  snprintf (sl->dir, sizeof sl->dir, "%s/snapshotter/%s", s->opts.run_dir, id);
  snprintf (sl->stage, sizeof sl->stage, "%s/%s", s->opts.stage_dir, id);
  snprintf (path, sizeof path, "%s/work", sl->dir);
  sl->tmp_size = 64u << 20;
  snprintf (opts, sizeof opts, "mode=1777,size=%llu", (unsigned long long) sl->tmp_size);
  if (flint_mkdir_p (path, 0700) < 0 || flint_mkdir_p (sl->stage, 0711) < 0 || chmod (sl->stage, 0711) < 0)
    {
      flint_error_set_errno (err, FLINT_EINTERNAL, errno, "restore slot: prepare `%s`", sl->dir);
      goto fail;
    }
  snprintf (sl->tmp, sizeof sl->tmp, "%s/tmp", sl->stage);
  if (mkdir (sl->tmp, 0755) < 0 || mount ("flint-tmp", sl->tmp, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
    {
      flint_error_set_errno (err, FLINT_EINTERNAL, errno, "restore slot: mount a tmpfs at `%s`", sl->tmp);
      sl->tmp[0] = '\0';
      goto fail;
    }
  sl->work_fd = open (path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (sl->work_fd < 0 || socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sl->chan) < 0
      || pipe2 (sl->out, O_CLOEXEC) < 0 || pipe2 (sl->err, O_CLOEXEC) < 0)
    {
      flint_error_set_errno (err, FLINT_EINTERNAL, errno, "restore slot: fds");
      goto fail;
    }
  keep[0] = sl->chan[1];
  keep[1] = sl->out[1];
  keep[2] = sl->err[1];
  keep[3] = sl->work_fd;
  if (slot_make_ns (s, sl, err) < 0)
    goto fail;
  if (flint_criu_spawn (s->opts.criu, keep, 4, slot_enter_cb, sl, &sl->criu, err) < 0)
    goto fail;
  sl->ready = true;
  return 0;
fail:
  slot_discard (sl);
  return -1;
}

static void
refill_cb (flint_supervisor_t *sv, void *data)
{
  snap_t *s = data;

  sv->idle_pending = false;
  for (unsigned i = 0; i < s->opts.slots && i < MAX_SLOTS; i++)
    if (!s->slots[i].ready)
      {
        flint_error_t err = FLINT_ERROR_INIT;
        if (slot_prepare (s, &s->slots[i], &err) < 0)
          flint_warn ("cannot prepare a restore slot: %s", err.msg);
        else
          sv->idle_pending = true; /* one slot per idle turn: a frame that arrives meanwhile goes first */
        return;
      }
}

static slot_t *
take_slot (snap_t *s, double *prep_ms, flint_error_t *err)
{
  uint64_t t0;
  for (unsigned i = 0; i < s->opts.slots && i < MAX_SLOTS; i++)
    if (s->slots[i].ready)
      {
        *prep_ms = 0;
        return &s->slots[i];
      }
  /* the pool ran dry (a burst): prepare one now, on the request's time */
  for (unsigned i = 0; i < s->opts.slots && i < MAX_SLOTS; i++)
    if (!s->slots[i].ready)
      {
        t0 = flint_now_ns ();
        if (slot_prepare (s, &s->slots[i], err) < 0)
          return NULL;
        *prep_ms = (double) (flint_now_ns () - t0) / 1e6;
        return &s->slots[i];
      }
  flint_error_set (err, FLINT_EINTERNAL, "no restore slot");
  return NULL;
}

/* ---- helpers ---------------------------------------------------------------------------- */

static unsigned long
fd_inode (pid_t pid, int fd, const char *kind)
{
  char path[64], link[128];
  ssize_t n;
  unsigned long ino = 0;
  size_t klen = strlen (kind);

  snprintf (path, sizeof path, "/proc/%d/fd/%d", (int) pid, fd);
  n = readlink (path, link, sizeof link - 1);
  if (n <= 0)
    return 0;
  link[n] = '\0';
  if (strncmp (link, kind, klen) == 0 && link[klen] == ':' && link[klen + 1] == '[')
    ino = strtoul (link + klen + 2, NULL, 10);
  return ino;
}

/* The error lines of a CRIU log, for messages (without the noise every run prints on this kind
 * of host: no CAP_SYS_RESOURCE for RLIMIT_NOFILE). */
static void
log_errors (const char *path, char *out, size_t len)
{
  FILE *f = fopen (path, "re");
  char line[512];
  size_t used = 0;

  out[0] = '\0';
  if (f == NULL)
    return;
  while (fgets (line, sizeof line, f) && used + 2 < len)
    {
      char *e = strstr (line, "Error");
      if (e == NULL || strstr (line, "RLIMIT_NOFILE") || strstr (line, "cgroupd"))
        continue;
      line[strcspn (line, "\n")] = '\0';
      used += (size_t) snprintf (out + used, len - used, "%s%s", used ? "; " : "", e);
    }
  fclose (f);
}

static void
add_str (char ***arr, size_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
add_str (char ***arr, size_t *n, const char *fmt, ...)
{
  va_list ap;
  char *s;
  va_start (ap, fmt);
  if (vasprintf (&s, fmt, ap) < 0)
    abort ();
  va_end (ap);
  *arr = realloc (*arr, (*n + 1) * sizeof **arr);
  if (*arr == NULL)
    abort ();
  (*arr)[(*n)++] = s;
}

static void
free_strs (char **arr, size_t n)
{
  for (size_t i = 0; i < n; i++)
    free (arr[i]);
  free (arr);
}

/* True when every directory on the way to `path` lets any uid through (o+x): CRIU can then
 * bind-mount it from inside the restored user namespace without staging. */
static bool
reachable_by_anyone (const char *path)
{
  char p[PATH_MAX];
  struct stat st;
  char *slash;

  snprintf (p, sizeof p, "%s", path);
  for (slash = strrchr (p, '/'); slash; slash = strrchr (p, '/'))
    {
      *slash = '\0';
      if (stat (p[0] ? p : "/", &st) < 0 || !(st.st_mode & S_IXOTH))
        return false;
      if (p[0] == '\0')
        break;
    }
  return true;
}

/* Bind-mounts `host` at STAGE/slot-N/<key> (see the file comment) and returns that path. */
static int
stage_source (slot_t *sl, const char *key, const char *host, char *out, size_t len, flint_error_t *err)
{
  struct stat st;
  int r;

  snprintf (out, len, "%s/%s", sl->stage, key);
  if (stat (host, &st) < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "stage mount source `%s`", host);
  if (S_ISDIR (st.st_mode))
    r = mkdir (out, 0755);
  else
    {
      int fd = open (out, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      r = fd < 0 ? -1 : close (fd);
    }
  if (r < 0 || mount (host, out, NULL, MS_BIND, NULL) < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "stage mount source `%s` at `%s`", host, out);
  snprintf (sl->staged[sl->nstaged++], sizeof sl->staged[0], "%s", key);
  return 0;
}

/* FLINT_CRIU_LOG_DIR (diagnostics, docs/SNAPSHOTS.md): a copy of the restore's CRIU log, with
 * CRIU's timestamps, as DIR/<replica>.restore.log. */
static void
keep_log (snap_t *s, slot_t *sl, const char *replica)
{
  char src[PATH_MAX + 32], dst[PATH_MAX + 160];
  _cleanup_close_ int in = -1, out = -1;
  char buf[65536];
  ssize_t n;

  if (!s->criu_log_dir[0])
    return;
  snprintf (src, sizeof src, "%s/work/restore.log", sl->dir);
  snprintf (dst, sizeof dst, "%s/%s.restore.log", s->criu_log_dir, replica);
  in = open (src, O_RDONLY | O_CLOEXEC);
  out = open (dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (in < 0 || out < 0)
    return;
  while ((n = read (in, buf, sizeof buf)) > 0)
    if (flint_write_all (out, buf, (size_t) n) < 0)
      return;
}

/* ---- dump -------------------------------------------------------------------------------- */

static void
reply_dumped (snap_t *s, const char *id, bool ok, const char *error, uint64_t size, double ms,
              const flint_image_file_t *files, size_t n, const char *const *mk, const char *const *mv, size_t nm)
{
  Flint__Node__V1__Dumped d = FLINT__NODE__V1__DUMPED__INIT;
  node_frame_t f = FLINT__NODE__V1__NODE_FRAME__INIT;
  Flint__Node__V1__ImageFile *fm = calloc (n + 1, sizeof *fm);
  Flint__Node__V1__ImageFile **fp = calloc (n + 1, sizeof *fp);
  Flint__Node__V1__Dumped__MetaEntry *me = calloc (nm + 1, sizeof *me);
  Flint__Node__V1__Dumped__MetaEntry **mp = calloc (nm + 1, sizeof *mp);

  if (!fm || !fp || !me || !mp)
    abort ();
  d.replica_id = (char *) id;
  d.ok = ok;
  d.error = (char *) (error ? error : "");
  d.size_bytes = size;
  d.dump_ms = ms;
  for (size_t i = 0; i < n; i++)
    {
      flint__node__v1__image_file__init (&fm[i]);
      fm[i].path = (char *) files[i].path;
      fm[i].size = files[i].size;
      fm[i].sha256 = (char *) files[i].sha256;
      fp[i] = &fm[i];
    }
  d.n_files = n;
  d.files = fp;
  for (size_t i = 0; i < nm; i++)
    {
      flint__node__v1__dumped__meta_entry__init (&me[i]);
      me[i].key = (char *) mk[i];
      me[i].value = (char *) mv[i];
      mp[i] = &me[i];
    }
  d.n_meta = nm;
  d.meta = mp;
  f.msg_case = FLINT__NODE__V1__NODE_FRAME__MSG_DUMPED;
  f.dumped = &d;
  flint_supervisor_send (&s->sv, &f, NULL, 0);
  free (fm), free (fp), free (me), free (mp);
}

static void
dump_failed (snap_t *s, const Flint__Node__V1__Dump *req, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
dump_failed (snap_t *s, const Flint__Node__V1__Dump *req, const char *fmt, ...)
{
  char msg[1500];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  /* no half image is left behind for anyone to find */
  if (req->image_dir[0])
    flint_rm_rf (req->image_dir);
  reply_dumped (s, req->replica_id, false, msg, 0, 0, NULL, 0, NULL, NULL, 0);
}

/* Where the dumping criu runs: the host's mount namespace, where the workers were created (see
 * the file comment), and those of the worker's namespaces the image leaves to the restoring slot
 * (dump_join_ns). */
typedef struct dump_ns_s {
  int mnt;
  int ns[NS_COUNT]; /* -1: not joined */
} dump_ns_t;

static int
dump_enter_cb (void *data)
{
  const dump_ns_t *d = data;

  if (setns (d->mnt, CLONE_NEWNS) < 0)
    return -errno;
  for (int i = 0; i < NS_COUNT; i++)
    if (d->ns[i] >= 0 && setns (d->ns[i], ns_flag[i]) < 0)
      return -errno;
  return 0;
}

/* Which of the worker's namespaces the image leaves to the slot that restores it (slot_make_ns):
 * CRIU leaves out of an image the namespaces its dumping process shares with the dumped tree,
 * and a restored tree inherits those of the restoring process. So the dumping criu joins the
 * worker's UTS and network namespaces, and its IPC namespace when that holds no System V
 * objects (they would be lost). What they hold that a replica needs is made by the slot: the
 * hostname (which the unprivileged worker cannot change), an up loopback (the worker's network
 * namespace has nothing else: `network: true` workers are not checkpointed). Opens the
 * namespaces into `d` and writes their names ("uts,ipc,net") into `names` (flint.meta's
 * `slot_ns`). Returns 0 or -errno. */
static int
dump_join_ns (snap_t *s, pid_t pid, dump_ns_t *d, char *names, size_t len)
{
  size_t used = 0;

  names[0] = '\0';
  for (int i = 0; i < NS_COUNT; i++)
    {
      char p[64];
      snprintf (p, sizeof p, "/proc/%d/ns/%s", (int) pid, ns_name[i]);
      d->ns[i] = open (p, O_RDONLY | O_CLOEXEC);
      if (d->ns[i] < 0)
        return -errno;
      if (i == NS_IPC && !ipc_ns_empty (s, d->ns[i]))
        {
          close (d->ns[i]);
          d->ns[i] = -1;
          continue;
        }
      used += (size_t) snprintf (names + used, len - used, "%s%s", used ? "," : "", ns_name[i]);
    }
  return 0;
}

/* Restored replicas get a fresh, empty /tmp (an external mount), so what a worker keeps there
 * would silently vanish: refuse such a checkpoint instead, naming a file. */
static int
tmp_is_empty (pid_t pid, char *first, size_t len)
{
  char path[64];
  DIR *d;
  struct dirent *de;
  int r = 1;

  snprintf (path, sizeof path, "/proc/%d/root/tmp", (int) pid);
  d = opendir (path);
  if (d == NULL)
    return -errno;
  while ((de = readdir (d)) != NULL)
    if (strcmp (de->d_name, ".") != 0 && strcmp (de->d_name, "..") != 0)
      {
        snprintf (first, len, "%s", de->d_name);
        r = 0;
        break;
      }
  closedir (d);
  return r;
}

static void
handle_dump (snap_t *s, const Flint__Node__V1__Dump *req)
{
  flint_error_t err = FLINT_ERROR_INIT;
  flint_sandbox_spec_t spec;
  flint_mount_t table[MAX_MOUNTS];
  const flint_devckpt_ops_t *dev;
  size_t nm;
  _cleanup_free_ char **argv = NULL;
  _cleanup_free_ char **env = NULL;
  _cleanup_close_ int imgfd = -1;
  unsigned long sk_ino, out_ino, err_ino;
  flint_criu_t c = { -1, -1 };
  CriuReq rq = CRIU_REQ__INIT;
  CriuOpts o = CRIU_OPTS__INIT;
  CriuResp *resp = NULL;
  char **ext = NULL;
  size_t next = 0;
  flint_image_file_t *files = NULL;
  uint64_t total = 0;
  uint64_t t0 = flint_now_ns ();
  char logp[PATH_MAX], errs[1000], tmpfile[256], slot_ns[32];
  dump_ns_t dns = { s->host_mntns, { -1, -1, -1 } };
  int n, r;

  if (req->sandbox == NULL || req->n_argv == 0 || req->pid <= 0 || req->image_dir[0] != '/')
    {
      reply_dumped (s, req->replica_id, false, "malformed dump request", 0, 0, NULL, 0, NULL, NULL, 0);
      return;
    }
  argv = calloc (req->n_argv + 1, sizeof *argv);
  env = calloc (req->sandbox->n_env + 1, sizeof *env);
  if (argv == NULL || env == NULL)
    abort ();
  flint_sandbox_spec_from_proto (req->sandbox, req->replica_id, req->argv, req->n_argv, argv, env, &spec);
  if (spec.network)
    {
      reply_dumped (s, req->replica_id, false,
                    "`network: true` workers are not checkpointed: their slirp4netns link lives outside the sandbox "
                    "and cannot be restored",
                    0, 0, NULL, 0, NULL, NULL, 0);
      return;
    }
  dev = flint_devckpt_for (spec.gpu, &err);
  if (dev == NULL)
    {
      reply_dumped (s, req->replica_id, false, err.msg, 0, 0, NULL, 0, NULL, NULL, 0);
      return;
    }
  sk_ino = fd_inode (req->pid, 3, "socket");
  out_ino = fd_inode (req->pid, 1, "pipe");
  err_ino = fd_inode (req->pid, 2, "pipe");
  if (sk_ino == 0 || out_ino == 0 || err_ino == 0)
    {
      reply_dumped (s, req->replica_id, false,
                    "the worker's fds 1, 2 and 3 are not its log pipes and channel (did it replace them?)", 0, 0, NULL, 0,
                    NULL, NULL, 0);
      return;
    }
  r = tmp_is_empty (req->pid, tmpfile, sizeof tmpfile);
  if (r == 0)
    {
      snprintf (errs, sizeof errs,
                "the worker keeps files in /tmp (`%s`), which restored replicas would not have (each gets a fresh "
                "/tmp): keep init-time state in memory or in the bundle",
                tmpfile);
      reply_dumped (s, req->replica_id, false, errs, 0, 0, NULL, 0, NULL, NULL, 0);
      return;
    }
  flint_rm_rf (req->image_dir);
  /* Root-only is the parent (RUN/images, 0700): nobody reaches an image by path. The image
   * directory itself lets any uid through (0711), because CRIU reads it from inside the
   * restored user namespace through a descriptor opened by root. */
  if (flint_mkdir_p (req->image_dir, 0711) < 0 || chmod (req->image_dir, 0711) < 0
      || (imgfd = open (req->image_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
    {
      dump_failed (s, req, "create the image directory `%s`: %s", req->image_dir, strerror (errno));
      return;
    }
  if ((r = dump_join_ns (s, req->pid, &dns, slot_ns, sizeof slot_ns)) < 0)
    {
      for (int i = 0; i < NS_COUNT; i++)
        if (dns.ns[i] >= 0)
          close (dns.ns[i]);
      dump_failed (s, req, "open the worker's namespaces: %s", strerror (-r));
      return;
    }
  if (dev->checkpoint (req->pid, &err) < 0)
    {
      for (int i = 0; i < NS_COUNT; i++)
        if (dns.ns[i] >= 0)
          close (dns.ns[i]);
      dump_failed (s, req, "%s checkpoint of the device state: %s", dev->name, err.msg);
      return;
    }

  nm = flint_sandbox_mount_table (s->sv.node, &spec, table, MAX_MOUNTS);
  for (size_t i = 0; i < nm; i++)
    if (table[i].kind != FLINT_MNT_PROC)
      add_str (&ext, &next, "mnt[%s]:%s", table[i].inside, table[i].key);
  add_str (&ext, &next, "unix[%lu]", sk_ino);

  rq.type = CRIU_REQ_TYPE__DUMP;
  rq.opts = &o;
  o.images_dir_fd = imgfd;
  o.has_pid = 1;
  o.pid = req->pid;
  o.log_file = (char *) "dump.log";
  o.has_log_level = 1;
  o.log_level = 2;
  o.has_leave_running = 1;
  o.leave_running = req->leave_running;
  o.has_network_lock = 1;
  o.network_lock = CRIU_NETWORK_LOCK_METHOD__SKIP;
  o.n_external = next;
  o.external = ext;

  if (fault (s, "snapshot-dump"))
    r = flint_error_set (&err, FLINT_EINTERNAL, "criu dump failed: fault injected (FLINT_FAULT=snapshot-dump)");
  else if ((r = flint_criu_spawn (s->opts.criu, &imgfd, 1, dump_enter_cb, &dns, &c, &err)) == 0)
    r = flint_criu_call (&c, &rq, &resp, &err);
  flint_criu_close (&c, true);
  for (int i = 0; i < NS_COUNT; i++)
    if (dns.ns[i] >= 0)
      close (dns.ns[i]);
  free_strs (ext, next);
  if (req->leave_running)
    {
      flint_error_t e2 = FLINT_ERROR_INIT;
      if (dev->resume (req->pid, &e2) < 0)
        flint_warn ("replica %s: %s resume after the dump: %s", req->replica_id, dev->name, e2.msg);
    }
  if (r < 0)
    {
      dump_failed (s, req, "%s", err.msg);
      return;
    }
  if (!resp->success)
    {
      snprintf (logp, sizeof logp, "%s/dump.log", req->image_dir);
      log_errors (logp, errs, sizeof errs);
      dump_failed (s, req, "criu dump failed: %s",
                   errs[0] ? errs : (resp->cr_errmsg ? resp->cr_errmsg : "no reason in dump.log"));
      criu_resp__free_unpacked (resp, NULL);
      return;
    }
  criu_resp__free_unpacked (resp, NULL);

  {
    char ks[32], os[32], es[32], worker_sha[FLINT_SHA256_HEX_LEN];
    flint_devckpt_kv_t dkv[8];
    size_t nd = dev->describe (req->pid, dkv, FLINT_ARRAY_SIZE (dkv));
    const char *mk[16] = { "criu", "kernel", "socket", "stdout", "stderr", "idmap", "worker", "device", "slot_ns" };
    const char *mv[16];
    size_t nmeta = 9;

    snprintf (ks, sizeof ks, "%lu", sk_ino);
    snprintf (os, sizeof os, "%lu", out_ino);
    snprintf (es, sizeof es, "%lu", err_ino);
    if (flint_sha256_file (argv[0], worker_sha, NULL) < 0)
      snprintf (worker_sha, sizeof worker_sha, "unknown");
    mv[0] = s->criu_version, mv[1] = s->kernel, mv[2] = ks, mv[3] = os, mv[4] = es;
    mv[5] = flint_sandbox_idmap (s->sv.node), mv[6] = worker_sha, mv[7] = dev->name, mv[8] = slot_ns;
    for (size_t i = 0; i < nd && nmeta < FLINT_ARRAY_SIZE (mk); i++, nmeta++)
      mk[nmeta] = dkv[i].key, mv[nmeta] = dkv[i].value;
    /* CRIU's logs are not part of the image (and would fail its verification once appended to) */
    unlinkat (imgfd, "stats-dump", 0);
    /* Nor is the cgroup record: restores ignore it (the replica is born in its slot's cgroup and
     * cgroup namespace), but its mere presence makes every restore fork a helper (cgroupd) that
     * only moves threads whose cgroups differ from their process's, which a worker's cannot:
     * the sandbox shows no cgroup filesystem and nothing else moves them. */
    unlinkat (imgfd, "cgroup.img", 0);
    if (flint_image_meta_write (req->image_dir, mk, mv, nmeta, &err) < 0
        || (n = flint_image_list (req->image_dir, &files, &total, &err)) < 0)
      {
        dump_failed (s, req, "%s", err.msg);
        return;
      }
    reply_dumped (s, req->replica_id, true, NULL, total, (double) (flint_now_ns () - t0) / 1e6, files, (size_t) n,
                  mk, mv, nmeta);
    free (files);
  }
}

/* ---- restore ----------------------------------------------------------------------------- */

static void
reply_restored (snap_t *s, const char *id, flint_status_t code, const char *error, pid_t pid, const double *ph,
                const char *const *names, size_t nph, const int *fds, size_t nfds)
{
  Flint__Node__V1__Restored r = FLINT__NODE__V1__RESTORED__INIT;
  node_frame_t f = FLINT__NODE__V1__NODE_FRAME__INIT;
  Flint__Node__V1__Restored__PhasesMsEntry e[8], *ep[8];

  r.replica_id = (char *) id;
  r.ok = code == FLINT_OK;
  r.code = (int32_t) code;
  r.error = (char *) (error ? error : "");
  r.pid = pid;
  for (size_t i = 0; i < nph && i < 8; i++)
    {
      flint__node__v1__restored__phases_ms_entry__init (&e[i]);
      e[i].key = (char *) names[i];
      e[i].value = ph[i];
      ep[i] = &e[i];
    }
  r.n_phases_ms = nph;
  r.phases_ms = ep;
  f.msg_case = FLINT__NODE__V1__NODE_FRAME__MSG_RESTORED;
  f.restored = &r;
  flint_supervisor_send (&s->sv, &f, fds, nfds);
}

static void
restore_failed (snap_t *s, const char *id, flint_status_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
restore_failed (snap_t *s, const char *id, flint_status_t code, const char *fmt, ...)
{
  char msg[1500];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  reply_restored (s, id, code, msg, 0, NULL, NULL, 0, NULL, 0);
}

static void
handle_restore (snap_t *s, const Flint__Node__V1__Restore *req)
{
  static const char *const names[] = { "slot", "verify", "criu", "total", "cuda" };
  double ph[5] = { 0 };
  uint64_t t0 = flint_now_ns (), t;
  flint_error_t err = FLINT_ERROR_INIT;
  flint_sandbox_spec_t spec, early;
  flint_mount_t table[MAX_MOUNTS];
  const flint_devckpt_ops_t *dev;
  size_t nm;
  _cleanup_free_ char **argv = NULL;
  _cleanup_free_ char **env = NULL;
  _cleanup_free_ flint_image_file_t *files = NULL;
  char sk[32], out[32], er[32], skel[PATH_MAX], opts[64], logp[PATH_MAX + 32], errs[1000], slot_ns[32] = "";
  bool own_net;
  slot_t *sl;
  CriuReq rq = CRIU_REQ__INIT;
  CriuOpts o = CRIU_OPTS__INIT;
  InheritFd inh[3], *inhp[3];
  CriuResp *resp = NULL;
  char **ext = NULL;
  size_t next = 0;
  pid_t pid;
  int fds[3], r;
  _cleanup_close_ int imgfd = -1;

  if (req->sandbox == NULL || req->n_argv == 0 || req->image_dir[0] != '/'
      || flint_supervisor_find (&s->sv, req->replica_id))
    {
      restore_failed (s, req->replica_id, FLINT_EINVAL, "malformed or duplicate restore request");
      return;
    }
  argv = calloc (req->n_argv + 1, sizeof *argv);
  env = calloc (req->sandbox->n_env + 1, sizeof *env);
  files = calloc (req->n_files + 1, sizeof *files);
  if (argv == NULL || env == NULL || files == NULL)
    abort ();
  flint_sandbox_spec_from_proto (req->sandbox, req->replica_id, req->argv, req->n_argv, argv, env, &spec);
  for (size_t i = 0; i < req->n_files; i++)
    {
      snprintf (files[i].path, sizeof files[i].path, "%s", req->files[i]->path);
      files[i].size = req->files[i]->size;
      snprintf (files[i].sha256, sizeof files[i].sha256, "%s", req->files[i]->sha256);
    }

  /* integrity first: a changed or corrupted image is never restored */
  t = flint_now_ns ();
  if (flint_image_verify_cached (req->image_dir, files, req->n_files, &err) < 0
      || flint_image_meta_get (req->image_dir, "socket", sk, sizeof sk, &err) < 0
      || flint_image_meta_get (req->image_dir, "stdout", out, sizeof out, &err) < 0
      || flint_image_meta_get (req->image_dir, "stderr", er, sizeof er, &err) < 0)
    {
      restore_failed (s, req->replica_id, FLINT_EDATALOSS, "image rejected: %s", err.msg);
      return;
    }
  /* images taken before they left namespaces to the slot carry their own (CRIU recreates them) */
  if (flint_image_meta_get (req->image_dir, "slot_ns", slot_ns, sizeof slot_ns, &err) < 0)
    slot_ns[0] = '\0';
  own_net = strstr (slot_ns, "net") == NULL;
  ph[1] = (double) (flint_now_ns () - t) / 1e6;
  dev = flint_devckpt_for (spec.gpu, &err);
  if (dev == NULL || dev->check (req->image_dir, &err) < 0)
    {
      restore_failed (s, req->replica_id, FLINT_EPRECONDITION, "this node cannot restore the image: %s", err.msg);
      return;
    }
  if (flint_sandbox_skeleton (s->sv.node, spec.network, spec.gpu, skel, sizeof skel, &err) < 0)
    {
      restore_failed (s, req->replica_id, FLINT_EINTERNAL, "%s", err.msg);
      return;
    }
  sl = take_slot (s, &ph[0], &err);
  if (sl == NULL)
    {
      restore_failed (s, req->replica_id, FLINT_EINTERNAL, "restore slot: %s", err.msg);
      return;
    }
  s->sv.idle_pending = true; /* refill once the requests waiting now are served */
  /* Memory and pids limits hold from the first restored page on; the CPU quota is applied after
   * the restore, which CRIU does from inside the cgroup and which must not be throttled. */
  early = spec;
  early.cpu_millis = 0;
  if (flint_sandbox_set_limits (sl->sb, &early, &err) < 0)
    {
      slot_discard (sl);
      restore_failed (s, req->replica_id, FLINT_EINTERNAL, "%s", err.msg);
      return;
    }
  if ((r = slot_set_hostname (s, sl, spec.hostname ? spec.hostname : "flint")) < 0)
    {
      slot_discard (sl);
      restore_failed (s, req->replica_id, FLINT_EINTERNAL, "restore slot: set the hostname: %s", strerror (-r));
      return;
    }
  if (spec.tmp_bytes && spec.tmp_bytes != sl->tmp_size)
    {
      snprintf (opts, sizeof opts, "size=%llu", (unsigned long long) spec.tmp_bytes);
      if (mount (NULL, sl->tmp, NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV, opts) == 0)
        sl->tmp_size = spec.tmp_bytes;
    }

  nm = flint_sandbox_mount_table (s->sv.node, &spec, table, MAX_MOUNTS);
  for (size_t i = 0; i < nm; i++)
    {
      if (table[i].kind == FLINT_MNT_BIND_RO || table[i].kind == FLINT_MNT_BIND_DEV)
        {
          char staged[PATH_MAX + 64];
          if (reachable_by_anyone (table[i].host))
            add_str (&ext, &next, "mnt[%s]:%s", table[i].key, table[i].host);
          else if (stage_source (sl, table[i].key, table[i].host, staged, sizeof staged, &err) == 0)
            add_str (&ext, &next, "mnt[%s]:%s", table[i].key, staged);
          else
            {
              free_strs (ext, next);
              slot_discard (sl);
              restore_failed (s, req->replica_id, FLINT_EINTERNAL, "%s", err.msg);
              return;
            }
        }
      else if (table[i].kind == FLINT_MNT_TMPFS)
        add_str (&ext, &next, "mnt[%s]:%s", table[i].key, sl->tmp);
    }
  for (int i = 0; i < 3; i++)
    {
      inherit_fd__init (&inh[i]);
      inhp[i] = &inh[i];
    }
  inh[0].fd = sl->chan[1];
  if (asprintf (&inh[0].key, "socket:[%s]", sk) < 0 || asprintf (&inh[1].key, "pipe:[%s]", out) < 0
      || asprintf (&inh[2].key, "pipe:[%s]", er) < 0)
    abort ();
  inh[1].fd = sl->out[1];
  inh[2].fd = sl->err[1];

  /* CRIU opens the directory through /proc/<our pid>/fd/<fd> */
  imgfd = open (req->image_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (imgfd < 0)
    {
      free_strs (ext, next);
      for (int i = 0; i < 3; i++)
        free (inh[i].key);
      slot_discard (sl);
      restore_failed (s, req->replica_id, FLINT_EINTERNAL, "open the image `%s`: %s", req->image_dir, strerror (errno));
      return;
    }
  rq.type = CRIU_REQ_TYPE__RESTORE;
  rq.opts = &o;
  o.images_dir_fd = imgfd;
  o.has_work_dir_fd = 1;
  o.work_dir_fd = sl->work_fd;
  o.log_file = (char *) "restore.log";
  o.has_log_level = 1;
  o.log_level = s->criu_log_dir[0] ? 4 : 1; /* errors only: what a failure message quotes; warnings cost time */
  o.has_rst_sibling = 1;
  o.rst_sibling = 1;
  o.root = skel;
  o.has_network_lock = 1;
  o.network_lock = CRIU_NETWORK_LOCK_METHOD__SKIP;
  o.has_manage_cgroups_mode = 1;
  o.manage_cgroups_mode = CRIU_CG_MODE__IGNORE;
  if (own_net)
    {
      /* a new, empty one (CRIU's own netns restore execs `ip`); lo is brought up below */
      o.has_empty_ns = 1;
      o.empty_ns = CLONE_NEWNET;
    }
  o.n_inherit_fd = 3;
  o.inherit_fd = inhp;
  o.n_external = next;
  o.external = ext;

  t = flint_now_ns ();
  if (fault (s, "snapshot-restore"))
    r = flint_error_set (&err, FLINT_EINTERNAL, "fault injected (FLINT_FAULT=snapshot-restore)");
  else
    r = flint_criu_call (&sl->criu, &rq, &resp, &err);
  free_strs (ext, next);
  for (int i = 0; i < 3; i++)
    free (inh[i].key);
  if (r < 0 || !resp->success || !resp->restore || resp->restore->pid <= 0)
    {
      snprintf (logp, sizeof logp, "%s/work/restore.log", sl->dir);
      log_errors (logp, errs, sizeof errs);
      if (r == 0)
        snprintf (err.msg, sizeof err.msg, "%s", errs[0] ? errs : (resp->cr_errmsg ? resp->cr_errmsg : "no reason in restore.log"));
      if (resp)
        criu_resp__free_unpacked (resp, NULL);
      /* whatever CRIU created dies with the slot's cgroup */
      slot_discard (sl);
      restore_failed (s, req->replica_id, FLINT_EINTERNAL, "criu restore failed: %s", err.msg);
      return;
    }
  ph[2] = (double) (flint_now_ns () - t) / 1e6;
  keep_log (s, sl, req->replica_id);
  pid = resp->restore->pid;
  criu_resp__free_unpacked (resp, NULL);

  flint_sandbox_set_id (sl->sb, req->replica_id);
  flint_sandbox_adopt (sl->sb, pid);
  flint_supervisor_adopt (&s->sv, sl->sb);
  if (own_net && (r = loopback_up_in (s, pid)) < 0)
    flint_warn ("replica %s: its loopback interface stays down: %s", req->replica_id, strerror (-r));
  if (flint_sandbox_set_limits (sl->sb, &spec, &err) < 0)
    flint_warn ("replica %s: %s", req->replica_id, err.msg);
  t = flint_now_ns ();
  r = dev->restore (pid, &err);
  ph[4] = (double) (flint_now_ns () - t) / 1e6;
  if (r < 0)
    {
      /* the process exists but is unusable: flintd hears of it through Exited */
      flint_sandbox_kill (sl->sb);
      sl->sb = NULL;
      slot_release (sl, false);
      restore_failed (s, req->replica_id, FLINT_EINTERNAL, "%s restore of the device state: %s", dev->name, err.msg);
      return;
    }
  if (req->frozen && (r = flint_sandbox_freeze (sl->sb, true)) < 0)
    flint_warn ("replica %s: cannot park it frozen: %s", req->replica_id, strerror (-r));
  sl->sb = NULL;
  ph[3] = (double) (flint_now_ns () - t0) / 1e6;
  fds[0] = sl->chan[0];
  fds[1] = sl->out[0];
  fds[2] = sl->err[0];
  /* "cuda" only for devices that have a restore step of their own */
  reply_restored (s, req->replica_id, FLINT_OK, NULL, pid, ph, names, dev == &flint_devckpt_none ? 4 : 5, fds, 3);
  /* the slot's ends are the replica's now (or flintd's): close ours, let criu exit */
  slot_release (sl, false);
}

static void
handle (flint_supervisor_t *sv, node_frame_t *f, int *fds, size_t nfds, void *data)
{
  snap_t *s = data;
  (void) sv;
  for (size_t i = 0; i < nfds; i++)
    close (fds[i]);
  if (f->msg_case == FLINT__NODE__V1__NODE_FRAME__MSG_DUMP)
    handle_dump (s, f->dump);
  else if (f->msg_case == FLINT__NODE__V1__NODE_FRAME__MSG_RESTORE)
    handle_restore (s, f->restore);
}

/* ---- start-up ---------------------------------------------------------------------------- */

static bool
version_ok (const char *v)
{
  int maj = 0, min = 0;
  sscanf (v, "%d.%d", &maj, &min);
  return maj > 4 || (maj == 4 && min >= 1);
}

/* `criu check`'s basic part over RPC: the kernel has what checkpoint/restore needs. */
static int
criu_check (snap_t *s, const char *dir, flint_error_t *err)
{
  flint_criu_t c = { -1, -1 };
  CriuReq req = CRIU_REQ__INIT;
  CriuOpts o = CRIU_OPTS__INIT;
  CriuResp *resp = NULL;
  int r;

  _cleanup_close_ int dirfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  if (dirfd < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "open `%s`", dir);
  req.type = CRIU_REQ_TYPE__CHECK;
  req.opts = &o;
  o.images_dir_fd = dirfd;
  o.log_file = (char *) "check.log";
  o.has_log_level = 1;
  o.log_level = 1;
  if (flint_criu_spawn (s->opts.criu, &dirfd, 1, NULL, NULL, &c, err) < 0)
    return -1;
  r = flint_criu_call (&c, &req, &resp, err);
  flint_criu_close (&c, false);
  if (r < 0)
    return -1;
  r = resp->success ? 0 : -1;
  criu_resp__free_unpacked (resp, NULL);
  if (r < 0)
    return flint_error_set (err, FLINT_EPRECONDITION,
                            "`criu check` fails: this kernel lacks features checkpoint/restore needs (run `%s check` "
                            "for details)",
                            s->opts.criu);
  return 0;
}

/* Where CRIU keeps its kernel feature cache (compiled into criu by scripts/build-criu: the first
 * of /run and /dev/shm that is a tmpfs). Empty when it keeps none: every call then re-probes. */
static void
find_kdat (snap_t *s)
{
  static const char *const dirs[] = { "/run", "/dev/shm" };
  struct statfs sfs;

  s->kdat[0] = '\0';
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (dirs); i++)
    {
      char p[64];
      snprintf (p, sizeof p, "%s/criu.kdat", dirs[i]);
      if (access (p, F_OK) == 0 && statfs (dirs[i], &sfs) == 0 && sfs.f_type == TMPFS_MAGIC)
        {
          snprintf (s->kdat, sizeof s->kdat, "%s", p);
          return;
        }
    }
}

/* The private mount namespace and the staging tmpfs (see the file comment). */
static int
setup_mounts (snap_t *s, flint_error_t *err)
{
  s->host_mntns = open ("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
  if (s->host_mntns < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "open our mount namespace");
  if (flint_mkdir_p (s->opts.stage_dir, 0711) < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "create `%s`", s->opts.stage_dir);
  if (unshare (CLONE_NEWNS) < 0 || mount (NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "a private mount namespace");
  if (mount ("flint-stage", s->opts.stage_dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0711,size=1m") < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "mount the staging tmpfs at `%s`", s->opts.stage_dir);
  if (!reachable_by_anyone (s->opts.stage_dir))
    return flint_error_set (err, FLINT_EPRECONDITION,
                            "`%s` is below a directory other users cannot traverse: CRIU could not reach the mount "
                            "sources staged there",
                            s->opts.stage_dir);
  return 0;
}

static void
send_status (snap_t *s, bool ok, const char *message)
{
  Flint__Node__V1__HelperStatus st = FLINT__NODE__V1__HELPER_STATUS__INIT;
  Flint__Node__V1__NodeFrame f = FLINT__NODE__V1__NODE_FRAME__INIT;
  Flint__Node__V1__HelperStatus__InfoEntry e[4], *ep[4];
  const char *k[4] = { "criu", "kernel", "kdat", "criu_path" };
  const char *v[4] = { s->criu_version, s->kernel, s->kdat, s->opts.criu };

  for (int i = 0; i < 4; i++)
    {
      flint__node__v1__helper_status__info_entry__init (&e[i]);
      e[i].key = (char *) k[i];
      e[i].value = (char *) v[i];
      ep[i] = &e[i];
    }
  st.ok = ok;
  st.message = (char *) message;
  st.n_info = 4;
  st.info = ep;
  f.msg_case = FLINT__NODE__V1__NODE_FRAME__MSG_STATUS;
  f.status = &st;
  flint_supervisor_send (&s->sv, &f, NULL, 0);
}

int
flint_snapshotter_main (int sock, const flint_snapshotter_options_t *opts)
{
  static snap_t s;
  flint_error_t err = FLINT_ERROR_INIT;
  flint_sandbox_options_t so = { .isolate = true, .userns = opts->userns, .uid_base = 100000, .uid = 65534,
                                 .gid = 65534 };
  char sbdir[PATH_MAX], status[1536], dir[PATH_MAX], gpu[512];
  struct utsname un;
  int sfd, r;

  memset (&s, 0, sizeof s);
  s.opts = *opts;
  s.sv.sock = sock;
  s.sv.handle = handle;
  s.sv.idle = refill_cb;
  s.sv.data = &s;
  s.host_mntns = -1;
  if (getenv ("FLINT_FAULT"))
    snprintf (s.fault, sizeof s.fault, "%s", getenv ("FLINT_FAULT"));
  if (getenv ("FLINT_CRIU_LOG_DIR"))
    snprintf (s.criu_log_dir, sizeof s.criu_log_dir, "%s", getenv ("FLINT_CRIU_LOG_DIR"));
  signal (SIGPIPE, SIG_IGN);
  sfd = flint_supervisor_sigchld_fd ();
  for (int i = 0; i < NS_COUNT; i++)
    {
      char p[32];
      snprintf (p, sizeof p, "/proc/self/ns/%s", ns_name[i]);
      s.own_ns[i] = open (p, O_RDONLY | O_CLOEXEC);
    }
  if (sfd < 0 || s.own_ns[NS_UTS] < 0 || s.own_ns[NS_IPC] < 0 || s.own_ns[NS_NET] < 0)
    {
      flint_err ("setup: %s", strerror (errno));
      return 1;
    }
  uname (&un);
  snprintf (s.kernel, sizeof s.kernel, "%s", un.release);
  if (access (opts->criu, X_OK) < 0)
    {
      snprintf (status, sizeof status,
                "CRIU is not installed (no `%s`): snapshots need CRIU >= 4.1 (run scripts/build-criu)", opts->criu);
      send_status (&s, false, status);
      return 1;
    }
  if (flint_criu_version (opts->criu, s.criu_version, sizeof s.criu_version, &err) < 0)
    {
      snprintf (status, sizeof status, "CRIU at `%s` does not answer: %s (run scripts/build-criu)", opts->criu,
                err.msg);
      send_status (&s, false, status);
      return 1;
    }
  if (!version_ok (s.criu_version))
    {
      snprintf (status, sizeof status, "CRIU %s at `%s` is too old: snapshots need CRIU >= 4.1 (run scripts/build-criu)",
                s.criu_version, opts->criu);
      send_status (&s, false, status);
      return 1;
    }
  snprintf (dir, sizeof dir, "%s/snapshotter", opts->run_dir);
  flint_rm_rf (dir); /* slots of an earlier run */
  flint_mkdir_p (dir, 0700);
  if (criu_check (&s, dir, &err) < 0)
    {
      send_status (&s, false, err.msg);
      return 1;
    }
  find_kdat (&s);
  if (setup_mounts (&s, &err) < 0)
    {
      send_status (&s, false, err.msg);
      return 1;
    }
  snprintf (sbdir, sizeof sbdir, "%s/sandbox", opts->run_dir);
  so.run_dir = sbdir;
  so.cgroup_parent = opts->cgroup_parent;
  r = flint_sandbox_node_new (&so, &s.sv.node, &err);
  if (r < 0)
    {
      send_status (&s, false, err.msg);
      return 1;
    }
  flint_sandbox_node_cleanup_stale (s.sv.node);
  for (unsigned i = 0; i < opts->slots && i < MAX_SLOTS; i++)
    if (slot_prepare (&s, &s.slots[i], &err) < 0)
      {
        snprintf (status, sizeof status, "cannot prepare a restore slot: %s", err.msg);
        send_status (&s, false, status);
        flint_sandbox_node_free (s.sv.node);
        return 1;
      }
  flint_devckpt_probe (gpu, sizeof gpu);
  snprintf (status, sizeof status, "CRIU %s (%s), kernel %s, %u restore slots, kernel feature cache %s; %s",
            s.criu_version, opts->criu, s.kernel, opts->slots,
            s.kdat[0] ? s.kdat : "none (CRIU keeps it only on a tmpfs: each call re-probes the kernel)", gpu);
  send_status (&s, true, status);
  r = flint_supervisor_run (&s.sv, sfd);
  for (unsigned i = 0; i < MAX_SLOTS; i++)
    if (s.slots[i].ready)
      slot_discard (&s.slots[i]);
  /* reap the slots' criu processes, so the cgroups can go */
  while (waitpid (-1, NULL, WNOHANG) > 0)
    ;
  flint_rm_rf (dir);
  flint_sandbox_node_remove_parent (s.sv.node);
  flint_sandbox_node_free (s.sv.node);
  flint_map_free (&s.sv.by_id);
  flint_map_free (&s.sv.by_pid);
  return r;
}
