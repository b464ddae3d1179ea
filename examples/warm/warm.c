/* examples/warm: a function whose init does real, size-proportional warm-up work over a weights
 * file, the way a model server loads and prepares its weights before the first request.
 *
 * init:   maps the weights named `table` from the node weight store (shared, read-only), reads
 *         every byte to build a per-block digest index (the "prepared state", kept in private
 *         memory), and derives a 4 MiB lookup table from it.
 * invoke: for each input byte, walks the weights at positions chosen by a rolling hash and the
 *         lookup table, and returns a JSON object with the digest of that walk. The answer
 *         depends on the weights, the prepared state and the input, so a replica that lost any
 *         of them (a bad restore) answers differently.
 *
 * Cold start cost therefore grows with the weights; a snapshot restore does not redo it. */
#include <flint/function.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

FLINT_FUNCTION_ABI;

#define BLOCK (64u << 10)
#define LUT_WORDS ((4u << 20) / 8)

typedef struct warm_s {
  const uint8_t *weights;
  size_t len;
  uint64_t *block_digest;   /* one per 64 KiB block */
  size_t nblocks;
  uint64_t *lut;
  uint64_t invocations;
} warm_t;

static uint64_t
mix (uint64_t h, uint64_t v)
{
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h *= 0xff51afd7ed558ccdull;
  return h ^ (h >> 33);
}

static void
warm_free (warm_t *w)
{
  if (w == NULL)
    return;
  free (w->block_digest);
  free (w->lut);
  free (w);
}

int
flint_init (flint_ctx_t *ctx)
{
  warm_t *w = calloc (1, sizeof *w);
  const void *data;

  if (w == NULL)
    return flint_set_error (ctx, "out of memory");
  if (flint_weights_map (ctx, "table", &data, &w->len) != 0)
    {
      warm_free (w);
      return -1; /* flint_weights_map set the message */
    }
  if (w->len < 8)
    {
      size_t len = w->len;
      warm_free (w);
      return flint_set_error (ctx, "weights `table` are too small (%zu bytes)", len);
    }
  w->weights = data;
  w->nblocks = (w->len + BLOCK - 1) / BLOCK;
  w->block_digest = malloc (w->nblocks * sizeof *w->block_digest);
  w->lut = malloc (LUT_WORDS * sizeof *w->lut);
  if (w->block_digest == NULL || w->lut == NULL)
    {
      warm_free (w);
      return flint_set_error (ctx, "out of memory for the prepared state");
    }

  /* Warm-up: read all the weights once (8 bytes at a time) into a digest per block. */
  for (size_t b = 0; b < w->nblocks; b++)
    {
      size_t start = b * BLOCK, end = start + BLOCK > w->len ? w->len : start + BLOCK;
      uint64_t h = b;
      size_t i = start;
      for (; i + 8 <= end; i += 8)
        {
          uint64_t v;
          memcpy (&v, w->weights + i, 8);
          h = mix (h, v);
        }
      for (; i < end; i++)
        h = mix (h, w->weights[i]);
      w->block_digest[b] = h;
    }
  for (size_t i = 0; i < LUT_WORDS; i++)
    w->lut[i] = mix (w->block_digest[i % w->nblocks], i);
  flint_set_user (ctx, w);
  return 0;
}

int
flint_invoke (flint_ctx_t *ctx, const flint_input_t *in, flint_output_t *out)
{
  warm_t *w = flint_user (ctx);
  uint64_t h = 0x243f6a8885a308d3ull;
  char reply[160];
  int n;

  for (size_t i = 0; i < in->len; i++)
    {
      uint64_t pos;
      h = mix (h, in->data[i]);
      pos = (h ^ w->lut[h % LUT_WORDS]) % (w->len - 8);
      uint64_t v;
      memcpy (&v, w->weights + pos, 8);
      h = mix (h, v ^ w->block_digest[pos / BLOCK]);
    }
  w->invocations++;
  n = snprintf (reply, sizeof reply, "{\"digest\":\"%016" PRIx64 "\",\"weights_bytes\":%zu,\"invocations\":%" PRIu64 "}",
                h, w->len, w->invocations);
  return flint_output_write (out, reply, (size_t) n);
}

/* The worker ends normally: the prepared state goes (the weights mapping is flint's). */
void
flint_fini (flint_ctx_t *ctx)
{
  warm_free (flint_user (ctx));
}
