/* A test function for the snapshot suite: state a snapshot must carry, and state each
 * restored replica must make its own.
 *
 *   init               draws a 64-bit token (getrandom): a cold start gets a new one, every
 *                      replica restored from one image shows the image's; derives a 1 MiB heap
 *                      table from it; sets a heap counter to 1000.
 *   before_checkpoint  counts its runs in the heap (restored replicas inherit the count).
 *   after_restore      counts its runs in this process and remembers the replica id it was
 *                      given (config `fail_after_restore` makes it fail).
 *   invoke             "" or "state": a JSON line {token, counter (incremented), table_ok,
 *                      before, after, replica, rand, restored_replica, shm}; "sleep:MS" sleeps
 *                      first; "fail" fails (a canary that must not pass).
 *   config `sysv_shm`  init also creates a System V shared memory segment holding the token:
 *                      `shm` is 1 while the segment exists and holds it, 0 if not, -1 without. */
#include <flint/function.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/shm.h>
#include <time.h>

FLINT_FUNCTION_ABI;

#define TABLE_WORDS ((1u << 20) / 8)

typedef struct state_s {
  uint64_t token;
  uint64_t counter;
  uint64_t *table;
  int before;        /* before_checkpoint runs (heap: carried by the image) */
  int after;         /* after_restore runs in this process */
  char restored_as[128];
  int shmid;         /* -1: none */
  uint64_t *shm;
} state_t;

static uint64_t
mix (uint64_t x)
{
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  return x ^ (x >> 33);
}

int
flint_init (flint_ctx_t *ctx)
{
  state_t *s = calloc (1, sizeof *s);

  if (s == NULL || getrandom (&s->token, sizeof s->token, 0) != sizeof s->token)
    return flint_set_error (ctx, "init: no memory or no entropy");
  s->table = malloc (TABLE_WORDS * sizeof *s->table);
  if (s->table == NULL)
    return flint_set_error (ctx, "init: out of memory");
  for (size_t i = 0; i < TABLE_WORDS; i++)
    s->table[i] = mix (s->token + i);
  s->counter = 1000;
  s->shmid = -1;
  if (flint_config (ctx, "sysv_shm") && *flint_config (ctx, "sysv_shm"))
    {
      s->shmid = shmget (IPC_PRIVATE, 4096, IPC_CREAT | 0600);
      s->shm = s->shmid < 0 ? (void *) -1 : shmat (s->shmid, NULL, 0);
      if (s->shm == (void *) -1)
        return flint_set_error (ctx, "init: System V shared memory: %s", strerror (errno));
      *s->shm = s->token;
    }
  flint_set_user (ctx, s);
  return 0;
}

int
flint_before_checkpoint (flint_ctx_t *ctx)
{
  state_t *s = flint_user (ctx);
  s->before++;
  return 0;
}

int
flint_after_restore (flint_ctx_t *ctx)
{
  state_t *s = flint_user (ctx);
  const char *fail = flint_config (ctx, "fail_after_restore");

  if (fail && *fail)
    return flint_set_error (ctx, "after_restore refused: %s", fail);
  s->after++;
  snprintf (s->restored_as, sizeof s->restored_as, "%s", flint_replica_id (ctx));
  return 0;
}

int
flint_invoke (flint_ctx_t *ctx, const flint_input_t *in, flint_output_t *out)
{
  state_t *s = flint_user (ctx);
  char cmd[64], reply[512];
  size_t n = in->len < sizeof cmd - 1 ? in->len : sizeof cmd - 1;
  int table_ok = 1, shm = -1, len;
  struct shmid_ds ds;

  memcpy (cmd, in->data, n);
  cmd[n] = '\0';
  if (strcmp (cmd, "fail") == 0)
    return flint_fail (out, FLINT_FN_FAILED_PRECONDITION, "asked to fail");
  if (strncmp (cmd, "sleep:", 6) == 0)
    {
      long ms = atol (cmd + 6);
      struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
      nanosleep (&ts, NULL);
    }
  for (size_t i = 0; i < TABLE_WORDS; i += 4099)
    if (s->table[i] != mix (s->token + i))
      table_ok = 0;
  if (s->shmid >= 0)
    shm = shmctl (s->shmid, IPC_STAT, &ds) == 0 && *s->shm == s->token;
  s->counter++;
  len = snprintf (reply, sizeof reply,
                  "{\"token\":\"%016" PRIx64 "\",\"counter\":%" PRIu64 ",\"table_ok\":%d,\"before\":%d,\"after\":%d,"
                  "\"replica\":\"%s\",\"restored_as\":\"%s\",\"rand\":%ld,\"shm\":%d}",
                  s->token, s->counter, table_ok, s->before, s->after, flint_replica_id (ctx), s->restored_as, random (),
                  shm);
  return flint_output_write (out, reply, (size_t) len);
}
