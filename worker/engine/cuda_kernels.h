/* The CUDA backend's kernels (cuda_kernels.cu), behind plain C launchers so that the backend
 * itself (backend_cuda.c) stays C and is built like the rest of the engine.
 *
 * Every launcher enqueues on `stream` (a cudaStream_t) and returns the CUDA runtime's error code
 * of the launch (0 = cudaSuccess); errors during execution surface at the next synchronisation.
 * Activations are F32; weights are F32, F16 or BF16 (FK_F32 .. FK_BF16). All arithmetic follows
 * the CPU backend's operation order where backend.h's numerics contract needs it; the kernels
 * are compiled with --fmad=false so nothing is contracted behind our back, and the matrix
 * product uses fused multiply-adds explicitly (as the CPU's SIMD tiles do).
 *
 * Batch invariance (backend.h): fk_matmul computes each output element with the same sequence
 * of operations whatever the number of rows, the rows' values and the launch shape; the split
 * of the inner dimension depends on K and the dtype only. The other kernels are row-wise or per
 * (row, head). */
#ifndef FLINT_ENGINE_CUDA_KERNELS_H
#define FLINT_ENGINE_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
  FK_F32 = 0,
  FK_F16 = 1,
  FK_BF16 = 2,
};

/* Where the batch's per-row tables live on the device (uploaded by batch_set). */
typedef struct fk_batch_s {
  const int32_t *tokens;
  const uint32_t *pos;
  const uint32_t *slot;
  const uint32_t *out_rows;
} fk_batch_t;

/* The KV cache's layout, the CPU backend's: for layer l, K (which = 0) or V (1), slot s,
 * position p, the row of kv_heads x head_dim floats at
 * mem + ((((l * 2 + which) * seqs + s) * context + p) * kv_heads * head_dim). */
typedef struct fk_kv_s {
  float *mem;
  uint32_t seqs, context, kv_heads, head_dim;
} fk_kv_t;

/* out[i] = table[tokens[i]] for n rows of `cols`. */
int fk_embed (float *out, const void *table, int dtype, uint32_t cols, const fk_batch_t *b, uint32_t n, void *stream);

/* RMSNorm of `rows` rows of d (in place allowed): sum of squares in double, as on the CPU. */
int fk_rmsnorm (float *out, const float *x, const void *w, int wdtype, uint32_t rows, uint32_t d, float eps,
                void *stream);

/* out[r][c] = dot(x[r], w[c]) (+ bias[c]): x rows x K, w N x K row-major, out rows x N. */
int fk_matmul (float *out, const float *x, uint32_t rows, const void *w, int wdtype, uint32_t n, uint32_t k,
               const void *bias, int bdtype, void *stream);

/* Rotary embedding in place on x (n rows x heads x head_dim), angle table cos_sin. */
int fk_rope (float *x, uint32_t n, uint32_t heads, uint32_t head_dim, const float *cos_sin, const fk_batch_t *b,
             void *stream);

/* Stores the n rows of k and v (kv_heads x head_dim each) at (slot, pos) of `layer`. */
int fk_kv_store (const fk_kv_t *kv, uint32_t layer, const float *k, const float *v, uint32_t n, const fk_batch_t *b,
                 void *stream);

/* Dynamic shared memory fk_attention needs for a cache of `context` positions and `window`. */
size_t fk_attention_smem (uint32_t context, uint32_t window, uint32_t head_dim);
/* Raises fk_attention's shared-memory limit to `bytes` (once per size; call outside capture). */
int fk_attention_prepare (size_t bytes);

/* Causal attention of `layer` for the n rows (see backend.h), out n x heads x head_dim. */
int fk_attention (float *out, const float *q, const fk_kv_t *kv, uint32_t layer, uint32_t n, uint32_t heads,
                  uint32_t head_dim, float scale, uint32_t window, const fk_batch_t *b, void *stream);

/* out[i] = silu(gate[i]) * up[i]. */
int fk_silu_mul (float *out, const float *gate, const float *up, size_t n, void *stream);

/* x[i] += y[i]. */
int fk_add (float *x, const float *y, size_t n, void *stream);

/* out[i] = x[out_rows[i]] (dim floats), i < n_out. */
int fk_gather (float *out, const float *x, uint32_t dim, uint32_t n_out, const fk_batch_t *b, void *stream);

/* For the cuBLAS path: x (n floats) split into two 16-bit halves of `dtype` (FK_F16 or FK_BF16)
 * with hi + lo ~= x to about 16 significant bits. */
int fk_split16 (void *hi, void *lo, const float *x, size_t n, int dtype, void *stream);

/* out[r][c] += bias[c] for rows x n. */
int fk_add_bias (float *out, const void *bias, int bdtype, uint32_t rows, uint32_t n, void *stream);

#ifdef __cplusplus
}
#endif

#endif
