/* The spawner service: a small single-threaded process that creates sandboxed workers on behalf
 * of flintd and reports their deaths. It exists because sandboxes cannot be built from flintd
 * itself: gRPC's threads make unshare(CLONE_NEWUSER) fail and fork from a threaded process is
 * slow and unsafe. flintd starts it (flint-spawner, fd 3 = socket) and restarts it if it dies.
 *
 * Protocol (proto/flint/node/v1/node.proto): Spawn (+ channel and log fds) → Spawned;
 * Kill → (later) Exited; a worker dying on its own → Exited. When flintd closes the socket the
 * spawner kills every sandbox it owns, reaps them and exits: workers never outlive it. */
#include "spawner.h"
#include "sandbox.h"
#include "flint/cleanup.h"
#include "flint/frame.h"
#include "flint/log.h"
#include "flint/map.h"
#include "flint/util.h"
#include "flint/node/v1/node.pb-c.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

typedef Flint__Node__V1__NodeFrame node_frame_t;

typedef struct spawner_s {
  int sock;
  flint_sandbox_node_t *node;
  flint_map_t by_id;    /* replica id → sandbox */
  flint_map_t by_pid;   /* decimal pid → sandbox */
} spawner_t;

static void
send_node_frame (spawner_t *sp, node_frame_t *f)
{
  int r = flint_frame_send (sp->sock, &f->base, NULL, 0);
  if (r < 0)
    flint_err ("send to flintd: %s", strerror (-r));
}

static void
reply_spawned (spawner_t *sp, const char *id, bool ok, const char *error, pid_t pid,
               const flint_sandbox_timings_t *t, int channel)
{
  Flint__Node__V1__Spawned s = FLINT__NODE__V1__SPAWNED__INIT;
  node_frame_t f = FLINT__NODE__V1__NODE_FRAME__INIT;
  Flint__Node__V1__Spawned__PhasesMsEntry e[FLINT_SANDBOX_PHASES];
  Flint__Node__V1__Spawned__PhasesMsEntry *ep[FLINT_SANDBOX_PHASES];
  static const char *const names[FLINT_SANDBOX_PHASES] = { "clone", "cgroup", "mounts", "seccomp", "exec", "total" };

  s.replica_id = (char *) id;
  s.ok = ok;
  s.error = (char *) (error ? error : "");
  s.pid = pid;
  if (t)
    {
      const double v[FLINT_SANDBOX_PHASES] = { t->clone_ms, t->cgroup_ms, t->mounts_ms, t->seccomp_ms, t->exec_ms,
                                               t->total_ms };
      for (int i = 0; i < FLINT_SANDBOX_PHASES; i++)
        {
          flint__node__v1__spawned__phases_ms_entry__init (&e[i]);
          e[i].key = (char *) names[i];
          e[i].value = v[i];
          ep[i] = &e[i];
        }
      s.n_phases_ms = FLINT_SANDBOX_PHASES;
      s.phases_ms = ep;
    }
  f.msg_case = FLINT__NODE__V1__NODE_FRAME__MSG_SPAWNED;
  f.spawned = &s;
  if (channel >= 0)
    {
      int r = flint_frame_send (sp->sock, &f.base, &channel, 1);
      if (r < 0)
        flint_err ("send to flintd: %s", strerror (-r));
    }
  else
    send_node_frame (sp, &f);
}

static void
handle_spawn (spawner_t *sp, const Flint__Node__V1__Spawn *req, int *fds, size_t nfds)
{
  const Flint__Node__V1__SandboxSpec *ss = req->sandbox;
  flint_sandbox_spec_t spec = { 0 };
  flint_sandbox_timings_t t;
  flint_error_t err = FLINT_ERROR_INIT;
  flint_sandbox_t *sb = NULL;
  _cleanup_free_ char **argv = NULL;
  _cleanup_free_ char **env = NULL;
  _cleanup_free_ const char **fnames = NULL;
  _cleanup_free_ const void **fdata = NULL;
  _cleanup_free_ size_t *flens = NULL;
  char pidkey[24];
  int channel = -1;

  if (nfds != 2 || ss == NULL || req->n_argv == 0 || flint_map_get (&sp->by_id, req->replica_id))
    {
      reply_spawned (sp, req->replica_id, false,
                     nfds != 2 ? "spawn request without its stdout and stderr fds" : "malformed or duplicate spawn request",
                     0, NULL, -1);
      return;
    }
  argv = calloc (req->n_argv + 1, sizeof *argv);
  env = calloc (ss->n_env + 1, sizeof *env);
  fnames = calloc (ss->n_files + 1, sizeof *fnames);
  fdata = calloc (ss->n_files + 1, sizeof *fdata);
  flens = calloc (ss->n_files + 1, sizeof *flens);
  if (!argv || !env || !fnames || !fdata || !flens)
    abort ();
  for (size_t i = 0; i < req->n_argv; i++)
    argv[i] = req->argv[i];
  for (size_t i = 0; i < ss->n_env; i++)
    env[i] = ss->env[i];
  for (size_t i = 0; i < ss->n_files; i++)
    {
      fnames[i] = ss->files[i]->key;
      fdata[i] = ss->files[i]->value.data;
      flens[i] = ss->files[i]->value.len;
    }
  spec.id = req->replica_id;
  spec.bundle_dir = ss->bundle_dir;
  spec.weights_dir = ss->weights_dir[0] ? ss->weights_dir : NULL;
  spec.argv = argv;
  spec.env = env;
  spec.file_names = fnames;
  spec.file_data = fdata;
  spec.file_lens = flens;
  spec.memory_bytes = ss->memory_bytes;
  spec.cpu_millis = ss->cpu_millis;
  spec.pids_max = ss->pids_max;
  spec.tmp_bytes = ss->tmp_bytes;
  spec.nofile = ss->nofile;
  spec.network = ss->network;
  spec.gpu = ss->gpu;
  spec.hostname = ss->hostname[0] ? ss->hostname : "flint";
  spec.stdout_fd = fds[0];
  spec.stderr_fd = fds[1];

  if (flint_sandbox_spawn (sp->node, &spec, &sb, &channel, &t, &err) < 0)
    {
      reply_spawned (sp, req->replica_id, false, err.msg, 0, NULL, -1);
      return;
    }
  flint_map_put (&sp->by_id, req->replica_id, sb);
  snprintf (pidkey, sizeof pidkey, "%d", (int) flint_sandbox_pid (sb));
  flint_map_put (&sp->by_pid, pidkey, sb);
  reply_spawned (sp, req->replica_id, true, NULL, flint_sandbox_pid (sb), &t, channel);
  close (channel);
}

static void
report_exit (spawner_t *sp, flint_sandbox_t *sb, int status)
{
  Flint__Node__V1__Exited ex = FLINT__NODE__V1__EXITED__INIT;
  node_frame_t f = FLINT__NODE__V1__NODE_FRAME__INIT;
  flint_sandbox_exit_t info;
  char id[128], pidkey[24];
  pid_t pid = flint_sandbox_pid (sb);

  snprintf (id, sizeof id, "%s", flint_sandbox_id (sb));
  snprintf (pidkey, sizeof pidkey, "%d", (int) pid);
  flint_map_del (&sp->by_id, id);
  flint_map_del (&sp->by_pid, pidkey);
  flint_sandbox_finish (sb, status, &info);
  ex.replica_id = id;
  ex.pid = pid;
  ex.wait_status = info.wait_status;
  ex.oom_killed = info.oom_killed;
  ex.memory_limit = info.memory_limit;
  ex.pids_limit_hit = info.pids_limit_hit;
  ex.reason = info.reason;
  f.msg_case = FLINT__NODE__V1__NODE_FRAME__MSG_EXITED;
  f.exited = &ex;
  send_node_frame (sp, &f);
}

static void
reap (spawner_t *sp)
{
  for (;;)
    {
      int status;
      char pidkey[24];
      flint_sandbox_t *sb;
      pid_t pid = waitpid (-1, &status, WNOHANG);

      if (pid <= 0)
        return;
      snprintf (pidkey, sizeof pidkey, "%d", (int) pid);
      sb = flint_map_get (&sp->by_pid, pidkey);
      if (sb)
        report_exit (sp, sb, status);
    }
}

static void
kill_all_and_exit (spawner_t *sp, int code)
{
  const char *key;
  void *val;

  for (size_t it = 0; flint_map_next (&sp->by_id, &it, &key, &val);)
    flint_sandbox_kill (val);
  while (sp->by_id.len > 0)
    {
      int status;
      pid_t pid = waitpid (-1, &status, 0);
      char pidkey[24];
      flint_sandbox_t *sb;

      if (pid < 0)
        break;
      snprintf (pidkey, sizeof pidkey, "%d", (int) pid);
      sb = flint_map_get (&sp->by_pid, pidkey);
      if (sb)
        {
          char id[128];
          snprintf (id, sizeof id, "%s", flint_sandbox_id (sb));
          flint_map_del (&sp->by_id, id);
          flint_map_del (&sp->by_pid, pidkey);
          flint_sandbox_finish (sb, status, NULL);
        }
    }
  flint_sandbox_node_free (sp->node);
  flint_map_free (&sp->by_id);
  flint_map_free (&sp->by_pid);
  exit (code);
}

int
flint_spawner_main (int sock, const flint_sandbox_options_t *opts)
{
  spawner_t sp = { .sock = sock };
  flint_error_t err = FLINT_ERROR_INIT;
  sigset_t mask;
  int sfd;

  signal (SIGPIPE, SIG_IGN);
  sigemptyset (&mask);
  sigaddset (&mask, SIGCHLD);
  sigprocmask (SIG_BLOCK, &mask, NULL);
  sfd = signalfd (-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0)
    {
      flint_err ("signalfd: %s", strerror (errno));
      return 1;
    }
  {
    Flint__Node__V1__HelperStatus st = FLINT__NODE__V1__HELPER_STATUS__INIT;
    node_frame_t f = FLINT__NODE__V1__NODE_FRAME__INIT;
    int r = flint_sandbox_node_new (opts, &sp.node, &err);
    st.ok = r == 0;
    st.message = r == 0 ? (char *) flint_sandbox_node_describe (sp.node) : err.msg;
    f.msg_case = FLINT__NODE__V1__NODE_FRAME__MSG_STATUS;
    f.status = &st;
    send_node_frame (&sp, &f);
    if (r < 0)
      return 1;
  }
  flint_sandbox_node_cleanup_stale (sp.node);

  for (;;)
    {
      struct pollfd pfd[2] = { { sock, POLLIN, 0 }, { sfd, POLLIN, 0 } };
      if (poll (pfd, 2, -1) < 0)
        {
          if (errno == EINTR)
            continue;
          flint_err ("poll: %s", strerror (errno));
          kill_all_and_exit (&sp, 1);
        }
      if (pfd[1].revents & POLLIN)
        {
          struct signalfd_siginfo si;
          while (read (sfd, &si, sizeof si) == (ssize_t) sizeof si)
            ;
          reap (&sp);
        }
      if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
        {
          _cleanup_free_ uint8_t *buf = NULL;
          size_t len, nfds = FLINT_FRAME_MAX_FDS;
          int fds[FLINT_FRAME_MAX_FDS];
          node_frame_t *f;
          int r = flint_frame_recv (sock, 1u << 24, &buf, &len, fds, &nfds);

          if (r <= 0)
            {
              if (r < 0)
                flint_err ("receive from flintd: %s", strerror (-r));
              kill_all_and_exit (&sp, r < 0);
            }
          f = flint__node__v1__node_frame__unpack (NULL, len, buf);
          if (f == NULL)
            flint_err ("malformed frame from flintd (%zu bytes)", len);
          else if (f->msg_case == FLINT__NODE__V1__NODE_FRAME__MSG_SPAWN)
            handle_spawn (&sp, f->spawn, fds, nfds);
          else if (f->msg_case == FLINT__NODE__V1__NODE_FRAME__MSG_KILL)
            {
              flint_sandbox_t *sb = flint_map_get (&sp.by_id, f->kill->replica_id);
              if (sb)
                flint_sandbox_kill (sb);
            }
          for (size_t i = 0; i < nfds; i++)
            close (fds[i]);
          if (f)
            flint__node__v1__node_frame__free_unpacked (f, NULL);
        }
    }
}
