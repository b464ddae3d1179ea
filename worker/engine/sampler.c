/* Sampling. See sampler.h. Order of the filters, as in the usual implementations: temperature,
 * then top-k, then top-p over what top-k left. Ties between equal logits break towards the
 * lower id everywhere, so results never depend on sort stability. */
#include "sampler.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static inline uint64_t
rotl (uint64_t x, int k)
{
  return (x << k) | (x >> (64 - k));
}

void
flint__rng_seed (flint_rng_t *r, uint64_t seed)
{
  for (int i = 0; i < 4; i++)
    {
      uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      r->s[i] = z ^ (z >> 31);
    }
}

double
flint__rng_uniform (flint_rng_t *r)
{
  uint64_t *s = r->s;
  uint64_t out = rotl (s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl (s[3], 45);
  return (double) (out >> 11) * 0x1.0p-53;
}

int
flint__sampler_init (flint_sampler_t *s, uint32_t vocab)
{
  s->vocab = vocab;
  s->idx = malloc (vocab * sizeof *s->idx);
  s->probs = malloc (vocab * sizeof *s->probs);
  if (!s->idx || !s->probs)
    {
      flint__sampler_free (s);
      return -ENOMEM;
    }
  return 0;
}

void
flint__sampler_free (flint_sampler_t *s)
{
  free (s->idx);
  free (s->probs);
  s->idx = NULL;
  s->probs = NULL;
}

int32_t
flint__argmax (const float *logits, uint32_t vocab)
{
  uint32_t best = 0;
  for (uint32_t i = 1; i < vocab; i++)
    if (logits[i] > logits[best])
      best = i;
  return (int32_t) best;
}

/* descending by logit, ascending id on ties */
static int
cmp_desc (const void *a, const void *b, void *arg)
{
  const float *l = arg;
  uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
  if (l[x] != l[y])
    return l[x] > l[y] ? -1 : 1;
  return x < y ? -1 : x > y;
}

/* Moves the k best of idx[0..n) to the front, in no particular order (quickselect; the order
 * is total, ties being broken by id). */
static void
select_top (uint32_t *a, uint32_t n, uint32_t k, const float *l)
{
  int64_t lo = 0, hi = (int64_t) n - 1, want = (int64_t) k - 1;
  while (lo < hi)
    {
      uint32_t pivot = a[lo + (hi - lo) / 2], tmp;
      int64_t i = lo, j = hi;
      while (i <= j)
        {
          while (cmp_desc (&a[i], &pivot, (void *) l) < 0)
            i++;
          while (cmp_desc (&a[j], &pivot, (void *) l) > 0)
            j--;
          if (i <= j)
            {
              tmp = a[i], a[i] = a[j], a[j] = tmp;
              i++, j--;
            }
        }
      if (want <= j)
        hi = j;
      else if (want >= i)
        lo = i;
      else
        break;
    }
}

void
flint__sample_probs (flint_sampler_t *s, const float *logits, const flint_sampling_t *p, float *probs)
{
  uint32_t V = s->vocab, n = 0;
  float mx = logits[flint__argmax (logits, V)];
  double sum = 0;
  float inv_t = 1.0f / p->temperature;

  /* candidates: everything not hopelessly far below the best (exp(-40) is below any top-p) */
  for (uint32_t i = 0; i < V; i++)
    if ((logits[i] - mx) * inv_t > -40.0f)
      s->idx[n++] = i;
  if (p->top_k && p->top_k < n)
    {
      select_top (s->idx, n, p->top_k, logits);
      n = p->top_k;
    }
  if (p->top_p < 1.0f)
    {
      double total = 0, cum = 0;
      uint32_t keep = 0;
      qsort_r (s->idx, n, sizeof *s->idx, cmp_desc, (void *) logits);
      for (uint32_t i = 0; i < n; i++)
        total += exp ((double) (logits[s->idx[i]] - mx) * inv_t);
      while (keep < n)
        {
          cum += exp ((double) (logits[s->idx[keep]] - mx) * inv_t);
          keep++;
          if (cum >= p->top_p * total)
            break;
        }
      n = keep;
    }
  memset (probs, 0, V * sizeof *probs);
  for (uint32_t i = 0; i < n; i++)
    sum += (probs[s->idx[i]] = (float) exp ((double) (logits[s->idx[i]] - mx) * inv_t));
  for (uint32_t i = 0; i < n; i++)
    probs[s->idx[i]] = (float) (probs[s->idx[i]] / sum);
}

int32_t
flint__sample_from (const float *probs, uint32_t vocab, flint_rng_t *rng)
{
  double total = 0, u, cum = 0;
  int32_t last = 0;
  for (uint32_t i = 0; i < vocab; i++)
    total += probs[i];
  u = flint__rng_uniform (rng) * total;
  for (uint32_t i = 0; i < vocab; i++)
    {
      if (probs[i] <= 0)
        continue;
      cum += probs[i];
      last = (int32_t) i;
      if (u < cum)
        return (int32_t) i;
    }
  return last;
}

int32_t
flint__sample (flint_sampler_t *s, const float *logits, const flint_sampling_t *p, flint_rng_t *rng)
{
  if (p->temperature <= 0.0f)
    return flint__argmax (logits, s->vocab);
  flint__sample_probs (s, logits, p, s->probs);
  return flint__sample_from (s->probs, s->vocab, rng);
}
