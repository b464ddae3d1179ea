/* flintd's lifecycle: directories and locks, the registry, helper processes, the gRPC server,
 * signals, and an orderly shutdown.
 *
 * Start-up order matters: the state lock first (one flintd per state directory), then the
 * registry and endpoints (so requests arriving at once find them), then the spawner, then the
 * listeners. Shutdown reverses it: stop accepting, fail what waits, stop workers, close. */
#include "daemon.h"
#include "api.h"
#include "grpc_server.h"
#include "flint/cleanup.h"
#include "flint/log.h"
#include "flint/util.h"
#include "flint-config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <unistd.h>

static int lock_fd = -1;

int
flint__daemon_path (const flint_daemon_t *d, char *buf, size_t len, const char *fmt, ...)
{
  va_list ap;
  int n;
  (void) d;
  va_start (ap, fmt);
  n = vsnprintf (buf, len, fmt, ap);
  va_end (ap);
  return n < 0 || (size_t) n >= len ? -ENAMETOOLONG : 0;
}

static int
prepare_dirs (flint_daemon_t *d, flint_error_t *err)
{
  const flint_daemon_config_t *c = &d->cfg;
  char path[PATH_MAX];
  static const char *const state_sub[] = { "bundles", "tmp", "logs", "secrets" };
  struct statfs sfs;
  int r;

  r = flint_mkdir_p (c->state_dir, 0700);
  if (r < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, r, "create state directory `%s`", c->state_dir);
  chmod (c->state_dir, 0700);
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (state_sub); i++)
    {
      snprintf (path, sizeof path, "%s/%s", c->state_dir, state_sub[i]);
      r = flint_mkdir_p (path, 0700);
      if (r < 0)
        return flint_error_set_errno (err, FLINT_EINTERNAL, r, "create `%s`", path);
    }
  /* uploads and extractions interrupted by a crash are garbage now */
  snprintf (path, sizeof path, "%s/tmp", c->state_dir);
  flint_rm_rf (path);
  flint_mkdir_p (path, 0700);

  /* One flintd per state directory. */
  snprintf (path, sizeof path, "%s/flintd.lock", c->state_dir);
  lock_fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "open `%s`", path);
  if (flock (lock_fd, LOCK_EX | LOCK_NB) < 0)
    return flint_error_set (err, FLINT_EPRECONDITION, "another flintd is using the state directory `%s`",
                            c->state_dir);

  /* The run directory holds the weight store and snapshot images: it must be memory (tmpfs),
   * root-only. Mount one if the directory is not already on tmpfs. */
  r = flint_mkdir_p (c->run_dir, 0700);
  if (r < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, r, "create run directory `%s`", c->run_dir);
  if (statfs (c->run_dir, &sfs) == 0 && sfs.f_type != TMPFS_MAGIC)
    {
      if (mount ("flint-run", c->run_dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700") < 0)
        flint_warn ("cannot mount a tmpfs at `%s` (%s): weights and snapshot images will live on disk", c->run_dir,
                    strerror (errno));
      else
        flint_info ("mounted a tmpfs at `%s`", c->run_dir);
    }
  chmod (c->run_dir, 0700);
  return 0;
}

/* Refuses to start when another process already serves the unix socket; removes a stale one. */
static int
claim_socket (const char *path, flint_error_t *err)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  _cleanup_close_ int fd = -1;

  if (strlen (path) >= sizeof sa.sun_path)
    return flint_error_set (err, FLINT_EINVAL, "socket path `%s` is too long", path);
  strcpy (sa.sun_path, path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && connect (fd, (struct sockaddr *) &sa, sizeof sa) == 0)
    return flint_error_set (err, FLINT_EPRECONDITION, "another flintd is listening on `%s`", path);
  unlink (path);
  return 0;
}

int
flint__find_helper (const char *libexec_dir, const char *name, char *out, size_t len, flint_error_t *err)
{
  /* --libexec-dir, then $FLINT_LIBEXEC_DIR, then the build tree next to this binary (flintd in
   * build/runtime, helpers in build/worker, build/sandbox, build/snapshotter), then the
   * installed location. */
  char self[PATH_MAX], cand[PATH_MAX];
  const char *env = getenv ("FLINT_LIBEXEC_DIR");
  static const char *const build_dirs[] = { "worker", "sandbox", "snapshotter" };
  ssize_t n;

  if (libexec_dir && *libexec_dir)
    {
      snprintf (out, len, "%s/%s", libexec_dir, name);
      if (access (out, X_OK) == 0)
        return 0;
      return flint_error_set_errno (err, FLINT_EPRECONDITION, errno, "`%s` not found in --libexec-dir", out);
    }
  if (env && *env)
    {
      snprintf (out, len, "%s/%s", env, name);
      if (access (out, X_OK) == 0)
        return 0;
    }
  n = readlink ("/proc/self/exe", self, sizeof self - 1);
  if (n > 0)
    {
      char *slash;
      self[n] = '\0';
      slash = strrchr (self, '/');
      if (slash)
        {
          *slash = '\0';
          for (size_t i = 0; i < FLINT_ARRAY_SIZE (build_dirs); i++)
            {
              snprintf (cand, sizeof cand, "%s/../%s/%s", self, build_dirs[i], name);
              if (access (cand, X_OK) == 0)
                {
                  if (realpath (cand, out) == NULL)
                    snprintf (out, len, "%s", cand);
                  return 0;
                }
            }
          snprintf (cand, sizeof cand, "%s/%s", self, name);
          if (access (cand, X_OK) == 0)
            {
              snprintf (out, len, "%s", cand);
              return 0;
            }
        }
    }
  snprintf (out, len, "%s/flint/%s", FLINT_LIBEXECDIR, name);
  if (access (out, X_OK) == 0)
    return 0;
  return flint_error_set (err, FLINT_EPRECONDITION,
                          "`%s` not found (looked next to flintd, in $FLINT_LIBEXEC_DIR and in %s/flint): "
                          "build with meson or pass --libexec-dir", name, FLINT_LIBEXECDIR);
}

static void
signal_cb (uv_signal_t *s, int signum)
{
  flint_daemon_t *d = s->data;
  if (d->shutting_down)
    return;
  flint_info ("received %s: shutting down", signum == SIGTERM ? "SIGTERM" : "SIGINT");
  uv_stop (d->loop);
}

int
flint_daemon_new (const flint_daemon_config_t *cfg, flint_daemon_t **out, flint_error_t *err)
{
  flint_daemon_t *d = calloc (1, sizeof *d);
  char path[PATH_MAX];
  flint_grpc_opts_t gopts = { .max_recv_message = (1u << 30) + (1u << 20), .max_send_message = (1u << 30) + (1u << 20) };

  if (d == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  *out = d; /* even on failure: flint_daemon_free() releases what was set up */
  d->cfg = *cfg;
  d->started_ns = flint_now_ns ();
  flint_list_init (&d->log_streams);
  flint_list_init (&d->deploys);
  d->loop = calloc (1, sizeof *d->loop);
  if (d->loop == NULL || uv_loop_init (d->loop) < 0)
    return flint_error_set (err, FLINT_EINTERNAL, "uv_loop_init failed");

  if (prepare_dirs (d, err) < 0)
    return -1;

  if (flint__find_helper (cfg->libexec_dir, "flint-worker", path, sizeof path, err) < 0)
    return -1;
  d->worker_path = strdup (path);

  snprintf (path, sizeof path, "%s/registry.db", cfg->state_dir);
  if (flint_registry_open (path, &d->reg, err) < 0)
    return -1;
  if (flint__endpoints_load (d, err) < 0)
    return -1;

  /* the spawner: sandboxes are built by a single-threaded helper (see sandbox/spawner.c) */
  d->spawner.d = d;
  d->spawner.name = "spawner";
  d->spawner.frame_cb = flint__replica_on_helper_frame;
  d->spawner.lost_cb = flint__replicas_helper_lost;
  {
    static char argbuf[6][PATH_MAX];
    int i = 0;
    if (flint__find_helper (cfg->libexec_dir, "flint-spawner", argbuf[0], PATH_MAX, err) < 0)
      return -1;
    d->spawner.argv[i++] = argbuf[0];
    if (!cfg->isolate)
      d->spawner.argv[i++] = (char *) "--no-isolation";
    d->spawner.argv[i++] = (char *) "--run-dir";
    snprintf (argbuf[1], PATH_MAX, "%s/sandbox", cfg->run_dir);
    d->spawner.argv[i++] = argbuf[1];
    d->spawner.argv[i++] = (char *) "--cgroup-parent";
    {
      /* cgroups are named after the state directory, so several flintd (tests) never collide */
      char sha[FLINT_SHA256_HEX_LEN];
      flint_sha256_buf (cfg->state_dir, strlen (cfg->state_dir), sha);
      snprintf (argbuf[2], PATH_MAX, "flint-%.12s", sha);
    }
    d->spawner.argv[i++] = argbuf[2];
    d->spawner.argv[i] = NULL;
  }
  if (flint__helper_start_wait (&d->spawner, 10000, err) < 0)
    return -1;
  /* snapshots are optional: without them (or CRIU) every endpoint starts cold */
  flint__snapshots_start (d);

  if (flint_grpc_server_new (d->loop, &gopts, &d->grpc, err) < 0)
    return -1;
  if (flint__api_grpc_register (d, err) < 0)
    return -1;
  if (cfg->socket_path && *cfg->socket_path)
    {
      char addr[PATH_MAX + 8];
      if (claim_socket (cfg->socket_path, err) < 0)
        return -1;
      snprintf (addr, sizeof addr, "unix:%s", cfg->socket_path);
      if (flint_grpc_server_listen (d->grpc, addr, err) < 0)
        return -1;
    }
  if (cfg->listen_addr && *cfg->listen_addr && flint_grpc_server_listen (d->grpc, cfg->listen_addr, err) < 0)
    return -1;
  if (flint_grpc_server_start (d->grpc, err) < 0)
    return -1;
  if (cfg->socket_path && *cfg->socket_path)
    chmod (cfg->socket_path, 0600);
  if (flint__http_start (d, err) < 0)
    return -1;

  d->sig_term = calloc (1, sizeof *d->sig_term);
  d->sig_int = calloc (1, sizeof *d->sig_int);
  uv_signal_init (d->loop, d->sig_term);
  uv_signal_init (d->loop, d->sig_int);
  d->sig_term->data = d->sig_int->data = d;
  uv_signal_start (d->sig_term, signal_cb, SIGTERM);
  uv_signal_start (d->sig_int, signal_cb, SIGINT);
  flint__autoscaler_start (d);
  flint__engine_stats_start (d);
  return 0;
}

static void
free_handle_cb (uv_handle_t *h)
{
  free (h);
}

static void
shutdown_all (flint_daemon_t *d)
{
  const char *key;
  void *val;

  d->shutting_down = true;
  flint__autoscaler_stop (d);
  flint__engine_stats_stop (d);
  flint__http_stop (d);
  flint__api_watch_shutdown (d);
  flint__logs_rpc_shutdown (d);
  /* fail what waits, then what runs: workers die with the spawner's socket */
  for (size_t it = 0; flint_map_next (&d->endpoints, &it, &key, &val);)
    {
      flint_endpoint_t *ep = val;
      while (!flint_list_empty (&ep->queue))
        flint__request_complete (flint_list_entry (ep->queue.next, flint_request_t, link), FLINT_EUNAVAILABLE,
                                 "flintd is shutting down", NULL, 0);
    }
  flint__snapshots_stop (d);
  flint__helper_stop (&d->spawner);
  flint__replicas_helper_lost (&d->spawner);
  flint__deploys_shutdown (d);
  flint_grpc_server_free (d->grpc);
  d->grpc = NULL;
  if (d->sig_term)
    uv_close ((uv_handle_t *) d->sig_term, free_handle_cb);
  if (d->sig_int)
    uv_close ((uv_handle_t *) d->sig_int, free_handle_cb);
  d->sig_term = d->sig_int = NULL;
  /* The helpers exit on their own once their sockets close, after killing their sandboxes and
   * removing their cgroups; a signal now would cut that short and leave cgroups behind.
   * flint_daemon_run waits for them (and kills what does not go). */
}

/* Helpers still running after the grace period are killed. */
static void
kill_helpers (flint_daemon_t *d)
{
  if (d->spawner.proc)
    uv_process_kill (d->spawner.proc, SIGKILL);
  if (d->snapshotter.proc)
    uv_process_kill (d->snapshotter.proc, SIGKILL);
}

int
flint_daemon_run (flint_daemon_t *d)
{
  uint64_t until;

  uv_run (d->loop, UV_RUN_DEFAULT);
  shutdown_all (d);
  /* let handles close and the helpers exit (their exit callbacks free the process handles) */
  until = flint_now_ns () + 5000000000ull;
  while (uv_run (d->loop, UV_RUN_NOWAIT) != 0 && flint_now_ns () < until)
    usleep (1000);
  if (d->spawner.proc || d->snapshotter.proc)
    {
      flint_warn ("node helpers did not exit within 5 s of shutdown: killing them");
      kill_helpers (d);
      until = flint_now_ns () + 1000000000ull;
      while (uv_run (d->loop, UV_RUN_NOWAIT) != 0 && flint_now_ns () < until)
        usleep (1000);
    }
  return 0;
}

void
flint_daemon_free (flint_daemon_t *d)
{
  if (d == NULL)
    return;
  if (!d->shutting_down && d->loop)
    {
      /* a start-up that failed half way: stop what was started */
      shutdown_all (d);
      for (int i = 0; i < 1000 && uv_run (d->loop, UV_RUN_NOWAIT) != 0; i++)
        usleep (1000);
    }
  flint__http_free (d);
  flint__endpoints_free (d);
  flint_map_free (&d->replicas);
  flint_registry_close (d->reg);
  free (d->worker_path);
  if (d->loop)
    {
      uv_loop_close (d->loop);
      free (d->loop);
    }
  if (lock_fd >= 0)
    close (lock_fd);
  free (d);
}
