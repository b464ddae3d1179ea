/* CPU inner loops: dot-product tiles and dtype widening, built three times (AVX-512, AVX2+FMA,
 * portable C) and picked once at start-up. See cpu_kernels.h.
 *
 * The canonical arithmetic of one dot product (per build): two vector accumulators, the first
 * fed by the even blocks of LANES elements and the second by the odd ones, one fused
 * multiply-add per block; then acc0 + acc1, a fixed horizontal reduction, and the leftover
 * elements (k not a multiple of LANES) added one by one. Each tile shape below runs exactly this
 * per (row, column) pair; only the interleaving between pairs differs. The engine is compiled
 * with -ffp-contract=off so that the portable build does not pick up FMAs in some shapes and not
 * in others. */
#include "cpu_kernels.h"

#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#if !defined(__clang__)
/* GCC 12's AVX-512 headers start masked operations from _mm512_undefined_*(), which
 * -W(maybe-)uninitialized reports at every inlined use: a known false positive. */
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#endif

float
flint__f16_to_f32 (uint16_t h)
{
  uint32_t sign = (uint32_t) (h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
  float f;

  if (exp == 0x1F)
    bits = sign | 0x7F800000u | (man << 13); /* inf, nan */
  else if (exp != 0)
    bits = sign | ((exp + 112) << 23) | (man << 13);
  else if (man == 0)
    bits = sign;
  else
    {
      /* subnormal: normalise */
      int e = -1;
      do
        {
          e++;
          man <<= 1;
        }
      while ((man & 0x400) == 0);
      bits = sign | ((uint32_t) (112 - e) << 23) | ((man & 0x3FF) << 13);
    }
  memcpy (&f, &bits, sizeof f);
  return f;
}

static inline float
bf16_to_f32 (uint16_t h)
{
  uint32_t bits = (uint32_t) h << 16;
  float f;
  memcpy (&f, &bits, sizeof f);
  return f;
}

static inline float
elem (const void *w, flint_dtype_t dt, size_t i)
{
  switch (dt)
    {
    case FLINT_DTYPE_BF16: return bf16_to_f32 (((const uint16_t *) w)[i]);
    case FLINT_DTYPE_F16: return flint__f16_to_f32 (((const uint16_t *) w)[i]);
    default: return ((const float *) w)[i];
    }
}

static void
widen_generic (const void *in, flint_dtype_t dt, float *out, size_t n)
{
  if (dt == FLINT_DTYPE_F32)
    {
      memcpy (out, in, n * sizeof *out);
      return;
    }
  for (size_t i = 0; i < n; i++)
    out[i] = elem (in, dt, i);
}

/* ---- portable C --------------------------------------------------------------------------- */

#define GL 8 /* lanes of the portable build */

static inline __attribute__ ((always_inline)) void
tile_generic_t (const float *const *x, const void *const *w, flint_dtype_t dt, uint32_t k, float *out, size_t os,
                const int NX, const int NW)
{
  float a0[FLINT_TILE_MAX][FLINT_TILE_MAX][GL], a1[FLINT_TILE_MAX][FLINT_TILE_MAX][GL];
  float wb0[FLINT_TILE_MAX][GL], wb1[FLINT_TILE_MAX][GL];
  uint32_t i = 0;

  memset (a0, 0, sizeof a0);
  memset (a1, 0, sizeof a1);
  for (; i + 2 * GL <= k; i += 2 * GL)
    {
      for (int c = 0; c < NW; c++)
        for (int l = 0; l < GL; l++)
          {
            wb0[c][l] = elem (w[c], dt, i + l);
            wb1[c][l] = elem (w[c], dt, i + GL + l);
          }
      for (int r = 0; r < NX; r++)
        for (int c = 0; c < NW; c++)
          for (int l = 0; l < GL; l++)
            {
              a0[r][c][l] += x[r][i + l] * wb0[c][l];
              a1[r][c][l] += x[r][i + GL + l] * wb1[c][l];
            }
    }
  if (i + GL <= k)
    {
      for (int c = 0; c < NW; c++)
        for (int l = 0; l < GL; l++)
          wb0[c][l] = elem (w[c], dt, i + l);
      for (int r = 0; r < NX; r++)
        for (int c = 0; c < NW; c++)
          for (int l = 0; l < GL; l++)
            a0[r][c][l] += x[r][i + l] * wb0[c][l];
      i += GL;
    }
  for (int r = 0; r < NX; r++)
    for (int c = 0; c < NW; c++)
      {
        float s[GL], t;
        for (int l = 0; l < GL; l++)
          s[l] = a0[r][c][l] + a1[r][c][l];
        t = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
        for (uint32_t j = i; j < k; j++)
          t += x[r][j] * elem (w[c], dt, j);
        out[r * os + c] = t;
      }
}

#define SHAPES(T, ...)                                                                                 \
  switch (nx * 8 + nw)                                                                                 \
    {                                                                                                  \
    case 1 * 8 + 1: T (__VA_ARGS__, 1, 1); break;                                                      \
    case 1 * 8 + 2: T (__VA_ARGS__, 1, 2); break;                                                      \
    case 1 * 8 + 4: T (__VA_ARGS__, 1, 4); break;                                                      \
    case 2 * 8 + 1: T (__VA_ARGS__, 2, 1); break;                                                      \
    case 2 * 8 + 2: T (__VA_ARGS__, 2, 2); break;                                                      \
    case 2 * 8 + 4: T (__VA_ARGS__, 2, 4); break;                                                      \
    case 3 * 8 + 1: T (__VA_ARGS__, 3, 1); break;                                                      \
    case 3 * 8 + 2: T (__VA_ARGS__, 3, 2); break;                                                      \
    case 4 * 8 + 1: T (__VA_ARGS__, 4, 1); break;                                                      \
    case 4 * 8 + 2: T (__VA_ARGS__, 4, 2); break;                                                      \
    default:                                                                                           \
      /* other shapes: column by column, which is the same arithmetic */                               \
      for (uint32_t c_ = 0; c_ < nw; c_++)                                                             \
        for (uint32_t r_ = 0; r_ < nx; r_++)                                                           \
          T (x + r_, w + c_, dt, k, out + r_ * os + c_, os, 1, 1);                                     \
      break;                                                                                           \
    }

static void
tile_generic (const float *const *x, uint32_t nx, const void *const *w, uint32_t nw, flint_dtype_t dt, uint32_t k,
              float *out, size_t os)
{
  SHAPES (tile_generic_t, x, w, dt, k, out, os)
}

static const flint_cpu_kernels_t k_generic = { "generic", tile_generic, widen_generic };

#if defined(__x86_64__)

/* ---- AVX2 + FMA + F16C -------------------------------------------------------------------- */

#define T_AVX2 __attribute__ ((target ("avx2,fma,f16c")))

static inline __attribute__ ((always_inline)) T_AVX2 __m256
ld256 (const void *w, flint_dtype_t dt, size_t i)
{
  if (dt == FLINT_DTYPE_BF16)
    return _mm256_castsi256_ps (
        _mm256_slli_epi32 (_mm256_cvtepu16_epi32 (_mm_loadu_si128 ((const __m128i *) ((const uint16_t *) w + i))), 16));
  if (dt == FLINT_DTYPE_F16)
    return _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) ((const uint16_t *) w + i)));
  return _mm256_loadu_ps ((const float *) w + i);
}

static inline __attribute__ ((always_inline)) T_AVX2 float
hsum256 (__m256 v)
{
  __m128 lo = _mm256_castps256_ps128 (v), hi = _mm256_extractf128_ps (v, 1);
  __m128 s = _mm_add_ps (lo, hi);                     /* (0+4) (1+5) (2+6) (3+7) */
  __m128 t = _mm_add_ps (s, _mm_movehl_ps (s, s));    /* (0+4)+(2+6), (1+5)+(3+7) */
  return _mm_cvtss_f32 (_mm_add_ss (t, _mm_shuffle_ps (t, t, 1)));
}

/* One tile shape for one dtype: the accumulators are arrays of the exact shape, so that they
 * live in registers (the shape-generic version spilled them). `DT` is a dtype constant. */
#define TILE_VEC(ATTR, NAME, VEC, ZERO, LDW, LDX, FMA, ADD, HSUM, LANES, NX, NW, DT)                  \
  static ATTR void NAME (const float *const *x, const void *const *w, uint32_t k, float *out, size_t os) \
  {                                                                                                    \
    VEC a0[NX][NW], a1[NX][NW];                                                                        \
    uint32_t i = 0;                                                                                    \
    for (int r = 0; r < NX; r++)                                                                       \
      for (int c = 0; c < NW; c++)                                                                     \
        a0[r][c] = a1[r][c] = ZERO ();                                                                 \
    for (; i + 2 * LANES <= k; i += 2 * LANES)                                                         \
      {                                                                                                \
        VEC w0[NW], w1[NW];                                                                            \
        for (int c = 0; c < NW; c++)                                                                   \
          {                                                                                            \
            w0[c] = LDW (w[c], DT, i);                                                                 \
            w1[c] = LDW (w[c], DT, i + LANES);                                                         \
          }                                                                                            \
        for (int r = 0; r < NX; r++)                                                                   \
          {                                                                                            \
            VEC x0 = LDX (x[r] + i), x1 = LDX (x[r] + i + LANES);                                      \
            for (int c = 0; c < NW; c++)                                                               \
              {                                                                                        \
                a0[r][c] = FMA (x0, w0[c], a0[r][c]);                                                  \
                a1[r][c] = FMA (x1, w1[c], a1[r][c]);                                                  \
              }                                                                                        \
          }                                                                                            \
      }                                                                                                \
    if (i + LANES <= k)                                                                                \
      {                                                                                                \
        for (int c = 0; c < NW; c++)                                                                   \
          {                                                                                            \
            VEC w0 = LDW (w[c], DT, i);                                                                \
            for (int r = 0; r < NX; r++)                                                               \
              a0[r][c] = FMA (LDX (x[r] + i), w0, a0[r][c]);                                           \
          }                                                                                            \
        i += LANES;                                                                                    \
      }                                                                                                \
    for (int r = 0; r < NX; r++)                                                                       \
      for (int c = 0; c < NW; c++)                                                                     \
        {                                                                                              \
          float t = HSUM (ADD (a0[r][c], a1[r][c]));                                                   \
          for (uint32_t j = i; j < k; j++)                                                             \
            t += x[r][j] * elem (w[c], DT, j);                                                         \
          out[r * os + c] = t;                                                                         \
        }                                                                                              \
  }

typedef void (*tile_fn) (const float *const *x, const void *const *w, uint32_t k, float *out, size_t os);

/* Shapes: index = nx * 8 + nw; the others run column by column (same arithmetic). */
#define SHAPE_LIST(X, ...)                                                                             \
  X (__VA_ARGS__, 1, 1) X (__VA_ARGS__, 1, 2) X (__VA_ARGS__, 1, 4) X (__VA_ARGS__, 2, 1)              \
  X (__VA_ARGS__, 2, 2) X (__VA_ARGS__, 2, 4) X (__VA_ARGS__, 3, 1) X (__VA_ARGS__, 3, 2)              \
  X (__VA_ARGS__, 4, 1) X (__VA_ARGS__, 4, 2)

static void
tile_dispatch (tile_fn const table[3][40], const float *const *x, uint32_t nx, const void *const *w, uint32_t nw,
               flint_dtype_t dt, uint32_t k, float *out, size_t os)
{
  int d = dt == FLINT_DTYPE_BF16 ? 0 : dt == FLINT_DTYPE_F16 ? 1 : 2;
  tile_fn f = nx <= 4 && nw <= 4 ? table[d][nx * 8 + nw] : NULL;
  if (f)
    {
      f (x, w, k, out, os);
      return;
    }
  for (uint32_t c = 0; c < nw; c++)
    for (uint32_t r = 0; r < nx; r++)
      table[d][1 * 8 + 1] (x + r, w + c, k, out + r * os + c, os);
}

static inline __attribute__ ((always_inline)) T_AVX2 __m256
ldx256 (const float *p)
{
  return _mm256_loadu_ps (p);
}

#define AVX2_TILE(DTN, NX, NW)                                                                         \
  TILE_VEC (T_AVX2, tile_avx2_##DTN##_##NX##_##NW, __m256, _mm256_setzero_ps, ld256, ldx256,            \
            _mm256_fmadd_ps, _mm256_add_ps, hsum256, 8, NX, NW, FLINT_DTYPE_##DTN)
SHAPE_LIST (AVX2_TILE, BF16)
SHAPE_LIST (AVX2_TILE, F16)
SHAPE_LIST (AVX2_TILE, F32)

#define TABLE_ENTRY(PFX, DTN, NX, NW) [NX * 8 + NW] = PFX##_##DTN##_##NX##_##NW,
static tile_fn const avx2_tiles[3][40] = {
  { SHAPE_LIST (TABLE_ENTRY, tile_avx2, BF16) },
  { SHAPE_LIST (TABLE_ENTRY, tile_avx2, F16) },
  { SHAPE_LIST (TABLE_ENTRY, tile_avx2, F32) },
};

static void
tile_avx2 (const float *const *x, uint32_t nx, const void *const *w, uint32_t nw, flint_dtype_t dt, uint32_t k,
           float *out, size_t os)
{
  tile_dispatch (avx2_tiles, x, nx, w, nw, dt, k, out, os);
}

static T_AVX2 void
widen_avx2 (const void *in, flint_dtype_t dt, float *out, size_t n)
{
  size_t i = 0;
  if (dt == FLINT_DTYPE_F32)
    {
      memcpy (out, in, n * sizeof *out);
      return;
    }
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps (out + i, ld256 (in, dt, i));
  for (; i < n; i++)
    out[i] = elem (in, dt, i);
}

static const flint_cpu_kernels_t k_avx2 = { "avx2", tile_avx2, widen_avx2 };

/* ---- AVX-512 ------------------------------------------------------------------------------ */

#define T_AVX512 __attribute__ ((target ("avx512f,avx2,fma,f16c")))

static inline __attribute__ ((always_inline)) T_AVX512 __m512
ld512 (const void *w, flint_dtype_t dt, size_t i)
{
  if (dt == FLINT_DTYPE_BF16)
    return _mm512_castsi512_ps (
        _mm512_slli_epi32 (_mm512_cvtepu16_epi32 (_mm256_loadu_si256 ((const __m256i *) ((const uint16_t *) w + i))), 16));
  if (dt == FLINT_DTYPE_F16)
    return _mm512_cvtph_ps (_mm256_loadu_si256 ((const __m256i *) ((const uint16_t *) w + i)));
  return _mm512_loadu_ps ((const float *) w + i);
}

static inline __attribute__ ((always_inline)) T_AVX512 __m512
ldx512 (const float *p)
{
  return _mm512_loadu_ps (p);
}

/* 512 → 256 by adding the halves, then the AVX2 reduction: a fixed order. */
static inline __attribute__ ((always_inline)) T_AVX512 float
hsum512 (__m512 s)
{
  return hsum256 (_mm256_add_ps (_mm512_castps512_ps256 (s),
                                 _mm256_castpd_ps (_mm512_extractf64x4_pd (_mm512_castps_pd (s), 1))));
}

#define AVX512_TILE(DTN, NX, NW)                                                                       \
  TILE_VEC (T_AVX512, tile_avx512_##DTN##_##NX##_##NW, __m512, _mm512_setzero_ps, ld512, ldx512,        \
            _mm512_fmadd_ps, _mm512_add_ps, hsum512, 16, NX, NW, FLINT_DTYPE_##DTN)
SHAPE_LIST (AVX512_TILE, BF16)
SHAPE_LIST (AVX512_TILE, F16)
SHAPE_LIST (AVX512_TILE, F32)

static tile_fn const avx512_tiles[3][40] = {
  { SHAPE_LIST (TABLE_ENTRY, tile_avx512, BF16) },
  { SHAPE_LIST (TABLE_ENTRY, tile_avx512, F16) },
  { SHAPE_LIST (TABLE_ENTRY, tile_avx512, F32) },
};

static void
tile_avx512 (const float *const *x, uint32_t nx, const void *const *w, uint32_t nw, flint_dtype_t dt, uint32_t k,
             float *out, size_t os)
{
  tile_dispatch (avx512_tiles, x, nx, w, nw, dt, k, out, os);
}

static T_AVX512 void
widen_avx512 (const void *in, flint_dtype_t dt, float *out, size_t n)
{
  size_t i = 0;
  if (dt == FLINT_DTYPE_F32)
    {
      memcpy (out, in, n * sizeof *out);
      return;
    }
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps (out + i, ld512 (in, dt, i));
  for (; i < n; i++)
    out[i] = elem (in, dt, i);
}

static const flint_cpu_kernels_t k_avx512 = { "avx512", tile_avx512, widen_avx512 };

#endif /* __x86_64__ */

const flint_cpu_kernels_t *
flint__cpu_kernels_detect (const char *force)
{
#if defined(__x86_64__)
  bool avx512, avx2, f16c;
  __builtin_cpu_init ();
#if defined(__clang__)
  f16c = true; /* clang cannot ask for it; every CPU with AVX2 has F16C */
#else
  f16c = __builtin_cpu_supports ("f16c");
#endif
  avx2 = __builtin_cpu_supports ("avx2") && __builtin_cpu_supports ("fma") && f16c;
  avx512 = avx2 && __builtin_cpu_supports ("avx512f");
  if (force && strcmp (force, "generic") == 0)
    return &k_generic;
  if (force && strcmp (force, "avx2") == 0)
    return avx2 ? &k_avx2 : &k_generic;
  if (avx512)
    return &k_avx512;
  if (avx2)
    return &k_avx2;
#else
  (void) force;
#endif
  return &k_generic;
}
