/* Token sampling: greedy, or temperature with top-k and top-p (nucleus) filtering, from a
 * per-request random stream seeded by the request (xoshiro256**, seeded through splitmix64), so
 * a seed reproduces a completion exactly, whatever else the engine is doing. */
#ifndef FLINT_ENGINE_SAMPLER_H
#define FLINT_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct flint_rng_s {
  uint64_t s[4];
} flint_rng_t;

void flint__rng_seed (flint_rng_t *r, uint64_t seed);
/* Uniform in [0, 1). */
double flint__rng_uniform (flint_rng_t *r);

typedef struct flint_sampling_s {
  float temperature;    /* 0 = greedy */
  float top_p;          /* (0, 1]; 1 = off */
  uint32_t top_k;       /* 0 = off */
} flint_sampling_t;

/* Scratch for one sampling call over `vocab` logits. */
typedef struct flint_sampler_s {
  uint32_t vocab;
  uint32_t *idx;
  float *probs;
} flint_sampler_t;

int flint__sampler_init (flint_sampler_t *s, uint32_t vocab);
void flint__sampler_free (flint_sampler_t *s);

/* argmax (the lowest id among equal maxima). */
int32_t flint__argmax (const float *logits, uint32_t vocab);

/* The distribution that sampling with `p` draws from: probs_out[vocab] (zero outside the top-k /
 * top-p set), summing to 1. Not for greedy (temperature 0). */
void flint__sample_probs (flint_sampler_t *s, const float *logits, const flint_sampling_t *p, float *probs_out);
/* Draws from a distribution given as probs[vocab] (summing to about 1). */
int32_t flint__sample_from (const float *probs, uint32_t vocab, flint_rng_t *rng);
/* One token: argmax for temperature 0, else a draw from flint__sample_probs. */
int32_t flint__sample (flint_sampler_t *s, const float *logits, const flint_sampling_t *p, flint_rng_t *rng);

#endif
