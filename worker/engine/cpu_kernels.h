/* The CPU backend's inner loops, in three builds of the same arithmetic: AVX-512, AVX2+FMA and
 * portable C. The best one the CPU supports is picked once at start-up
 * (flint__cpu_kernels_detect, CPUID through __builtin_cpu_supports); the binary runs on any
 * x86-64 and on other architectures with the portable build.
 *
 * The dot-product tiles compute out[r][c] = dot(x[r], w[c]) for up to 4 activation rows and up
 * to 4 weight rows at once. Every (r, c) element is computed with the same accumulator layout
 * and summation order whatever the tile shape and whatever the weight dtype (widening BF16 and
 * F16 to F32 is exact), which is what makes results independent of batching (backend.h). */
#ifndef FLINT_ENGINE_CPU_KERNELS_H
#define FLINT_ENGINE_CPU_KERNELS_H

#include "safetensors.h"

#include <stddef.h>
#include <stdint.h>

#define FLINT_TILE_MAX 4

typedef struct flint_cpu_kernels_s {
  const char *isa;               /* "avx512", "avx2", "generic" */
  /* out[r * ostride + c] = dot(x[r], w[c]) over k elements, r < nx, c < nw (both 1..4). The w
   * rows are of `dtype` (F32, F16, BF16). */
  void (*tile) (const float *const *x, uint32_t nx, const void *const *w, uint32_t nw, flint_dtype_t dtype, uint32_t k,
                float *out, size_t ostride);
  /* out[i] = (float) in[i] for n elements of `dtype` (exact). */
  void (*widen) (const void *in, flint_dtype_t dtype, float *out, size_t n);
} flint_cpu_kernels_t;

/* The best kernels for this CPU. `force` ("generic", "avx2", "avx512" or NULL) picks a
 * build explicitly (tests); an unsupported one falls back to generic. */
const flint_cpu_kernels_t *flint__cpu_kernels_detect (const char *force);

/* Exact F16 → F32 conversion in portable C. */
float flint__f16_to_f32 (uint16_t h);

#endif
