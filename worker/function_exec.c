/* Loader for `kind: exec`: an executable in any language, started once per worker, speaking
 * the exec protocol (docs/FUNCTIONS.md) on its stdin/stdout:
 *
 *   flint → program (stdin):  u32 big-endian length, then the request payload
 *   program → flint (stdout): frames of  u8 type, u32 big-endian length, data
 *        'R'  ready: init done (sent once, before the first request)
 *        'D'  output bytes (one streamed chunk; concatenated for unary invokes)
 *        'E'  end of the current response (length 0)
 *        'X'  the current request failed; data is the message
 *
 * stderr is the program's log (it goes to the endpoint's log with the worker's). One request
 * at a time: the program needs no concurrency of its own. A program that exits or writes
 * garbage fails the in-flight request and the worker with it (flintd starts a new one). */
#include "worker.h"
#include "flint/cleanup.h"
#include "flint/util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct exec_state_s {
  pid_t pid;
  int to_child;    /* its stdin */
  int from_child;  /* its stdout */
  pthread_mutex_t lock;
} exec_state_t;

static exec_state_t exec_state = { .pid = -1, .to_child = -1, .from_child = -1,
                                   .lock = PTHREAD_MUTEX_INITIALIZER };

/* Reads one protocol frame header. Returns 0, or -1 with a message in ctx. */
static int
read_header (flint_ctx_t *ctx, exec_state_t *st, char *type, uint32_t *len)
{
  uint8_t hdr[5];
  ssize_t n = flint_read_all (st->from_child, hdr, sizeof hdr);

  if (n != (ssize_t) sizeof hdr)
    {
      int status = 0;
      if (n >= 0 && waitpid (st->pid, &status, WNOHANG) == st->pid)
        {
          st->pid = -1;
          if (WIFSIGNALED (status))
            return flint_set_error (ctx, "the program was killed by signal %d", WTERMSIG (status));
          return flint_set_error (ctx, "the program exited with status %d", WEXITSTATUS (status));
        }
      return flint_set_error (ctx, "the program closed its stdout");
    }
  *type = (char) hdr[0];
  *len = (uint32_t) hdr[1] << 24 | (uint32_t) hdr[2] << 16 | (uint32_t) hdr[3] << 8 | hdr[4];
  return 0;
}

static int
exec_init (flint_ctx_t *ctx)
{
  exec_state_t *st = &exec_state;
  char type = 0;
  uint32_t len = 0;

  if (read_header (ctx, st, &type, &len) < 0)
    return flint_set_error (ctx, "before it was ready: %s", flint__ctx_error (ctx));
  if (type != 'R' || len != 0)
    return flint_set_error (ctx, "the program must first write a ready frame ('R', length 0); got type 0x%02x",
                            (unsigned char) type);
  return 0;
}

static int
exec_invoke (flint_ctx_t *ctx, const flint_input_t *in, flint_output_t *out)
{
  exec_state_t *st = &exec_state;
  uint8_t hdr[4];
  _cleanup_free_ char *data = NULL;
  int ret = 0;

  if (in->len > UINT32_MAX)
    return flint_fail (out, FLINT_FN_RESOURCE_EXHAUSTED, "payload too large for the exec protocol");
  pthread_mutex_lock (&st->lock);
  hdr[0] = (uint8_t) (in->len >> 24);
  hdr[1] = (uint8_t) (in->len >> 16);
  hdr[2] = (uint8_t) (in->len >> 8);
  hdr[3] = (uint8_t) in->len;
  if (flint_write_all (st->to_child, hdr, 4) < 0 || flint_write_all (st->to_child, in->data, in->len) < 0)
    {
      ret = flint_fail (out, FLINT_FN_UNAVAILABLE, "write to the program: %s", strerror (errno));
      goto done;
    }
  for (;;)
    {
      char type = 0;
      uint32_t len = 0;
      ssize_t n;

      flint__ctx_clear_error (ctx);
      if (read_header (ctx, st, &type, &len) < 0)
        {
          ret = flint_fail (out, FLINT_FN_UNAVAILABLE, "%s", flint__ctx_error (ctx));
          goto done;
        }
      free (data);
      data = malloc (len ? len : 1);
      if (data == NULL)
        abort ();
      n = flint_read_all (st->from_child, data, len);
      if (n != (ssize_t) len)
        {
          ret = flint_fail (out, FLINT_FN_UNAVAILABLE, "the program closed its stdout mid-frame");
          goto done;
        }
      if (type == 'D')
        {
          /* keep reading to the end frame even when the output is refused, so the stream stays
           * in sync for the next request */
          if (flint_output_write (out, data, len) < 0)
            ret = -1;
        }
      else if (type == 'E')
        break;
      else if (type == 'X')
        {
          ret = flint_fail (out, FLINT_FN_UNKNOWN, "%.*s", (int) FLINT_MIN (len, 400u), data);
          break;
        }
      else
        {
          ret = flint_fail (out, FLINT_FN_UNAVAILABLE, "protocol error: unknown frame type 0x%02x",
                            (unsigned char) type);
          /* out of sync: the worker cannot serve further requests */
          kill (st->pid, SIGKILL);
          goto done;
        }
    }
done:
  pthread_mutex_unlock (&st->lock);
  return ret;
}

static void
exec_unload (flint_ctx_t *ctx)
{
  exec_state_t *st = &exec_state;
  (void) ctx;
  if (st->to_child >= 0)
    close (st->to_child);
  if (st->from_child >= 0)
    close (st->from_child);
  st->to_child = st->from_child = -1;
  if (st->pid > 0)
    {
      kill (st->pid, SIGTERM);
      waitpid (st->pid, NULL, 0);
      st->pid = -1;
    }
}

int
flint__load_exec (flint_ctx_t *ctx, const char *path, char *const *args, size_t nargs,
                  flint_function_t *fn, flint_error_t *err)
{
  exec_state_t *st = &exec_state;
  int in_pipe[2] = { -1, -1 }, out_pipe[2] = { -1, -1 };
  _cleanup_free_ char **argv = NULL;
  pid_t pid;

  (void) ctx;
  if (access (path, X_OK) < 0)
    return flint_error_set_errno (err, FLINT_EPRECONDITION, errno, "program `%s` is not executable", path);
  argv = calloc (nargs + 2, sizeof *argv);
  if (argv == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  argv[0] = (char *) path;
  for (size_t i = 0; i < nargs; i++)
    argv[i + 1] = args[i];
  if (pipe2 (in_pipe, O_CLOEXEC) < 0 || pipe2 (out_pipe, O_CLOEXEC) < 0)
    {
      int e = errno;
      for (int i = 0; i < 2; i++)
        {
          if (in_pipe[i] >= 0)
            close (in_pipe[i]);
          if (out_pipe[i] >= 0)
            close (out_pipe[i]);
        }
      return flint_error_set_errno (err, FLINT_EINTERNAL, e, "pipe");
    }
  pid = fork ();
  if (pid < 0)
    {
      int e = errno;
      close (in_pipe[0]), close (in_pipe[1]), close (out_pipe[0]), close (out_pipe[1]);
      return flint_error_set_errno (err, FLINT_EINTERNAL, e, "fork");
    }
  if (pid == 0)
    {
      /* child: stdin/stdout become the protocol pipes, stderr stays the log */
      dup2 (in_pipe[0], STDIN_FILENO);
      dup2 (out_pipe[1], STDOUT_FILENO);
      flint_close_fds_except (3, NULL, 0);
      signal (SIGPIPE, SIG_DFL);
      setenv ("FLINT_PROTOCOL", "exec/1", 1);
      execv (path, argv);
      fprintf (stderr, "flint-worker: exec %s: %s\n", path, strerror (errno));
      _exit (127);
    }
  close (in_pipe[0]);
  close (out_pipe[1]);
  st->pid = pid;
  st->to_child = in_pipe[1];
  st->from_child = out_pipe[0];
  memset (fn, 0, sizeof *fn);
  fn->init = exec_init;
  fn->invoke = exec_invoke;
  fn->unload = exec_unload;
  fn->loader_state = st;
  return 0;
}
