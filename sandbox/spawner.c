/* The spawner service: creates sandboxed workers on behalf of flintd and reports their deaths.
 * It exists because sandboxes cannot be built from flintd itself: gRPC's threads make
 * unshare(CLONE_NEWUSER) fail, and fork from a threaded process is slow and unsafe. flintd starts
 * it (flint-spawner, fd 3 = socket) and restarts it if it dies.
 *
 * Protocol (proto/flint/node/v1/node.proto): Spawn (+ stdout and stderr fds) → Spawned (+ the
 * worker's channel); Kill and Freeze; Exited when a worker dies. Supervision (reaping, Exited,
 * Kill, Freeze, shutdown) is supervisor.c's. */
#include "spawner.h"
#include "supervisor.h"
#include "flint/cleanup.h"
#include "flint/log.h"
#include "flint/util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef Flint__Node__V1__NodeFrame node_frame_t;

static void
reply_spawned (flint_supervisor_t *sv, const char *id, bool ok, const char *error, pid_t pid,
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
  flint_supervisor_send (sv, &f, channel >= 0 ? &channel : NULL, channel >= 0 ? 1 : 0);
}

/* Converts a SandboxSpec message into a spec (pointers into the message and `argv`/`env`, which
 * the caller allocates with room for the message's counts + 1). */
void
flint_sandbox_spec_from_proto (const Flint__Node__V1__SandboxSpec *ss, const char *id, char **argv_in, size_t argc,
                               char **argv, char **env, flint_sandbox_spec_t *spec)
{
  memset (spec, 0, sizeof *spec);
  for (size_t i = 0; i < argc; i++)
    argv[i] = argv_in[i];
  argv[argc] = NULL;
  for (size_t i = 0; i < ss->n_env; i++)
    env[i] = ss->env[i];
  env[ss->n_env] = NULL;
  spec->id = id;
  spec->bundle_dir = ss->bundle_dir;
  spec->weights_dir = ss->weights_dir[0] ? ss->weights_dir : NULL;
  spec->argv = argv;
  spec->env = env;
  spec->memory_bytes = ss->memory_bytes;
  spec->cpu_millis = ss->cpu_millis;
  spec->pids_max = ss->pids_max;
  spec->tmp_bytes = ss->tmp_bytes;
  spec->nofile = ss->nofile;
  spec->network = ss->network;
  spec->gpu = ss->gpu;
  spec->hostname = ss->hostname[0] ? ss->hostname : "flint";
  spec->stdout_fd = spec->stderr_fd = -1;
}

static void
handle_spawn (flint_supervisor_t *sv, const Flint__Node__V1__Spawn *req, int *fds, size_t nfds)
{
  flint_sandbox_spec_t spec;
  flint_sandbox_timings_t t;
  flint_error_t err = FLINT_ERROR_INIT;
  flint_sandbox_t *sb = NULL;
  _cleanup_free_ char **argv = NULL;
  _cleanup_free_ char **env = NULL;
  int channel = -1;

  if (nfds != 2 || req->sandbox == NULL || req->n_argv == 0 || flint_supervisor_find (sv, req->replica_id))
    {
      reply_spawned (sv, req->replica_id, false,
                     nfds != 2 ? "spawn request without its stdout and stderr fds" : "malformed or duplicate spawn request",
                     0, NULL, -1);
      return;
    }
  argv = calloc (req->n_argv + 1, sizeof *argv);
  env = calloc (req->sandbox->n_env + 1, sizeof *env);
  if (argv == NULL || env == NULL)
    abort ();
  flint_sandbox_spec_from_proto (req->sandbox, req->replica_id, req->argv, req->n_argv, argv, env, &spec);
  spec.stdout_fd = fds[0];
  spec.stderr_fd = fds[1];
  if (flint_sandbox_spawn (sv->node, &spec, &sb, &channel, &t, &err) < 0)
    {
      reply_spawned (sv, req->replica_id, false, err.msg, 0, NULL, -1);
      return;
    }
  flint_supervisor_adopt (sv, sb);
  reply_spawned (sv, req->replica_id, true, NULL, flint_sandbox_pid (sb), &t, channel);
  close (channel);
}

static void
handle (flint_supervisor_t *sv, node_frame_t *f, int *fds, size_t nfds, void *data)
{
  (void) data;
  if (f->msg_case == FLINT__NODE__V1__NODE_FRAME__MSG_SPAWN)
    handle_spawn (sv, f->spawn, fds, nfds);
  for (size_t i = 0; i < nfds; i++)
    close (fds[i]);
}

int
flint_spawner_main (int sock, const flint_sandbox_options_t *opts)
{
  flint_supervisor_t sv = { .sock = sock, .handle = handle };
  flint_error_t err = FLINT_ERROR_INIT;
  int sfd, r;

  signal (SIGPIPE, SIG_IGN);
  sfd = flint_supervisor_sigchld_fd ();
  if (sfd < 0)
    {
      flint_err ("signalfd: %s", strerror (errno));
      return 1;
    }
  r = flint_sandbox_node_new (opts, &sv.node, &err);
  flint_supervisor_status (&sv, r == 0, r == 0 ? flint_sandbox_node_describe (sv.node) : err.msg);
  if (r < 0)
    return 1;
  flint_sandbox_node_cleanup_stale (sv.node);
  r = flint_supervisor_run (&sv, sfd);
  flint_sandbox_node_remove_parent (sv.node);
  flint_sandbox_node_free (sv.node);
  flint_map_free (&sv.by_id);
  flint_map_free (&sv.by_pid);
  return r;
}
