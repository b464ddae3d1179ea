/* The CUDA backend's kernels; see cuda_kernels.h for the launchers' contracts.
 *
 * Built by nvcc with --fmad=false (worker/engine/meson.build): a multiply followed by an add
 * stays two rounded operations, as in the CPU backend (-ffp-contract=off), and the one place
 * that wants fused multiply-adds (the dot products, like the CPU's SIMD tiles) says so with
 * __fmaf_rn. Divisions, square roots and expf are the IEEE / accurate versions (no fast math).
 *
 * The matrix product (k_matmul) is the engine's hot loop. Decoding is bound by memory
 * bandwidth: every weight byte is read once per step, whatever the number of rows, so a block
 * takes NC weight rows (output columns) and streams them once with 16-byte loads while it
 * applies them to RT activation rows at a time. The inner dimension K is split into fixed
 * pieces: eight warps take consecutive eighths of K, each lane of a warp takes every 32nd
 * 16-byte chunk of its eighth and accumulates it sequentially with FMAs, then a fixed butterfly
 * sums the 32 lanes and warp 0's thread sums the eight warps in order. That order is a function
 * of K and the dtype only, so a row's result never depends on the batch around it (backend.h's
 * contract): RT and NC only decide which outputs share a pass over the weights. */
#include "cuda_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

#define FULL_MASK 0xffffffffu

/* ---- element access ------------------------------------------------------------------------ */

__device__ __forceinline__ float
bf16_to_f32 (uint32_t h)
{
  return __uint_as_float (h << 16);
}

__device__ __forceinline__ float
f16_to_f32 (uint32_t h)
{
  return __half2float (__ushort_as_half ((unsigned short) h));
}

template <int DT>
__device__ __forceinline__ float
elem (const void *p, size_t i)
{
  if (DT == FK_F32)
    return ((const float *) p)[i];
  if (DT == FK_BF16)
    return bf16_to_f32 (((const uint16_t *) p)[i]);
  return f16_to_f32 (((const uint16_t *) p)[i]);
}

__device__ __forceinline__ float
elem_rt (const void *p, int dt, size_t i)
{
  switch (dt)
    {
    case FK_BF16: return elem<FK_BF16> (p, i);
    case FK_F16: return elem<FK_F16> (p, i);
    default: return elem<FK_F32> (p, i);
    }
}

/* 16 bytes of weights at chunk `q` of row `w`, widened (exactly) to F32. */
template <int DT>
__device__ __forceinline__ void
load_chunk (const void *w, uint32_t q, float *o)
{
  uint4 u = __ldg ((const uint4 *) w + q);
  if (DT == FK_F32)
    {
      o[0] = __uint_as_float (u.x);
      o[1] = __uint_as_float (u.y);
      o[2] = __uint_as_float (u.z);
      o[3] = __uint_as_float (u.w);
      return;
    }
  uint32_t a[4] = { u.x, u.y, u.z, u.w };
#pragma unroll
  for (int i = 0; i < 4; i++)
    {
      /* little endian: element 2i is the low half */
      o[2 * i] = DT == FK_BF16 ? bf16_to_f32 (a[i] & 0xffffu) : f16_to_f32 (a[i] & 0xffffu);
      o[2 * i + 1] = DT == FK_BF16 ? bf16_to_f32 (a[i] >> 16) : f16_to_f32 (a[i] >> 16);
    }
}

/* ---- block reductions (fixed order: shuffle butterfly, then warps in index order) ------------ */

struct op_max {
  __device__ float operator() (float a, float b) const { return fmaxf (a, b); }
};
struct op_add {
  __device__ float operator() (float a, float b) const { return a + b; }
  __device__ double operator() (double a, double b) const { return a + b; }
};

template <typename T, typename Op>
__device__ T
block_reduce (T v, T *red, Op op)
{
  const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int m = 16; m > 0; m >>= 1)
    v = op (v, __shfl_xor_sync (FULL_MASK, v, m));
  __syncthreads (); /* red may still be read by a previous reduction */
  if (lane == 0)
    red[warp] = v;
  __syncthreads ();
  v = red[0];
  for (unsigned w = 1; w < nw; w++)
    v = op (v, red[w]);
  return v;
}

/* ---- embed, norm, element-wise -------------------------------------------------------------- */

template <int DT>
__global__ void
k_embed (float *out, const void *table, uint32_t cols, fk_batch_t b)
{
  const size_t row = blockIdx.x, tok = (size_t) b.tokens[row];
  for (uint32_t j = threadIdx.x; j < cols; j += blockDim.x)
    out[row * cols + j] = elem<DT> (table, tok * cols + j);
}

__global__ void
k_rmsnorm (float *out, const float *x, const void *w, int wdt, uint32_t d, float eps)
{
  __shared__ double red[32];
  const float *xr = x + (size_t) blockIdx.x * d;
  float *o = out + (size_t) blockIdx.x * d;
  double ss = 0;
  float scale;

  for (uint32_t i = threadIdx.x; i < d; i += blockDim.x)
    ss += (double) xr[i] * xr[i];
  ss = block_reduce (ss, red, op_add ());
  scale = (float) (1.0 / sqrt (ss / d + eps));
  for (uint32_t i = threadIdx.x; i < d; i += blockDim.x)
    o[i] = xr[i] * scale * elem_rt (w, wdt, i);
}

__global__ void
k_silu_mul (float *out, const float *g, const float *u, size_t n)
{
  for (size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t) gridDim.x * blockDim.x)
    out[i] = g[i] / (1.0f + expf (-g[i])) * u[i];
}

__global__ void
k_add (float *x, const float *y, size_t n)
{
  for (size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t) gridDim.x * blockDim.x)
    x[i] += y[i];
}

__global__ void
k_gather (float *out, const float *x, uint32_t dim, fk_batch_t b)
{
  const size_t src = b.out_rows[blockIdx.x];
  for (uint32_t j = threadIdx.x; j < dim; j += blockDim.x)
    out[(size_t) blockIdx.x * dim + j] = x[src * dim + j];
}

__global__ void
k_rope (float *x, uint32_t heads, uint32_t hd, const float *cs, fk_batch_t b)
{
  const uint32_t row = blockIdx.x / heads, h = blockIdx.x % heads, half = hd / 2;
  const float *t = cs + (size_t) b.pos[row] * half * 2;
  float *v = x + ((size_t) row * heads + h) * hd;
  for (uint32_t j = threadIdx.x; j < half; j += blockDim.x)
    {
      float a = v[j], c = v[j + half], co = t[2 * j], si = t[2 * j + 1];
      v[j] = a * co - c * si;
      v[j + half] = c * co + a * si;
    }
}

__global__ void
k_kv_store (fk_kv_t kv, uint32_t layer, const float *k, const float *v, fk_batch_t b)
{
  const size_t rowf = (size_t) kv.kv_heads * kv.head_dim, i = blockIdx.x;
  const size_t slot = b.slot[i], pos = b.pos[i];
  float *kd = kv.mem + ((((size_t) layer * 2 + 0) * kv.seqs + slot) * kv.context + pos) * rowf;
  float *vd = kv.mem + ((((size_t) layer * 2 + 1) * kv.seqs + slot) * kv.context + pos) * rowf;
  for (size_t j = threadIdx.x; j < rowf; j += blockDim.x)
    {
      kd[j] = k[i * rowf + j];
      vd[j] = v[i * rowf + j];
    }
}

template <int DT>
__global__ void
k_split16 (void *hi, void *lo, const float *x, size_t n)
{
  for (size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t) gridDim.x * blockDim.x)
    {
      float v = x[i];
      if (DT == FK_BF16)
        {
          __nv_bfloat16 h = __float2bfloat16_rn (v);
          ((__nv_bfloat16 *) hi)[i] = h;
          ((__nv_bfloat16 *) lo)[i] = __float2bfloat16_rn (v - __bfloat162float (h));
        }
      else
        {
          __half h = __float2half_rn (v);
          ((__half *) hi)[i] = h;
          ((__half *) lo)[i] = __float2half_rn (v - __half2float (h));
        }
    }
}

__global__ void
k_add_bias (float *out, const void *bias, int bdt, uint32_t n, size_t total)
{
  for (size_t i = (size_t) blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t) gridDim.x * blockDim.x)
    out[i] += elem_rt (bias, bdt, i % n);
}

/* ---- attention ------------------------------------------------------------------------------ */

#define AT_THREADS 128

/* One block per (head, row). The scores live in shared memory (fk_attention_smem). Each score
 * is one thread's sequential dot product, and each output element one thread's sequential sum
 * over the positions: the CPU backend's order. Only the softmax denominator is a tree sum. */
__global__ void __launch_bounds__ (AT_THREADS)
k_attention (float *out, const float *q, fk_kv_t kv, uint32_t layer, uint32_t heads, uint32_t hd, float scale,
             uint32_t window, fk_batch_t b)
{
  extern __shared__ float sm[];
  const uint32_t h = blockIdx.x, row = blockIdx.y, tid = threadIdx.x;
  const uint32_t pos = b.pos[row], slot = b.slot[row];
  const uint32_t start = window && pos + 1 > window ? pos + 1 - window : 0, len = pos - start + 1;
  const uint32_t kvh = h / (heads / kv.kv_heads);
  const size_t rowf = (size_t) kv.kv_heads * hd;
  const float *K = kv.mem + ((((size_t) layer * 2 + 0) * kv.seqs + slot) * kv.context + start) * rowf + (size_t) kvh * hd;
  const float *V = kv.mem + ((((size_t) layer * 2 + 1) * kv.seqs + slot) * kv.context + start) * rowf + (size_t) kvh * hd;
  const float *qr = q + ((size_t) row * heads + h) * hd;
  float *qs = sm, *red = sm + hd, *s = red + 32;
  float mx = -INFINITY, sum = 0;

  for (uint32_t e = tid; e < hd; e += blockDim.x)
    qs[e] = qr[e];
  __syncthreads ();
  for (uint32_t t = tid; t < len; t += blockDim.x)
    {
      const float *kr = K + (size_t) t * rowf;
      float d = 0;
      for (uint32_t e = 0; e < hd; e++)
        d += qs[e] * kr[e];
      d *= scale;
      s[t] = d;
      mx = fmaxf (mx, d);
    }
  mx = block_reduce (mx, red, op_max ());
  for (uint32_t t = tid; t < len; t += blockDim.x)
    {
      float ev = expf (s[t] - mx);
      s[t] = ev;
      sum += ev;
    }
  sum = block_reduce (sum, red, op_add ());
  for (uint32_t t = tid; t < len; t += blockDim.x)
    s[t] = s[t] / sum;
  __syncthreads ();
  for (uint32_t e = tid; e < hd; e += blockDim.x)
    {
      float o = 0;
      for (uint32_t t = 0; t < len; t++)
        o += s[t] * V[(size_t) t * rowf + e];
      out[((size_t) row * heads + h) * hd + e] = o;
    }
}

/* ---- matrix product ------------------------------------------------------------------------- */

#define MM_WARPS 8

template <int DT, int RT, int NC, bool VEC>
__global__ void __launch_bounds__ (MM_WARPS * 32)
k_matmul (float *__restrict__ out, const float *__restrict__ x, uint32_t rows, const void *__restrict__ w, uint32_t n,
          uint32_t k, const void *bias, int bdt)
{
  constexpr int ES = DT == FK_F32 ? 4 : 2;
  constexpr int V = VEC ? 16 / ES : 1;      /* elements per chunk */
  __shared__ float part[MM_WARPS][RT][NC];
  const uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31, c0 = blockIdx.x * NC;
  const uint32_t nchunks = k / V, per_warp = (nchunks + MM_WARPS - 1) / MM_WARPS;
  const uint32_t q0 = warp * per_warp, q1 = min (q0 + per_warp, nchunks);
  const uint8_t *wr[NC];

#pragma unroll
  for (int c = 0; c < NC; c++)
    wr[c] = (const uint8_t *) w + (size_t) min (c0 + c, n - 1) * k * ES;

  for (uint32_t r0 = 0; r0 < rows; r0 += RT)
    {
      float acc[RT][NC];
      const float *xr[RT];
#pragma unroll
      for (int r = 0; r < RT; r++)
        {
          xr[r] = x + (size_t) min (r0 + r, rows - 1) * k;
#pragma unroll
          for (int c = 0; c < NC; c++)
            acc[r][c] = 0.0f;
        }
#pragma unroll 2
      for (uint32_t q = q0 + lane; q < q1; q += 32)
        {
          float wv[NC][V];
#pragma unroll
          for (int c = 0; c < NC; c++)
            {
              if (VEC)
                load_chunk<DT> (wr[c], q, wv[c]);
              else
                wv[c][0] = elem<DT> (wr[c], q);
            }
#pragma unroll
          for (int r = 0; r < RT; r++)
            {
              float xv[V];
              if (VEC)
                {
#pragma unroll
                  for (int i = 0; i < V / 4; i++)
                    {
                      float4 f = __ldg ((const float4 *) (xr[r] + (size_t) q * V) + i);
                      xv[4 * i] = f.x;
                      xv[4 * i + 1] = f.y;
                      xv[4 * i + 2] = f.z;
                      xv[4 * i + 3] = f.w;
                    }
                }
              else
                xv[0] = __ldg (xr[r] + q);
#pragma unroll
              for (int c = 0; c < NC; c++)
#pragma unroll
                for (int e = 0; e < V; e++)
                  acc[r][c] = __fmaf_rn (xv[e], wv[c][e], acc[r][c]);
            }
        }
#pragma unroll
      for (int r = 0; r < RT; r++)
#pragma unroll
        for (int c = 0; c < NC; c++)
          {
            float v = acc[r][c];
#pragma unroll
            for (int m = 16; m > 0; m >>= 1)
              v += __shfl_xor_sync (FULL_MASK, v, m);
            if (lane == 0)
              part[warp][r][c] = v;
          }
      __syncthreads ();
      if (threadIdx.x < RT * NC)
        {
          const uint32_t r = threadIdx.x / NC, c = threadIdx.x % NC, row = r0 + r, col = c0 + c;
          if (row < rows && col < n)
            {
              float s = part[0][r][c];
#pragma unroll
              for (int i = 1; i < MM_WARPS; i++)
                s += part[i][r][c];
              if (bias)
                s += elem_rt (bias, bdt, col);
              out[(size_t) row * n + col] = s;
            }
        }
      __syncthreads ();
    }
}

template <int DT, int RT, int NC>
static void
launch_matmul_t (float *out, const float *x, uint32_t rows, const void *w, uint32_t n, uint32_t k, const void *bias,
                 int bdt, bool vec, cudaStream_t st)
{
  dim3 grid ((n + NC - 1) / NC);
  if (vec)
    k_matmul<DT, RT, NC, true><<<grid, MM_WARPS * 32, 0, st>>> (out, x, rows, w, n, k, bias, bdt);
  else
    k_matmul<DT, RT, NC, false><<<grid, MM_WARPS * 32, 0, st>>> (out, x, rows, w, n, k, bias, bdt);
}

template <int DT>
static void
launch_matmul_dt (float *out, const float *x, uint32_t rows, const void *w, uint32_t n, uint32_t k, const void *bias,
                  int bdt, bool vec, cudaStream_t st)
{
  /* the tile shape is a matter of speed only (see the top of the file) */
  if (rows == 1)
    launch_matmul_t<DT, 1, 2> (out, x, rows, w, n, k, bias, bdt, vec, st);
  else if (rows == 2)
    launch_matmul_t<DT, 2, 4> (out, x, rows, w, n, k, bias, bdt, vec, st);
  else if (rows <= 4)
    launch_matmul_t<DT, 4, 4> (out, x, rows, w, n, k, bias, bdt, vec, st);
  else
    launch_matmul_t<DT, 8, 4> (out, x, rows, w, n, k, bias, bdt, vec, st);
}

/* ---- launchers ------------------------------------------------------------------------------ */

static inline cudaStream_t
S (void *stream)
{
  return (cudaStream_t) stream;
}

static inline unsigned
ew_blocks (size_t n)
{
  size_t b = (n + 255) / 256;
  return (unsigned) (b > 4096 ? 4096 : b ? b : 1);
}

static inline fk_batch_t
B (const fk_batch_t *b)
{
  return *b;
}

extern "C" int
fk_embed (float *out, const void *table, int dtype, uint32_t cols, const fk_batch_t *b, uint32_t n, void *stream)
{
  if (n == 0)
    return 0;
  switch (dtype)
    {
    case FK_BF16: k_embed<FK_BF16><<<n, 256, 0, S (stream)>>> (out, table, cols, B (b)); break;
    case FK_F16: k_embed<FK_F16><<<n, 256, 0, S (stream)>>> (out, table, cols, B (b)); break;
    default: k_embed<FK_F32><<<n, 256, 0, S (stream)>>> (out, table, cols, B (b)); break;
    }
  return (int) cudaGetLastError ();
}

extern "C" int
fk_rmsnorm (float *out, const float *x, const void *w, int wdtype, uint32_t rows, uint32_t d, float eps, void *stream)
{
  if (rows == 0)
    return 0;
  k_rmsnorm<<<rows, 256, 0, S (stream)>>> (out, x, w, wdtype, d, eps);
  return (int) cudaGetLastError ();
}

extern "C" int
fk_matmul (float *out, const float *x, uint32_t rows, const void *w, int wdtype, uint32_t n, uint32_t k, const void *bias,
           int bdtype, void *stream)
{
  const uint32_t v = wdtype == FK_F32 ? 4 : 8;
  /* 16-byte chunks need K a multiple of the chunk and aligned rows (always true for the
   * backend's own buffers; a function of K and the dtype only, so invariant across batches) */
  const bool vec = k % v == 0 && ((uintptr_t) w & 15) == 0 && ((uintptr_t) x & 15) == 0;
  if (rows == 0 || n == 0)
    return 0;
  switch (wdtype)
    {
    case FK_BF16: launch_matmul_dt<FK_BF16> (out, x, rows, w, n, k, bias, bdtype, vec, S (stream)); break;
    case FK_F16: launch_matmul_dt<FK_F16> (out, x, rows, w, n, k, bias, bdtype, vec, S (stream)); break;
    default: launch_matmul_dt<FK_F32> (out, x, rows, w, n, k, bias, bdtype, vec, S (stream)); break;
    }
  return (int) cudaGetLastError ();
}

extern "C" int
fk_rope (float *x, uint32_t n, uint32_t heads, uint32_t head_dim, const float *cos_sin, const fk_batch_t *b, void *stream)
{
  uint32_t half = head_dim / 2, threads = half < 32 ? 32 : half > 128 ? 128 : (half + 31) / 32 * 32;
  if (n == 0 || heads == 0)
    return 0;
  k_rope<<<n * heads, threads, 0, S (stream)>>> (x, heads, head_dim, cos_sin, B (b));
  return (int) cudaGetLastError ();
}

extern "C" int
fk_kv_store (const fk_kv_t *kv, uint32_t layer, const float *k, const float *v, uint32_t n, const fk_batch_t *b,
             void *stream)
{
  if (n == 0)
    return 0;
  k_kv_store<<<n, 256, 0, S (stream)>>> (*kv, layer, k, v, B (b));
  return (int) cudaGetLastError ();
}

extern "C" size_t
fk_attention_smem (uint32_t context, uint32_t window, uint32_t head_dim)
{
  uint32_t len = window && window < context ? window : context;
  return ((size_t) head_dim + 32 + len) * sizeof (float);
}

extern "C" int
fk_attention_prepare (size_t bytes)
{
  return (int) cudaFuncSetAttribute (k_attention, cudaFuncAttributeMaxDynamicSharedMemorySize, (int) bytes);
}

extern "C" int
fk_attention (float *out, const float *q, const fk_kv_t *kv, uint32_t layer, uint32_t n, uint32_t heads,
              uint32_t head_dim, float scale, uint32_t window, const fk_batch_t *b, void *stream)
{
  dim3 grid (heads, n);
  if (n == 0 || heads == 0)
    return 0;
  k_attention<<<grid, AT_THREADS, fk_attention_smem (kv->context, window, head_dim), S (stream)>>> (
      out, q, *kv, layer, heads, head_dim, scale, window, B (b));
  return (int) cudaGetLastError ();
}

extern "C" int
fk_silu_mul (float *out, const float *gate, const float *up, size_t n, void *stream)
{
  if (n == 0)
    return 0;
  k_silu_mul<<<ew_blocks (n), 256, 0, S (stream)>>> (out, gate, up, n);
  return (int) cudaGetLastError ();
}

extern "C" int
fk_add (float *x, const float *y, size_t n, void *stream)
{
  if (n == 0)
    return 0;
  k_add<<<ew_blocks (n), 256, 0, S (stream)>>> (x, y, n);
  return (int) cudaGetLastError ();
}

extern "C" int
fk_gather (float *out, const float *x, uint32_t dim, uint32_t n_out, const fk_batch_t *b, void *stream)
{
  if (n_out == 0)
    return 0;
  k_gather<<<n_out, 256, 0, S (stream)>>> (out, x, dim, B (b));
  return (int) cudaGetLastError ();
}

extern "C" int
fk_split16 (void *hi, void *lo, const float *x, size_t n, int dtype, void *stream)
{
  if (n == 0)
    return 0;
  if (dtype == FK_BF16)
    k_split16<FK_BF16><<<ew_blocks (n), 256, 0, S (stream)>>> (hi, lo, x, n);
  else
    k_split16<FK_F16><<<ew_blocks (n), 256, 0, S (stream)>>> (hi, lo, x, n);
  return (int) cudaGetLastError ();
}

extern "C" int
fk_add_bias (float *out, const void *bias, int bdtype, uint32_t rows, uint32_t n, void *stream)
{
  size_t total = (size_t) rows * n;
  if (total == 0)
    return 0;
  k_add_bias<<<ew_blocks (total), 256, 0, S (stream)>>> (out, bias, bdtype, n, total);
  return (int) cudaGetLastError ();
}
