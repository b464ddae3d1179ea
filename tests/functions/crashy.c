/* A test function that misbehaves on request, for the failure-handling tests:
 *   "crash" segfaults, "abort" aborts, "exit:N" exits, "hang" never returns, "sleep:MS" sleeps,
 *   "alloc:MB" allocates and touches memory, "big:N" answers N bytes, "fail" fails the invoke,
 *   "env:NAME" answers an environment variable, "replica" its replica id, "count" a heap counter
 *   that survives snapshots, "restores" how often flint_after_restore ran in this process,
 *   "pid" its pid, "tid:MS" sleeps MS then answers "TID PID" (the invoking thread, the
 *   process), "waitcancel" waits up to 10 s for flint_output_cancelled() and "cancels" answers
 *   how many such waits saw it, "stream:N" N chunks; anything else is echoed. Its init fails when the config
 *   key `fail_init` or the environment variable FLINT_TEST_FAIL_INIT (a secret) is non-empty. */
#include <flint/function.h>

#include <signal.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

FLINT_FUNCTION_ABI;

static unsigned long *counter;   /* on the heap on purpose: snapshots must carry it */
static int restores;
static int cancels_seen;
static int checkpoints;

int
flint_init (flint_ctx_t *ctx)
{
  const char *fail = flint_config (ctx, "fail_init");
  const char *fail_env = getenv ("FLINT_TEST_FAIL_INIT"); /* from a secret: flips without a redeploy */
  if (fail && *fail)
    return flint_set_error (ctx, "init refused: %s", fail);
  if (fail_env && *fail_env)
    return flint_set_error (ctx, "init refused: %s", fail_env);
  counter = calloc (1, sizeof *counter);
  return counter ? 0 : flint_set_error (ctx, "out of memory");
}

int
flint_before_checkpoint (flint_ctx_t *ctx)
{
  (void) ctx;
  checkpoints++;
  return 0;
}

int
flint_after_restore (flint_ctx_t *ctx)
{
  (void) ctx;
  restores++;
  return 0;
}

static int
reply (flint_output_t *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
reply (flint_output_t *out, const char *fmt, ...)
{
  char buf[512];
  va_list ap;
  int n;
  va_start (ap, fmt);
  n = vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  return flint_output_write (out, buf, (size_t) n);
}

int
flint_invoke (flint_ctx_t *ctx, const flint_input_t *in, flint_output_t *out)
{
  char cmd[256];
  size_t n = in->len < sizeof cmd - 1 ? in->len : sizeof cmd - 1;

  memcpy (cmd, in->data, n);
  cmd[n] = '\0';
  if (strcmp (cmd, "crash") == 0)
    {
      /* a wild store (not NULL, which a sanitizer build would catch itself) */
      volatile uintptr_t addr = 16;
      *(volatile int *) addr = 1;
    }
  if (strcmp (cmd, "abort") == 0)
    abort ();
  if (strncmp (cmd, "exit:", 5) == 0)
    exit (atoi (cmd + 5));
  if (strcmp (cmd, "hang") == 0)
    for (;;)
      pause ();
  if (strncmp (cmd, "sleep:", 6) == 0)
    {
      usleep ((useconds_t) atoi (cmd + 6) * 1000);
      return reply (out, "slept %s ms", cmd + 6);
    }
  if (strncmp (cmd, "alloc:", 6) == 0)
    {
      size_t mb = (size_t) atoi (cmd + 6);
      char *p = malloc (mb << 20);
      if (p == NULL)
        return flint_fail (out, FLINT_FN_RESOURCE_EXHAUSTED, "malloc failed");
      for (size_t i = 0; i < mb << 20; i += 4096)
        p[i] = 1;
      return reply (out, "allocated %zu MiB", mb);
    }
  if (strncmp (cmd, "big:", 4) == 0)
    {
      size_t len = (size_t) atol (cmd + 4);
      char *p = malloc (len ? len : 1);
      int r;
      memset (p, 'b', len);
      r = flint_output_write (out, p, len);
      free (p);
      return r;
    }
  if (strcmp (cmd, "fail") == 0)
    return flint_fail (out, FLINT_FN_INVALID_ARGUMENT, "you asked me to fail");
  if (strncmp (cmd, "env:", 4) == 0)
    {
      const char *v = getenv (cmd + 4);
      return reply (out, "%s", v ? v : "(unset)");
    }
  if (strcmp (cmd, "replica") == 0)
    return reply (out, "%s", flint_replica_id (ctx));
  if (strcmp (cmd, "count") == 0)
    return reply (out, "%lu", ++*counter);
  if (strcmp (cmd, "restores") == 0)
    return reply (out, "%d", restores);
  if (strcmp (cmd, "checkpoints") == 0)
    return reply (out, "%d", checkpoints);
  if (strcmp (cmd, "pid") == 0)
    return reply (out, "%d", (int) getpid ());
  if (strcmp (cmd, "waitcancel") == 0)
    {
      for (int i = 0; i < 1000 && !flint_output_cancelled (out); i++)
        usleep (10000);
      if (flint_output_cancelled (out))
        __atomic_add_fetch (&cancels_seen, 1, __ATOMIC_RELAXED);
      return reply (out, "waited");
    }
  if (strcmp (cmd, "cancels") == 0)
    return reply (out, "%d", __atomic_load_n (&cancels_seen, __ATOMIC_RELAXED));
  if (strncmp (cmd, "tid:", 4) == 0)
    {
      usleep ((useconds_t) atoi (cmd + 4) * 1000);
      return reply (out, "%ld %d", (long) syscall (SYS_gettid), (int) getpid ());
    }
  if (strncmp (cmd, "slowstream:", 11) == 0)
    {
      /* a chunk every 20 ms, ignoring cancellation: a client that leaves mid-stream must not
       * hurt flintd while the chunks keep coming */
      int k = atoi (cmd + 11);
      for (int i = 0; i < k; i++)
        {
          reply (out, "chunk %d\n", i);
          usleep (20000);
        }
      return 0;
    }
  if (strncmp (cmd, "stream:", 7) == 0)
    {
      int k = atoi (cmd + 7);
      for (int i = 0; i < k; i++)
        if (reply (out, "chunk %d\n", i) < 0)
          return -1;
      return 0;
    }
  if (strncmp (cmd, "log:", 4) == 0)
    {
      fprintf (stdout, "stdout says %s\n", cmd + 4);
      fflush (stdout);
      fprintf (stderr, "stderr says %s\n", cmd + 4);
      flint_log_line (ctx, "log line says %s", cmd + 4);
      return reply (out, "logged %llu", (unsigned long long) in->request_id);
    }
  return flint_output_write (out, in->data, in->len);
}
