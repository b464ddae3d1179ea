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
 *                      before, after, replica, rand, restored_replica}; "sleep:MS" sleeps first;
 *                      "fail" fails (a canary that must not pass). */
#include <flint/function.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
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
  int table_ok = 1, len;

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
  s->counter++;
  len = snprintf (reply, sizeof reply,
                  "{\"token\":\"%016" PRIx64 "\",\"counter\":%" PRIu64 ",\"table_ok\":%d,\"before\":%d,\"after\":%d,"
                  "\"replica\":\"%s\",\"restored_as\":\"%s\",\"rand\":%ld}",
                  s->token, s->counter, table_ok, s->before, s->after, flint_replica_id (ctx), s->restored_as, random ());
  return flint_output_write (out, reply, (size_t) len);
}
