/* Sandbox lifecycle. This file holds the parts independent of isolation: spawning with plain
 * fork+exec (isolate = false), exit explanation and wait-status formatting. */
#include "sandbox.h"
#include "flint/cleanup.h"
#include "flint/util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

struct flint_sandbox_node_s {
  flint_sandbox_options_t opts;
  char describe[256];
};

struct flint_sandbox_s {
  char id[128];
  pid_t pid;
  uint64_t memory_limit;
};

int
flint_sandbox_node_new (const flint_sandbox_options_t *opts, flint_sandbox_node_t **out, flint_error_t *err)
{
  flint_sandbox_node_t *node = calloc (1, sizeof *node);
  if (node == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  node->opts = *opts;
  if (opts->isolate)
    {
      free (node);
      return flint_error_set (err, FLINT_EUNIMPLEMENTED, "isolated sandboxes are not built yet");
    }
  snprintf (node->describe, sizeof node->describe, "no isolation (development mode)");
  *out = node;
  return 0;
}

void
flint_sandbox_node_free (flint_sandbox_node_t *node)
{
  free (node);
}

const char *
flint_sandbox_node_describe (const flint_sandbox_node_t *node)
{
  return node->describe;
}

int
flint_sandbox_node_cleanup_stale (flint_sandbox_node_t *node)
{
  (void) node;
  return 0;
}

/* Child side of the plain spawn: arrange fds and exec. Reports errno through `errpipe`. */
static void __attribute__((noreturn))
plain_child (const flint_sandbox_spec_t *spec, int errpipe)
{
  int keep[2];
  int e;

  /* die with the spawner: a worker must never outlive its supervisor */
  prctl (PR_SET_PDEATHSIG, SIGKILL);
  setsid ();
  if (dup2 (spec->channel_fd, 3) < 0 || dup2 (spec->stdout_fd, 1) < 0 || dup2 (spec->stderr_fd, 2) < 0)
    goto fail;
  {
    int devnull = open ("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0 || dup2 (devnull, 0) < 0)
      goto fail;
  }
  keep[0] = 3;
  keep[1] = errpipe;
  flint_close_fds_except (4, keep, 2);
  if (chdir (spec->bundle_dir) < 0)
    goto fail;
  if (spec->nofile)
    {
      struct rlimit rl = { spec->nofile, spec->nofile };
      setrlimit (RLIMIT_NOFILE, &rl);
    }
  {
    sigset_t all;
    sigemptyset (&all);
    sigprocmask (SIG_SETMASK, &all, NULL);
  }
  execve (spec->argv[0], spec->argv, spec->env);
fail:
  e = errno;
  (void) !write (errpipe, &e, sizeof e);
  _exit (127);
}

int
flint_sandbox_spawn (flint_sandbox_node_t *node, const flint_sandbox_spec_t *spec, flint_sandbox_t **out,
                     flint_sandbox_timings_t *timings, flint_error_t *err)
{
  int pipefd[2];
  uint64_t t0 = flint_now_ns ();
  flint_sandbox_t *sb;
  pid_t pid;
  int child_errno = 0;
  ssize_t n;

  (void) node;
  if (pipe2 (pipefd, O_CLOEXEC) < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "sandbox `%s`: pipe", spec->id);
  pid = fork ();
  if (pid < 0)
    {
      int e = errno;
      close (pipefd[0]);
      close (pipefd[1]);
      return flint_error_set_errno (err, FLINT_EINTERNAL, e, "sandbox `%s`: fork", spec->id);
    }
  if (pid == 0)
    {
      close (pipefd[0]);
      plain_child (spec, pipefd[1]);
    }
  close (pipefd[1]);
  do
    n = read (pipefd[0], &child_errno, sizeof child_errno);
  while (n < 0 && errno == EINTR);
  close (pipefd[0]);
  if (n == (ssize_t) sizeof child_errno)
    {
      waitpid (pid, NULL, 0);
      return flint_error_set_errno (err, FLINT_EINTERNAL, child_errno, "sandbox `%s`: exec %s", spec->id,
                                    spec->argv[0]);
    }
  sb = calloc (1, sizeof *sb);
  if (sb == NULL)
    {
      kill (pid, SIGKILL);
      waitpid (pid, NULL, 0);
      return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
    }
  snprintf (sb->id, sizeof sb->id, "%s", spec->id);
  sb->pid = pid;
  sb->memory_limit = spec->memory_bytes;
  if (timings)
    {
      memset (timings, 0, sizeof *timings);
      timings->total_ms = (double) (flint_now_ns () - t0) / 1e6;
      timings->clone_ms = timings->total_ms;
    }
  *out = sb;
  return 0;
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
  return kill (sb->pid, SIGKILL) < 0 ? -errno : 0;
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
  if (exit_out)
    {
      memset (exit_out, 0, sizeof *exit_out);
      exit_out->wait_status = wait_status;
      exit_out->memory_limit = sb->memory_limit;
      flint_describe_wait_status (wait_status, exit_out->reason, sizeof exit_out->reason);
    }
  free (sb);
}
