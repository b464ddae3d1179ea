/* Supervised helper processes (flint-spawner, flint-snapshotter): started with uv_spawn and
 * their end of a socketpair at fd 3, restarted with exponential backoff when they die. A
 * helper's death is reported to its owner (`lost_cb`), which fails what depended on it. */
#include "daemon.h"
#include "flint/log.h"
#include "flint/util.h"
#include "flint/node/v1/node.pb-c.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void helper_frame_cb (flint_channel_t *ch, const uint8_t *payload, size_t len, void *data);
static void helper_close_cb (flint_channel_t *ch, int error, void *data);

static void
free_handle_cb (uv_handle_t *h)
{
  free (h);
}

static void
restart_cb (uv_timer_t *t)
{
  flint_helper_t *h = t->data;
  flint_error_t err = FLINT_ERROR_INIT;

  if (h->d->shutting_down)
    return;
  if (flint__helper_start (h, &err) < 0)
    flint_err ("restart %s: %s", h->name, err.msg);
}

static void
schedule_restart (flint_helper_t *h)
{
  uint64_t delay = 100;

  if (h->d->shutting_down || h->stopped)
    return;
  /* a helper that stayed up for a minute starts a fresh backoff */
  if (flint_now_ns () - h->last_start_ns > 60000000000ull)
    h->restarts = 0;
  for (unsigned i = 0; i < h->restarts && delay < 5000; i++)
    delay *= 2;
  h->restarts++;
  if (h->restart_timer == NULL)
    {
      h->restart_timer = calloc (1, sizeof *h->restart_timer);
      if (h->restart_timer == NULL)
        abort ();
      uv_timer_init (h->d->loop, h->restart_timer);
      h->restart_timer->data = h;
    }
  uv_timer_start (h->restart_timer, restart_cb, delay, 0);
  flint_warn ("%s will be restarted in %llu ms", h->name, (unsigned long long) delay);
}

static void
lost (flint_helper_t *h)
{
  if (!h->up)
    return;
  h->up = false;
  h->ready = false;
  if (h->chan)
    {
      flint_channel_close (h->chan);
      h->chan = NULL;
    }
  if (h->lost_cb)
    h->lost_cb (h);
}

static void
exit_cb (uv_process_t *proc, int64_t status, int signal)
{
  flint_helper_t *h = proc->data;

  if (!h->d->shutting_down)
    flint_err ("%s (pid %d) exited (status %lld, signal %d)", h->name, proc->pid, (long long) status, signal);
  uv_close ((uv_handle_t *) proc, free_handle_cb);
  if (h->proc == proc)
    h->proc = NULL;
  lost (h);
  schedule_restart (h);
}

bool
flint__helper_status_frame (flint_helper_t *h, const uint8_t *payload, size_t len)
{
  Flint__Node__V1__NodeFrame *f = flint__node__v1__node_frame__unpack (NULL, len, payload);
  bool was = f && f->msg_case == FLINT__NODE__V1__NODE_FRAME__MSG_STATUS;

  if (was)
    {
      if (h->status_cb)
        h->status_cb (h, f->status);
      snprintf (h->status, sizeof h->status, "%s", f->status->message);
      h->ready = f->status->ok;
      if (h->ready)
        flint_info ("%s ready: %s", h->name, h->status);
      else
        flint_err ("%s cannot work: %s", h->name, h->status);
    }
  if (f)
    flint__node__v1__node_frame__free_unpacked (f, NULL);
  return was;
}

static void
helper_frame_cb (flint_channel_t *ch, const uint8_t *payload, size_t len, void *data)
{
  flint_helper_t *h = data;
  (void) ch;
  if (!h->ready && flint__helper_status_frame (h, payload, len))
    return;
  h->frame_cb (h, payload, len);
}

int
flint__helper_start_wait (flint_helper_t *h, uint64_t timeout_ms, flint_error_t *err)
{
  uint64_t until = flint_now_ns () + timeout_ms * 1000000ull;

  h->status[0] = '\0';
  if (flint__helper_start (h, err) < 0)
    return -1;
  while (!h->ready && h->up && flint_now_ns () < until)
    uv_run (h->d->loop, UV_RUN_ONCE);
  if (h->ready)
    return 0;
  /* no restarts for a helper that cannot work from the start: report why and stop */
  if (h->restart_timer)
    uv_timer_stop (h->restart_timer);
  return flint_error_set (err, FLINT_EPRECONDITION, "%s failed to start: %s", h->name,
                          h->status[0] ? h->status : "it exited without saying why (see the log above)");
}

static void
helper_close_cb (flint_channel_t *ch, int error, void *data)
{
  flint_helper_t *h = data;
  (void) ch;
  if (!h->d->shutting_down)
    flint_err ("lost the connection to %s%s%s", h->name, error ? ": " : "", error ? strerror (-error) : "");
  lost (h);
  /* the process exit callback schedules the restart (and kills it if it still runs) */
  if (h->proc)
    uv_process_kill (h->proc, SIGKILL);
}

int
flint__helper_start (flint_helper_t *h, flint_error_t *err)
{
  int sv[2];
  uv_process_options_t opts;
  uv_stdio_container_t stdio[4];
  int r;

  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "%s: socketpair", h->name);
  memset (&opts, 0, sizeof opts);
  memset (stdio, 0, sizeof stdio);
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = STDOUT_FILENO;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = STDERR_FILENO;
  stdio[3].flags = UV_INHERIT_FD;
  stdio[3].data.fd = sv[1];
  opts.file = h->argv[0];
  opts.args = h->argv;
  opts.stdio = stdio;
  opts.stdio_count = 4;
  opts.exit_cb = exit_cb;
  h->proc = calloc (1, sizeof *h->proc);
  if (h->proc == NULL)
    abort ();
  h->proc->data = h;
  r = uv_spawn (h->d->loop, h->proc, &opts);
  close (sv[1]);
  if (r < 0)
    {
      close (sv[0]);
      free (h->proc);
      h->proc = NULL;
      return flint_error_set (err, FLINT_EINTERNAL, "start %s (%s): %s", h->name, h->argv[0], uv_strerror (r));
    }
  r = flint_channel_new (h->d->loop, sv[0], 1u << 26, helper_frame_cb, helper_close_cb, h, &h->chan);
  if (r < 0)
    {
      close (sv[0]);
      uv_process_kill (h->proc, SIGKILL);
      return flint_error_set_errno (err, FLINT_EINTERNAL, r, "%s: channel", h->name);
    }
  h->up = true;
  h->stopped = false;
  h->last_start_ns = flint_now_ns ();
  flint_info ("started %s (pid %d)", h->name, h->proc->pid);
  return 0;
}

int
flint__helper_send (flint_helper_t *h, const ProtobufCMessage *msg, const int *fds, size_t nfds)
{
  if (!h->up || h->chan == NULL)
    return -ENOTCONN;
  return flint_channel_send (h->chan, msg, fds, nfds);
}

void
flint__helper_stop (flint_helper_t *h)
{
  h->stopped = true; /* no restart when its exit is reported */
  if (h->restart_timer)
    {
      uv_timer_stop (h->restart_timer);
      uv_close ((uv_handle_t *) h->restart_timer, free_handle_cb);
      h->restart_timer = NULL;
    }
  if (h->chan)
    {
      /* closing the socket makes the helper kill its sandboxes and exit */
      flint_channel_close (h->chan);
      h->chan = NULL;
    }
  h->up = false;
}
