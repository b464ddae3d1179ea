/* Sandbox supervision shared by the node helpers. See supervisor.h. */
#include "supervisor.h"
#include "flint/cleanup.h"
#include "flint/frame.h"
#include "flint/log.h"
#include "flint/util.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

void
flint_supervisor_send (flint_supervisor_t *sv, Flint__Node__V1__NodeFrame *f, const int *fds, size_t nfds)
{
  int r = flint_frame_send (sv->sock, &f->base, fds, nfds);
  if (r < 0)
    flint_err ("send to flintd: %s", strerror (-r));
}

void
flint_supervisor_status (flint_supervisor_t *sv, bool ok, const char *message)
{
  Flint__Node__V1__HelperStatus st = FLINT__NODE__V1__HELPER_STATUS__INIT;
  Flint__Node__V1__NodeFrame f = FLINT__NODE__V1__NODE_FRAME__INIT;
  st.ok = ok;
  st.message = (char *) message;
  f.msg_case = FLINT__NODE__V1__NODE_FRAME__MSG_STATUS;
  f.status = &st;
  flint_supervisor_send (sv, &f, NULL, 0);
}

void
flint_supervisor_adopt (flint_supervisor_t *sv, flint_sandbox_t *sb)
{
  char pidkey[24];
  flint_map_put (&sv->by_id, flint_sandbox_id (sb), sb);
  snprintf (pidkey, sizeof pidkey, "%d", (int) flint_sandbox_pid (sb));
  flint_map_put (&sv->by_pid, pidkey, sb);
}

flint_sandbox_t *
flint_supervisor_find (flint_supervisor_t *sv, const char *id)
{
  return flint_map_get (&sv->by_id, id);
}

static void
report_exit (flint_supervisor_t *sv, flint_sandbox_t *sb, int status)
{
  Flint__Node__V1__Exited ex = FLINT__NODE__V1__EXITED__INIT;
  Flint__Node__V1__NodeFrame f = FLINT__NODE__V1__NODE_FRAME__INIT;
  flint_sandbox_exit_t info;
  char id[128], pidkey[24];
  pid_t pid = flint_sandbox_pid (sb);

  snprintf (id, sizeof id, "%s", flint_sandbox_id (sb));
  snprintf (pidkey, sizeof pidkey, "%d", (int) pid);
  flint_map_del (&sv->by_id, id);
  flint_map_del (&sv->by_pid, pidkey);
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
  flint_supervisor_send (sv, &f, NULL, 0);
}

static void
reap (flint_supervisor_t *sv)
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
      sb = flint_map_get (&sv->by_pid, pidkey);
      if (sb)
        report_exit (sv, sb, status);
      else if (sv->reaped)
        sv->reaped (sv, pid, status, sv->data);
    }
}

static void
kill_all (flint_supervisor_t *sv)
{
  const char *key;
  void *val;

  for (size_t it = 0; flint_map_next (&sv->by_id, &it, &key, &val);)
    flint_sandbox_kill (val);
  while (sv->by_id.len > 0)
    {
      int status;
      char pidkey[24];
      flint_sandbox_t *sb;
      pid_t pid = waitpid (-1, &status, 0);

      if (pid < 0)
        break;
      snprintf (pidkey, sizeof pidkey, "%d", (int) pid);
      sb = flint_map_get (&sv->by_pid, pidkey);
      if (sb)
        {
          char id[128];
          snprintf (id, sizeof id, "%s", flint_sandbox_id (sb));
          flint_map_del (&sv->by_id, id);
          flint_map_del (&sv->by_pid, pidkey);
          flint_sandbox_finish (sb, status, NULL);
        }
    }
}

int
flint_supervisor_sigchld_fd (void)
{
  sigset_t mask;
  sigemptyset (&mask);
  sigaddset (&mask, SIGCHLD);
  sigprocmask (SIG_BLOCK, &mask, NULL);
  return signalfd (-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
}

int
flint_supervisor_run (flint_supervisor_t *sv, int sigchld_fd)
{
  for (;;)
    {
      struct pollfd pfd[2] = { { sv->sock, POLLIN, 0 }, { sigchld_fd, POLLIN, 0 } };
      int n = poll (pfd, 2, sv->idle && sv->idle_pending ? 0 : -1);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          flint_err ("poll: %s", strerror (errno));
          kill_all (sv);
          return 1;
        }
      if (n == 0)
        {
          sv->idle (sv, sv->data);
          continue;
        }
      if (pfd[1].revents & POLLIN)
        {
          struct signalfd_siginfo si;
          while (read (sigchld_fd, &si, sizeof si) == (ssize_t) sizeof si)
            ;
          reap (sv);
        }
      if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
        {
          _cleanup_free_ uint8_t *buf = NULL;
          size_t len, nfds = FLINT_FRAME_MAX_FDS;
          int fds[FLINT_FRAME_MAX_FDS];
          Flint__Node__V1__NodeFrame *f;
          int r = flint_frame_recv (sv->sock, 1u << 24, &buf, &len, fds, &nfds);

          if (r <= 0)
            {
              if (r < 0)
                flint_err ("receive from flintd: %s", strerror (-r));
              kill_all (sv);
              return r < 0;
            }
          f = flint__node__v1__node_frame__unpack (NULL, len, buf);
          if (f == NULL)
            {
              flint_err ("malformed frame from flintd (%zu bytes)", len);
              for (size_t i = 0; i < nfds; i++)
                close (fds[i]);
              continue;
            }
          if (f->msg_case == FLINT__NODE__V1__NODE_FRAME__MSG_KILL)
            {
              flint_sandbox_t *sb = flint_map_get (&sv->by_id, f->kill->replica_id);
              if (sb)
                flint_sandbox_kill (sb);
            }
          else if (f->msg_case == FLINT__NODE__V1__NODE_FRAME__MSG_FREEZE)
            {
              flint_sandbox_t *sb = flint_map_get (&sv->by_id, f->freeze->replica_id);
              int e = sb ? flint_sandbox_freeze (sb, f->freeze->frozen) : -ESRCH;
              if (e < 0)
                flint_warn ("%s replica %s: %s", f->freeze->frozen ? "freeze" : "thaw", f->freeze->replica_id,
                            strerror (-e));
            }
          else if (sv->handle)
            {
              sv->handle (sv, f, fds, nfds, sv->data);
              nfds = 0; /* the handler owns them */
            }
          for (size_t i = 0; i < nfds; i++)
            close (fds[i]);
          flint__node__v1__node_frame__free_unpacked (f, NULL);
        }
    }
}
