/* The compute backend of the model engine: a small table of function pointers with one
 * implementation per device (backend_cpu.c now, backend_cuda.cu for GPUs), the way libuv keeps
 * linux.c and kqueue.c behind one interface.
 *
 * The decoder itself (forward.c) is written once against this table: it owns the order of the
 * operations, the backend owns memory and kernels. Everything a backend touches is "device
 * memory": pointers returned by alloc, weight and KV-cache objects it created. On the CPU backend
 * device memory is ordinary memory and weights are the host mapping itself (zero copy); a GPU
 * backend copies weights into memory it maps with the CUDA virtual memory API.
 *
 * Execution model: operations are issued in program order from one thread (the engine's
 * scheduler) and may run asynchronously (a CUDA stream); `download` waits for everything issued
 * before it and is where errors surface. Compute operations return nothing: a backend that hits
 * an error (a failed launch) records it, skips further work, and reports it from `download`.
 *
 * Numerics contract, so that batching never changes a result: every output element of every
 * operation is computed by the same sequence of floating-point operations whatever the batch
 * size, the other sequences in the batch, the thread count or the split of work. The CPU
 * backend meets it by construction (see backend_cpu.c); greedy decoding is then token-identical
 * between a request run alone, in a batch, and under speculative decoding.
 *
 * Checkpoint support (GPU snapshots, issue 7): weights_release drops the physical memory behind
 * a weight set but keeps its device addresses; weights_restore maps new physical memory at the
 * same addresses and copies the weights again from their host pages (the node weight store,
 * which a restored process still maps). KV caches are freed and created anew around a
 * checkpoint. Kernels, captured graphs and every pointer in the model stay valid throughout. */
#ifndef FLINT_ENGINE_BACKEND_H
#define FLINT_ENGINE_BACKEND_H

#include "safetensors.h"
#include "flint/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct flint_backend_s flint_backend_t;
typedef struct flint_backend_ops_s flint_backend_ops_t;
typedef struct flint_bweights_s flint_bweights_t;   /* a model's weights on the device */
typedef struct flint_bkv_s flint_bkv_t;             /* a KV cache on the device */

/* What the last weights_upload or weights_restore cost (all zeros on the CPU, which copies
 * nothing). The checkpoint path reports these as restore phases. */
typedef struct flint_backend_upload_stats_s {
  uint64_t bytes;             /* weight bytes copied to the device */
  double map_ms;              /* physical device memory created and mapped into the reserved range */
  double pin_ms;              /* pinned staging allocated, or the host pages registered */
  double copy_ms;             /* the host -> device copy itself */
  const char *mode;           /* "staging", "register", or NULL when nothing was copied */
} flint_backend_upload_stats_t;

/* Every backend object starts with this header; the rest is the backend's own. */
struct flint_backend_s {
  const flint_backend_ops_t *ops;
  const char *name;           /* "cpu", "cuda" */
  char device[128];           /* human-readable: "x86-64 AVX-512, 2 threads", "NVIDIA H100 80GB" */
  /* Set by flint__backend_open when "auto" passed over a backend that could not be opened:
   * why ("cuda: no CUDA device: cuInit: CUDA_ERROR_NO_DEVICE ..."), for the worker's log. */
  char fallback[256];
  flint_backend_upload_stats_t upload;   /* written by weights_upload / weights_restore */
};

/* What the engine asks of a backend when it opens one. */
typedef struct flint_backend_options_s {
  uint32_t threads;           /* CPU: worker threads (0 = the CPUs this process may run on) */
  int device;                 /* GPU ordinal (0 = the first) */
  const char *kernels;        /* CPU: force a kernel build ("generic", "avx2"; NULL = the best) */
} flint_backend_options_t;

/* A weight tensor to place on the device (weights_upload fills `dev`). */
typedef struct flint_bweight_s {
  const void *host;           /* its bytes in the host mapping of the safetensors file */
  uint64_t bytes;
  const void *dev;            /* out: where kernels read it; stays valid across release/restore */
} flint_bweight_t;

/* A matrix or vector operand in device memory: `rows` x `cols`, row-major, of `dtype` (F32, F16
 * or BF16). Vectors (norm weights, biases) have rows == 1. */
typedef struct flint_wmat_s {
  const void *data;
  flint_dtype_t dtype;
  uint32_t rows, cols;
} flint_wmat_t;

/* Shape of a KV cache: for each layer, K and V of `seqs` sequences x `context` positions x
 * `kv_heads` x `head_dim`. Sequences are addressed by slot (0 .. seqs-1). */
typedef struct flint_kv_geom_s {
  uint32_t layers, seqs, context, kv_heads, head_dim;
} flint_kv_geom_t;

/* The tokens of one forward pass (host arrays; batch_set copies what the device needs).
 * Row i is token tokens[i] of the sequence in KV slot slot[i], at position pos[i]. The logits
 * wanted are those of rows out_rows[0 .. n_out-1]. */
typedef struct flint_batch_s {
  uint32_t n;
  const int32_t *tokens;
  const uint32_t *pos;
  const uint32_t *slot;
  uint32_t n_out;
  const uint32_t *out_rows;
} flint_batch_t;

typedef struct flint_attn_params_s {
  uint32_t heads, kv_heads, head_dim;
  float scale;                /* 1/sqrt(head_dim) */
  uint32_t window;            /* sliding window in positions (0 = none) */
} flint_attn_params_t;

struct flint_backend_ops_s {
  /* ---- lifetime and memory -------------------------------------------------------------- */
  /* Frees the backend; every weight set, KV cache and allocation must be gone before. */
  void (*close) (flint_backend_t *be);
  /* `bytes` of device memory for activations and tables (64-byte aligned), or NULL. */
  void *(*alloc) (flint_backend_t *be, size_t bytes);
  void (*free) (flint_backend_t *be, void *dev);
  /* Host → device copy, ordered with the operations issued before it. */
  int (*upload) (flint_backend_t *be, void *dev, const void *host, size_t bytes, flint_error_t *err);
  /* Device → host copy: waits for all work issued before it; returns the first error any of it
   * hit (and clears it). */
  int (*download) (flint_backend_t *be, void *host, const void *dev, size_t bytes, flint_error_t *err);

  /* ---- weights ----------------------------------------------------------------------------- */
  /* Places `n` tensors on the device and sets each one's `dev`. The host pages stay mapped for
   * the backend's lifetime (restores copy from them). GPU: one reserved address range for the
   * whole set, physical memory mapped into it (cuMemAddressReserve / cuMemCreate / cuMemMap),
   * filled through pinned staging. CPU: dev = host, nothing copied. */
  int (*weights_upload) (flint_backend_t *be, flint_bweight_t *w, size_t n, flint_bweights_t **set_out,
                         flint_error_t *err);
  /* Releases the physical memory behind the set, keeping its addresses reserved (before a
   * checkpoint). The set must not be used until weights_restore. */
  int (*weights_release) (flint_backend_t *be, flint_bweights_t *set, flint_error_t *err);
  /* Maps physical memory again at the same addresses and copies the weights back from the host
   * pages (after a restore). A set that was not released is left as it is. */
  int (*weights_restore) (flint_backend_t *be, flint_bweights_t *set, flint_error_t *err);
  void (*weights_free) (flint_backend_t *be, flint_bweights_t *set);
  /* Bytes of device memory the set occupies while mapped (0 on CPU: nothing is copied). */
  uint64_t (*weights_resident) (flint_backend_t *be, const flint_bweights_t *set);

  /* ---- KV cache ---------------------------------------------------------------------------- */
  int (*kv_new) (flint_backend_t *be, const flint_kv_geom_t *geom, flint_bkv_t **kv_out, flint_error_t *err);
  void (*kv_free) (flint_backend_t *be, flint_bkv_t *kv);

  /* ---- compute (asynchronous; see the execution model above) --------------------------------
   * Activations are F32 row-major device arrays. `rows` counts tokens. */
  /* Makes `b` the batch of the following operations (embed, rope, attention, gather). */
  int (*batch_set) (flint_backend_t *be, const flint_batch_t *b, flint_error_t *err);
  /* out[i] = table[tokens[i]] converted to F32, for the batch's n rows (table: vocab x dim). */
  void (*embed) (flint_backend_t *be, float *out, const flint_wmat_t *table);
  /* out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, for `rows` rows of w->cols. */
  void (*rmsnorm) (flint_backend_t *be, float *out, const float *x, const flint_wmat_t *w, uint32_t rows, float eps);
  /* out[r][j] = dot(x[r], w[j]) (+ bias[j]): x is rows x w->cols, out is rows x w->rows. */
  void (*matmul) (flint_backend_t *be, float *out, const float *x, uint32_t rows, const flint_wmat_t *w,
                  const flint_wmat_t *bias);
  /* Rotary embedding in place on x (batch rows x heads x head_dim), rotate-half layout, with the
   * angle table cos_sin[pos][head_dim/2][2] (cos, sin) at each row's position. */
  void (*rope) (flint_backend_t *be, float *x, uint32_t heads, uint32_t head_dim, const float *cos_sin);
  /* Causal attention of layer `layer`: stores the batch's k and v rows (kv_heads x head_dim
   * each) into the cache at (slot, pos), then for each row attends q (heads x head_dim) over
   * positions [max(0, pos - window + 1), pos] of its slot (grouped-query: head h reads kv head
   * h / (heads / kv_heads)). out is rows x heads x head_dim. */
  void (*attention) (flint_backend_t *be, float *out, const float *q, const float *k, const float *v, flint_bkv_t *kv,
                     uint32_t layer, const flint_attn_params_t *p);
  /* out[i] = silu(gate[i]) * up[i] for n elements. */
  void (*silu_mul) (flint_backend_t *be, float *out, const float *gate, const float *up, size_t n);
  /* x[i] += y[i] for n elements. */
  void (*add) (flint_backend_t *be, float *x, const float *y, size_t n);
  /* out[i] = x[out_rows[i]] (dim floats each), for the batch's n_out rows. */
  void (*gather) (flint_backend_t *be, float *out, const float *x, uint32_t dim);
};

/* Opens the backend called `name` ("cpu", "cuda"), or the best one available for NULL / "auto"
 * (CUDA when built with it and a GPU answers, else CPU). Returns 0 and the backend, or -1 with
 * FLINT_EPRECONDITION naming what is missing ("no CUDA device: ...", "unknown backend"). */
int flint__backend_open (const char *name, const flint_backend_options_t *o, flint_backend_t **out, flint_error_t *err);

/* The backends' own openers (backend.c lists them). */
int flint__backend_cpu_open (const flint_backend_options_t *o, flint_backend_t **out, flint_error_t *err);
#ifdef FLINT_ENGINE_CUDA
int flint__backend_cuda_open (const flint_backend_options_t *o, flint_backend_t **out, flint_error_t *err);
#endif

#endif
