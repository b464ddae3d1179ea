/* The CUDA backend: the operations of backend.h on one NVIDIA GPU.
 *
 * Loading. Nothing here is linked against the driver: the CUDA runtime is linked statically
 * (it dlopens libcuda.so.1 itself on first use) and the driver API calls this file needs (the
 * virtual memory management functions) go through flint/cudadrv.h, which dlopens the same
 * library. cuBLAS is dlopened only when asked for. A binary built with this backend therefore
 * starts on any machine; flint__backend_cuda_open fails with "no CUDA device: ..." where no
 * driver or no GPU answers, and backend.c falls back to the CPU.
 *
 * Weights. One weight set is one reserved device address range (cuMemAddressReserve), each
 * tensor at a 256-byte aligned offset, backed by physical chunks (cuMemCreate, a multiple of the
 * device's allocation granularity) mapped into it. weights_release unmaps and releases the
 * chunks but keeps the range: every pointer the model, the captured graphs and the kernels hold
 * stays valid, and the CUDA checkpoint of the process no longer contains the weights.
 * weights_restore creates and maps chunks again at the same addresses and copies the tensors
 * from their host pages (the node weight store's shared mapping, which outlives a checkpoint).
 * The copy runs on several threads, each with its own stream and two pinned staging buffers
 * (host memcpy into one while the other crosses the link), or, with FLINT_CUDA_UPLOAD=register,
 * straight from the host pages registered for the duration of the copy. The staging buffers
 * exist only during a copy, so a checkpoint never contains pinned memory.
 *
 * Execution. One stream. Compute operations are recorded into a tape and issued at the next
 * synchronising call (download, upload, memory management): a tape seen before with the same
 * batch shape is replayed as a CUDA graph captured the second time it was seen (a decode step
 * issues ~15 kernels per layer; as separate launches the CPU would be the bottleneck for small
 * models). Kernels read the batch (tokens, positions, slots, output rows) from device tables
 * uploaded before each replay, so graphs stay valid across steps; anything that can invalidate
 * a pointer they hold (freeing memory, a new KV cache) empties the graph cache. Errors are
 * recorded once and reported by download (backend.h's execution model).
 *
 * Matrix products: the batch-invariant kernel of cuda_kernels.cu by default (fp32 activations,
 * weights widened in registers, fixed reduction order), which keeps backend.h's numerics
 * contract and greedy decoding close to the CPU path. FLINT_CUDA_MATMUL=cublas sends passes of
 * at least FLINT_CUDA_CUBLAS_ROWS rows (default 32: prompt chunks) to cuBLAS tensor cores
 * instead, activations split into two 16-bit halves (about 16 significant bits): much faster
 * prefill, but results then depend on how prompts are chunked, at the 1e-5 level (docs/GPU.md).
 *
 * Knobs (read once at open): FLINT_CUDA_MATMUL=exact|cublas, FLINT_CUDA_CUBLAS_ROWS=N,
 * FLINT_CUDA_GRAPHS=0|1, FLINT_CUDA_UPLOAD=staging|register, FLINT_CUDA_UPLOAD_THREADS=N,
 * FLINT_CUDA_STAGING_MB=N, FLINT_CUDA_CHUNK_MB=N. */
#include "backend.h"
#include "cuda_kernels.h"
#include "flint/cudadrv.h"
#include "flint/util.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TENSOR_ALIGN 256
#define GRAPH_CACHE 48
#define BOUNCE_MAX (4u << 20)        /* larger downloads go straight to pageable memory */
#define CUBLAS_WORKSPACE (32u << 20)

/* ---- the tape ------------------------------------------------------------------------------ */

typedef enum op_kind_e {
  OP_EMBED = 1,
  OP_RMSNORM,
  OP_MATMUL,
  OP_ROPE,
  OP_ATTENTION,
  OP_SILU_MUL,
  OP_ADD,
  OP_GATHER,
} op_kind_t;

/* One recorded operation. Compared with memcmp to find a graph, so always memset first. */
typedef struct op_s {
  uint32_t kind;
  uint32_t u[7];
  float f[2];
  const void *p[6];
} op_t;

typedef struct graph_s {
  uint32_t n, n_out, nops;
  op_t *ops;
  cudaGraphExec_t exec;        /* NULL: seen once, captured when seen again */
  uint64_t stamp;
} graph_t;

/* ---- cuBLAS, dlopened ---------------------------------------------------------------------- */

#define CUBLAS_FN(f) __typeof__ (&f) f;
typedef struct cublas_api_s {
  void *lib;
  cublasHandle_t h;
  void *workspace;
  CUBLAS_FN (cublasCreate)
  CUBLAS_FN (cublasDestroy)
  CUBLAS_FN (cublasSetStream)
  CUBLAS_FN (cublasSetWorkspace)
  CUBLAS_FN (cublasGemmEx)
} cublas_api_t;
#undef CUBLAS_FN

/* ---- objects ------------------------------------------------------------------------------- */

struct flint_bweights_s {
  struct flint_bweights_s *next;
  flint_bweight_t *w;
  uint64_t *off;               /* each tensor's offset in the range */
  size_t n;
  CUdeviceptr base;
  size_t reserved;             /* bytes of the range (a multiple of the granularity) */
  size_t used;                 /* bytes the tensors span */
  size_t chunk;                /* bytes per physical chunk */
  size_t nchunks;
  CUmemGenericAllocationHandle *h;
  bool mapped;
};

struct flint_bkv_s {
  flint_kv_geom_t g;
  fk_kv_t k;
  size_t bytes;
};

typedef struct cuda_backend_s {
  flint_backend_t base;
  const flint_cudadrv_t *drv;
  int dev;
  CUdevice cudev;
  CUcontext ctx;
  cudaStream_t stream;
  int sm_count, cc_major, cc_minor;
  size_t smem_optin, smem_prepared, granularity, total_mem;

  /* knobs */
  bool use_graphs, use_cublas, upload_register;
  uint32_t cublas_rows, upload_threads;
  size_t staging_bytes, chunk_bytes;

  /* first error of the operations since the last download */
  bool failed;
  flint_error_t err;

  /* the current batch: host (pinned) and device tables, 4 arrays of `cap` entries */
  uint32_t n, n_out, cap;
  uint32_t *h_batch;
  uint32_t *d_batch;
  bool batch_dirty;
  fk_batch_t fb;

  /* tape and graphs */
  op_t *tape;
  uint32_t nops, tape_cap;
  graph_t graphs[GRAPH_CACHE];
  uint64_t stamp;

  /* download bounce buffer (pinned) */
  void *bounce;
  size_t bounce_cap;

  /* cuBLAS path */
  cublas_api_t cb;
  void *split;                 /* hi and lo halves of the activations */
  size_t split_cap;

  struct flint_bweights_s *sets;
  pthread_mutex_t sets_lock;
} cuda_backend_t;

#define CU(be) ((cuda_backend_t *) (be))

/* ---- errors and context -------------------------------------------------------------------- */

/* Records the first failure of an asynchronous operation (reported by download). */
static void
fail (cuda_backend_t *c, const char *what, int e)
{
  if (c->failed)
    return;
  c->failed = true;
  flint_error_set (&c->err, FLINT_EINTERNAL, "CUDA %s: %s (%s)", what, cudaGetErrorName ((cudaError_t) e),
                   cudaGetErrorString ((cudaError_t) e));
}

static int
rt_error (flint_error_t *err, const char *what, cudaError_t e)
{
  return flint_error_set (err, e == cudaErrorMemoryAllocation ? FLINT_EEXHAUSTED : FLINT_EINTERNAL, "CUDA %s: %s (%s)",
                          what, cudaGetErrorName (e), cudaGetErrorString (e));
}

static int
drv_error (cuda_backend_t *c, flint_error_t *err, const char *what, CUresult r)
{
  return flint_error_set (err, r == CUDA_ERROR_OUT_OF_MEMORY ? FLINT_EEXHAUSTED : FLINT_EINTERNAL, "CUDA %s: %s", what,
                          flint_cudadrv_strerror (c->drv, r));
}

/* Makes the device's primary context current on the calling thread (the engine calls the
 * backend from its scheduler thread and the checkpoint hooks from another). */
static int
enter (cuda_backend_t *c)
{
  cudaError_t e = cudaSetDevice (c->dev);
  if (e != cudaSuccess)
    return -(int) e;
  if (c->drv->cuCtxSetCurrent (c->ctx) != CUDA_SUCCESS)
    return -1;
  return 0;
}

static double
ms_since (uint64_t t0)
{
  return (double) (flint_now_ns () - t0) / 1e6;
}

static size_t
env_size (const char *name, size_t def, size_t min, size_t max)
{
  const char *v = getenv (name);
  char *end;
  unsigned long long n;
  if (v == NULL || *v == '\0')
    return def;
  errno = 0;
  n = strtoull (v, &end, 10);
  if (errno || *end || n < min || n > max)
    return def;
  return (size_t) n;
}

static int
fk_dtype (flint_dtype_t d)
{
  switch (d)
    {
    case FLINT_DTYPE_BF16: return FK_BF16;
    case FLINT_DTYPE_F16: return FK_F16;
    default: return FK_F32;
    }
}

/* ---- graphs -------------------------------------------------------------------------------- */

static void
graph_drop (graph_t *g)
{
  if (g->exec)
    cudaGraphExecDestroy (g->exec);
  free (g->ops);
  memset (g, 0, sizeof *g);
}

/* Called whenever a pointer a graph may hold stops being valid. */
static void
graphs_clear (cuda_backend_t *c)
{
  for (size_t i = 0; i < GRAPH_CACHE; i++)
    graph_drop (&c->graphs[i]);
}

static graph_t *
graph_find (cuda_backend_t *c)
{
  for (size_t i = 0; i < GRAPH_CACHE; i++)
    {
      graph_t *g = &c->graphs[i];
      if (g->ops && g->n == c->n && g->n_out == c->n_out && g->nops == c->nops
          && memcmp (g->ops, c->tape, c->nops * sizeof *c->tape) == 0)
        return g;
    }
  return NULL;
}

/* Remembers the current tape (seen once), evicting the least recently used entry. */
static graph_t *
graph_remember (cuda_backend_t *c)
{
  graph_t *g = &c->graphs[0];
  for (size_t i = 0; i < GRAPH_CACHE; i++)
    {
      if (c->graphs[i].ops == NULL)
        {
          g = &c->graphs[i];
          break;
        }
      if (c->graphs[i].stamp < g->stamp)
        g = &c->graphs[i];
    }
  graph_drop (g);
  g->ops = malloc (c->nops * sizeof *c->tape);
  if (g->ops == NULL)
    return NULL;
  memcpy (g->ops, c->tape, c->nops * sizeof *c->tape);
  g->n = c->n;
  g->n_out = c->n_out;
  g->nops = c->nops;
  g->stamp = ++c->stamp;
  return g;
}

/* ---- running the tape ---------------------------------------------------------------------- */

static bool
op_uses_cublas (const cuda_backend_t *c, const op_t *o)
{
  return c->use_cublas && o->kind == OP_MATMUL && o->u[0] >= c->cublas_rows;
}

static size_t
tape_split_bytes (const cuda_backend_t *c)
{
  size_t need = 0;
  for (uint32_t i = 0; i < c->nops; i++)
    if (op_uses_cublas (c, &c->tape[i]) && c->tape[i].u[1] != FK_F32)
      {
        size_t b = 2 * (size_t) c->tape[i].u[0] * c->tape[i].u[3] * 2;
        if (b > need)
          need = b;
      }
  return need;
}

static int
matmul_cublas (cuda_backend_t *c, const op_t *o)
{
  float *out = (float *) o->p[0];
  const float *x = o->p[1];
  uint32_t rows = o->u[0], dt = o->u[1], n = o->u[2], k = o->u[3];
  const float one = 1.0f, zero = 0.0f;
  cublasStatus_t s;

  if (dt == FK_F32)
    s = c->cb.cublasGemmEx (c->cb.h, CUBLAS_OP_T, CUBLAS_OP_N, (int) n, (int) rows, (int) k, &one, o->p[2], CUDA_R_32F,
                            (int) k, x, CUDA_R_32F, (int) k, &zero, out, CUDA_R_32F, (int) n, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT);
  else
    {
      cudaDataType t = dt == FK_BF16 ? CUDA_R_16BF : CUDA_R_16F;
      uint8_t *hi = c->split, *lo = hi + (size_t) rows * k * 2;
      int e = fk_split16 (hi, lo, x, (size_t) rows * k, (int) dt, c->stream);
      if (e)
        return e;
      s = c->cb.cublasGemmEx (c->cb.h, CUBLAS_OP_T, CUBLAS_OP_N, (int) n, (int) rows, (int) k, &one, o->p[2], t, (int) k,
                              hi, t, (int) k, &zero, out, CUDA_R_32F, (int) n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      if (s == CUBLAS_STATUS_SUCCESS)
        s = c->cb.cublasGemmEx (c->cb.h, CUBLAS_OP_T, CUBLAS_OP_N, (int) n, (int) rows, (int) k, &one, o->p[2], t,
                                (int) k, lo, t, (int) k, &one, out, CUDA_R_32F, (int) n, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT);
    }
  if (s != CUBLAS_STATUS_SUCCESS)
    return (int) cudaErrorUnknown;
  if (o->p[3])
    return fk_add_bias (out, o->p[3], (int) o->u[4], rows, n, c->stream);
  return 0;
}

static const char *
op_name (uint32_t kind)
{
  static const char *const names[] = { "?", "embed", "rmsnorm", "matmul", "rope", "attention", "silu_mul", "add",
                                       "gather" };
  return kind < sizeof names / sizeof names[0] ? names[kind] : "?";
}

static int
op_launch (cuda_backend_t *c, const op_t *o)
{
  const fk_batch_t *b = &c->fb;
  void *st = c->stream;

  switch (o->kind)
    {
    case OP_EMBED:
      return fk_embed ((float *) o->p[0], o->p[1], (int) o->u[0], o->u[1], b, c->n, st);
    case OP_RMSNORM:
      return fk_rmsnorm ((float *) o->p[0], o->p[1], o->p[2], (int) o->u[0], o->u[1], o->u[2], o->f[0], st);
    case OP_MATMUL:
      if (op_uses_cublas (c, o))
        return matmul_cublas (c, o);
      return fk_matmul ((float *) o->p[0], o->p[1], o->u[0], o->p[2], (int) o->u[1], o->u[2], o->u[3], o->p[3],
                        (int) o->u[4], st);
    case OP_ROPE:
      return fk_rope ((float *) o->p[0], c->n, o->u[0], o->u[1], o->p[1], b, st);
    case OP_ATTENTION:
      {
        const flint_bkv_t *kv = o->p[4];
        int e = fk_kv_store (&kv->k, o->u[0], o->p[2], o->p[3], c->n, b, st);
        if (e)
          return e;
        return fk_attention ((float *) o->p[0], o->p[1], &kv->k, o->u[0], c->n, o->u[1], o->u[3], o->f[0], o->u[4], b,
                             st);
      }
    case OP_SILU_MUL:
      return fk_silu_mul ((float *) o->p[0], o->p[1], o->p[2], (size_t) o->u[0] | (size_t) o->u[1] << 32, st);
    case OP_ADD:
      return fk_add ((float *) o->p[0], o->p[1], (size_t) o->u[0] | (size_t) o->u[1] << 32, st);
    case OP_GATHER:
      return fk_gather ((float *) o->p[0], o->p[1], o->u[0], c->n_out, b, st);
    default:
      return (int) cudaErrorInvalidValue;
    }
}

static void
run_ops (cuda_backend_t *c)
{
  for (uint32_t i = 0; i < c->nops && !c->failed; i++)
    {
      int e = op_launch (c, &c->tape[i]);
      if (e)
        fail (c, op_name (c->tape[i].kind), e);
    }
}

/* Captures the tape into a graph for `g` and launches it; on any capture failure graphs are
 * turned off for this backend and the tape runs directly (nothing was executed during the
 * capture). */
static void
capture_and_launch (cuda_backend_t *c, graph_t *g)
{
  cudaGraph_t graph = NULL;
  cudaError_t e;
  bool ok = true;

  e = cudaStreamBeginCapture (c->stream, cudaStreamCaptureModeThreadLocal);
  if (e != cudaSuccess)
    ok = false;
  for (uint32_t i = 0; ok && i < c->nops; i++)
    if (op_launch (c, &c->tape[i]) != 0)
      ok = false;
  if (e == cudaSuccess)
    {
      e = cudaStreamEndCapture (c->stream, &graph);
      if (e != cudaSuccess)
        ok = false;
    }
  if (ok && cudaGraphInstantiate (&g->exec, graph, 0) != cudaSuccess)
    {
      g->exec = NULL;
      ok = false;
    }
  if (graph)
    cudaGraphDestroy (graph);
  cudaGetLastError (); /* a failed capture leaves a non-sticky error behind */
  if (!ok)
    {
      c->use_graphs = false;
      graphs_clear (c);
      run_ops (c);
      return;
    }
  e = cudaGraphLaunch (g->exec, c->stream);
  if (e != cudaSuccess)
    fail (c, "graph launch", e);
}

/* Issues everything recorded since the last flush. */
static void
flush (cuda_backend_t *c)
{
  graph_t *g;
  size_t need;
  cudaError_t e;

  if (c->nops == 0 && !c->batch_dirty)
    return;
  if (c->failed)
    goto out;
  if (c->batch_dirty)
    {
      e = cudaMemcpyAsync (c->d_batch, c->h_batch, (size_t) 4 * c->cap * sizeof (uint32_t), cudaMemcpyHostToDevice,
                           c->stream);
      if (e != cudaSuccess)
        {
          fail (c, "batch upload", e);
          goto out;
        }
      c->batch_dirty = false;
    }
  if (c->nops == 0)
    goto out;
  need = tape_split_bytes (c);
  if (need > c->split_cap)
    {
      /* cudaFree synchronises: nothing recorded has run yet, and graphs lose the old buffer */
      cudaFree (c->split);
      c->split = NULL;
      c->split_cap = 0;
      graphs_clear (c);
      e = cudaMalloc (&c->split, need);
      if (e != cudaSuccess)
        {
          fail (c, "allocate the cuBLAS split buffer", e);
          goto out;
        }
      c->split_cap = need;
    }
  if (!c->use_graphs)
    {
      run_ops (c);
      goto out;
    }
  g = graph_find (c);
  if (g && g->exec)
    {
      g->stamp = ++c->stamp;
      e = cudaGraphLaunch (g->exec, c->stream);
      if (e != cudaSuccess)
        fail (c, "graph launch", e);
    }
  else if (g)
    {
      g->stamp = ++c->stamp;
      capture_and_launch (c, g);
    }
  else
    {
      run_ops (c);
      graph_remember (c);
    }
out:
  c->nops = 0;
}

static op_t *
record (cuda_backend_t *c, op_kind_t kind)
{
  op_t *o;
  if (c->nops == c->tape_cap)
    {
      uint32_t cap = c->tape_cap ? 2 * c->tape_cap : 512;
      op_t *t = realloc (c->tape, cap * sizeof *t);
      if (t == NULL)
        {
          fail (c, "record an operation", (int) cudaErrorMemoryAllocation);
          return NULL;
        }
      c->tape = t;
      c->tape_cap = cap;
    }
  o = &c->tape[c->nops++];
  memset (o, 0, sizeof *o);
  o->kind = kind;
  return o;
}

/* ---- memory -------------------------------------------------------------------------------- */

static void *
cu_alloc (flint_backend_t *be, size_t bytes)
{
  cuda_backend_t *c = CU (be);
  void *p = NULL;
  if (enter (c) < 0)
    return NULL;
  flush (c);
  if (cudaMalloc (&p, bytes ? bytes : 64) != cudaSuccess)
    {
      cudaGetLastError ();
      return NULL;
    }
  /* the CPU backend hands out zeroed memory; so does this one */
  if (cudaMemset (p, 0, bytes ? bytes : 64) != cudaSuccess)
    {
      cudaFree (p);
      return NULL;
    }
  return p;
}

static void
cu_free (flint_backend_t *be, void *p)
{
  cuda_backend_t *c = CU (be);
  if (p == NULL || enter (c) < 0)
    return;
  flush (c);
  cudaStreamSynchronize (c->stream);
  graphs_clear (c);
  cudaFree (p);
}

static int
cu_upload (flint_backend_t *be, void *dev, const void *host, size_t bytes, flint_error_t *err)
{
  cuda_backend_t *c = CU (be);
  cudaError_t e;
  if (enter (c) < 0)
    return flint_error_set (err, FLINT_EINTERNAL, "CUDA: cannot make the device current");
  flush (c);
  if (bytes == 0)
    return 0;
  /* from pageable memory the call returns once the bytes are staged: the caller may reuse them */
  e = cudaMemcpyAsync (dev, host, bytes, cudaMemcpyHostToDevice, c->stream);
  if (e != cudaSuccess)
    return rt_error (err, "upload", e);
  return 0;
}

static int
cu_download (flint_backend_t *be, void *host, const void *dev, size_t bytes, flint_error_t *err)
{
  cuda_backend_t *c = CU (be);
  cudaError_t e;
  bool bounce = false;

  if (enter (c) < 0)
    return flint_error_set (err, FLINT_EINTERNAL, "CUDA: cannot make the device current");
  flush (c);
  if (bytes && !c->failed)
    {
      if (bytes <= BOUNCE_MAX && bytes > c->bounce_cap)
        {
          if (c->bounce)
            cudaFreeHost (c->bounce);
          c->bounce = NULL;
          c->bounce_cap = 0;
          if (cudaMallocHost (&c->bounce, bytes) == cudaSuccess)
            c->bounce_cap = bytes;
          else
            cudaGetLastError ();
        }
      bounce = bytes <= c->bounce_cap;
      e = cudaMemcpyAsync (bounce ? c->bounce : host, dev, bytes, cudaMemcpyDeviceToHost, c->stream);
      if (e != cudaSuccess)
        fail (c, "download", e);
    }
  e = cudaStreamSynchronize (c->stream);
  if (e != cudaSuccess)
    fail (c, "stream", e);
  if (c->failed)
    {
      flint_error_set (err, c->err.code, "%s", c->err.msg);
      c->failed = false;
      flint_error_clear (&c->err);
      return -1;
    }
  if (bounce)
    memcpy (host, c->bounce, bytes);
  return 0;
}

/* ---- weights: mapping ---------------------------------------------------------------------- */

static void
weights_unmap (cuda_backend_t *c, struct flint_bweights_s *s)
{
  for (size_t i = 0; i < s->nchunks; i++)
    {
      size_t off = i * s->chunk, len = s->reserved - off < s->chunk ? s->reserved - off : s->chunk;
      if (s->h[i] == 0)
        continue;
      c->drv->cuMemUnmap (s->base + off, len);
      c->drv->cuMemRelease (s->h[i]);
      s->h[i] = 0;
    }
  s->mapped = false;
}

/* After a CUDA restore the driver brings back the process's allocations at their addresses; if
 * a reservation with nothing mapped in it did not come back with them, ask for the same range
 * again (the address is a hint the driver honours when the range is free). True when the range
 * is ours again at the same address: every pointer into it stays valid. */
static bool
reserve_again (cuda_backend_t *c, struct flint_bweights_s *s)
{
  CUdeviceptr p = 0;
  if (c->drv->cuMemAddressReserve (&p, s->reserved, c->granularity, s->base, 0) != CUDA_SUCCESS)
    return false;
  if (p == s->base)
    return true;
  c->drv->cuMemAddressFree (p, s->reserved);
  return false;
}

static int
weights_map (cuda_backend_t *c, struct flint_bweights_s *s, flint_error_t *err)
{
  CUmemAllocationProp prop = { 0 };
  CUmemAccessDesc acc = { 0 };
  CUresult r;

  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = c->dev;
  for (size_t i = 0; i < s->nchunks; i++)
    {
      size_t off = i * s->chunk, len = s->reserved - off < s->chunk ? s->reserved - off : s->chunk;
      r = c->drv->cuMemCreate (&s->h[i], len, &prop, 0);
      if (r != CUDA_SUCCESS)
        {
          s->h[i] = 0;
          weights_unmap (c, s);
          return drv_error (c, err, "cuMemCreate of a weight chunk", r);
        }
      r = c->drv->cuMemMap (s->base + off, len, 0, s->h[i], 0);
      if (r != CUDA_SUCCESS && i == 0 && reserve_again (c, s))
        r = c->drv->cuMemMap (s->base + off, len, 0, s->h[i], 0);
      if (r != CUDA_SUCCESS)
        {
          c->drv->cuMemRelease (s->h[i]);
          s->h[i] = 0;
          weights_unmap (c, s);
          return drv_error (c, err, "cuMemMap of a weight chunk", r);
        }
    }
  acc.location = prop.location;
  acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  r = c->drv->cuMemSetAccess (s->base, s->reserved, &acc, 1);
  if (r != CUDA_SUCCESS)
    {
      weights_unmap (c, s);
      return drv_error (c, err, "cuMemSetAccess on the weight range", r);
    }
  s->mapped = true;
  return 0;
}

/* ---- weights: copying ---------------------------------------------------------------------- */

/* The copy is cut into parts of at most one staging buffer; threads claim parts in order. */
typedef struct part_s {
  const uint8_t *host;
  CUdeviceptr dev;
  size_t len;
} part_t;

typedef struct copy_job_s {
  cuda_backend_t *c;
  part_t *parts;
  size_t nparts;
  atomic_size_t next;
  atomic_bool failed;
  pthread_mutex_t lock;
  flint_error_t err;
} copy_job_t;

static void
copy_fail (copy_job_t *j, const char *what, cudaError_t e)
{
  pthread_mutex_lock (&j->lock);
  if (!atomic_load (&j->failed))
    rt_error (&j->err, what, e);
  atomic_store (&j->failed, true);
  pthread_mutex_unlock (&j->lock);
}

static size_t
cut_parts (const struct flint_bweights_s *s, size_t max_part, part_t **out)
{
  size_t n = 0, cap = 0;
  part_t *p = NULL;
  for (size_t i = 0; i < s->n; i++)
    for (uint64_t o = 0; o < s->w[i].bytes; o += max_part)
      {
        if (n == cap)
          {
            part_t *q = realloc (p, (cap = cap ? 2 * cap : 256) * sizeof *p);
            if (q == NULL)
              {
                free (p);
                return SIZE_MAX;
              }
            p = q;
          }
        p[n].host = (const uint8_t *) s->w[i].host + o;
        p[n].dev = s->base + s->off[i] + o;
        p[n].len = s->w[i].bytes - o < max_part ? (size_t) (s->w[i].bytes - o) : max_part;
        n++;
      }
  *out = p;
  return n;
}

/* One staging thread: its own stream and two pinned buffers, host memcpy into one while the
 * other is in flight. */
static void *
staging_thread (void *arg)
{
  copy_job_t *j = arg;
  cuda_backend_t *c = j->c;
  cudaStream_t st = NULL;
  cudaEvent_t ev[2] = { NULL, NULL };
  void *buf[2] = { NULL, NULL };
  cudaError_t e;
  size_t k = 0;

  if (enter (c) < 0)
    {
      copy_fail (j, "make the device current in a copy thread", cudaErrorInvalidDevice);
      return NULL;
    }
  if ((e = cudaStreamCreateWithFlags (&st, cudaStreamNonBlocking)) != cudaSuccess
      || (e = cudaEventCreateWithFlags (&ev[0], cudaEventDisableTiming)) != cudaSuccess
      || (e = cudaEventCreateWithFlags (&ev[1], cudaEventDisableTiming)) != cudaSuccess
      || (e = cudaHostAlloc (&buf[0], c->staging_bytes, cudaHostAllocDefault)) != cudaSuccess
      || (e = cudaHostAlloc (&buf[1], c->staging_bytes, cudaHostAllocDefault)) != cudaSuccess)
    {
      copy_fail (j, "set up a staging copy thread", e);
      goto out;
    }
  for (;;)
    {
      size_t i = atomic_fetch_add (&j->next, 1);
      const part_t *p;
      if (i >= j->nparts || atomic_load (&j->failed))
        break;
      p = &j->parts[i];
      /* the buffer's previous transfer must be done before it is refilled */
      if ((e = cudaEventSynchronize (ev[k])) != cudaSuccess)
        {
          copy_fail (j, "staging copy", e);
          break;
        }
      memcpy (buf[k], p->host, p->len);
      if ((e = cudaMemcpyAsync ((void *) (uintptr_t) p->dev, buf[k], p->len, cudaMemcpyHostToDevice, st)) != cudaSuccess
          || (e = cudaEventRecord (ev[k], st)) != cudaSuccess)
        {
          copy_fail (j, "staging copy", e);
          break;
        }
      k ^= 1;
    }
  if ((e = cudaStreamSynchronize (st)) != cudaSuccess)
    copy_fail (j, "staging copy", e);
out:
  for (int b = 0; b < 2; b++)
    {
      if (buf[b])
        cudaFreeHost (buf[b]);
      if (ev[b])
        cudaEventDestroy (ev[b]);
    }
  if (st)
    cudaStreamDestroy (st);
  return NULL;
}

static int
copy_staging (cuda_backend_t *c, struct flint_bweights_s *s, flint_error_t *err)
{
  copy_job_t j = { .c = c };
  pthread_t th[64];
  uint32_t nt = c->upload_threads, started = 0;
  uint64_t t0 = flint_now_ns ();
  int r = 0;

  j.nparts = cut_parts (s, c->staging_bytes, &j.parts);
  if (j.nparts == SIZE_MAX)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  if (nt > j.nparts / 2 + 1)
    nt = (uint32_t) (j.nparts / 2 + 1);
  if (nt > 64)
    nt = 64;
  pthread_mutex_init (&j.lock, NULL);
  atomic_init (&j.next, 0);
  atomic_init (&j.failed, false);
  for (uint32_t t = 0; t < nt; t++)
    if (pthread_create (&th[t], NULL, staging_thread, &j) == 0)
      started++;
  if (started == 0)
    staging_thread (&j);
  for (uint32_t t = 0; t < started; t++)
    pthread_join (th[t], NULL);
  if (atomic_load (&j.failed))
    r = flint_error_set (err, j.err.code, "%s", j.err.msg);
  pthread_mutex_destroy (&j.lock);
  free (j.parts);
  /* the staging buffers' allocation is inside the copy threads: all of it counts as copy time,
   * and pin_ms stays 0 in this mode */
  c->base.upload.copy_ms = ms_since (t0);
  c->base.upload.mode = "staging";
  return r;
}

typedef struct span_s {
  uintptr_t a, b;
} span_t;

static int
cmp_span (const void *x, const void *y)
{
  const span_t *p = x, *q = y;
  return p->a < q->a ? -1 : p->a > q->a;
}

/* Registers the host pages of the set for direct DMA, copies on several streams, unregisters.
 * Returns 1 when registration is refused (the caller falls back to staging). */
static int
copy_register (cuda_backend_t *c, struct flint_bweights_s *s, flint_error_t *err)
{
  size_t pg = (size_t) sysconf (_SC_PAGESIZE), ns = 0, nreg = 0, nparts;
  span_t *sp = calloc (s->n ? s->n : 1, sizeof *sp);
  cudaStream_t st[8] = { 0 };
  part_t *parts = NULL;
  uint64_t t0 = flint_now_ns ();
  cudaError_t e = cudaSuccess;
  int r = 0;

  if (sp == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  for (size_t i = 0; i < s->n; i++)
    {
      uintptr_t a = (uintptr_t) s->w[i].host & ~(uintptr_t) (pg - 1);
      uintptr_t b = ((uintptr_t) s->w[i].host + s->w[i].bytes + pg - 1) & ~(uintptr_t) (pg - 1);
      if (s->w[i].bytes)
        sp[ns++] = (span_t) { a, b };
    }
  qsort (sp, ns, sizeof *sp, cmp_span);
  for (size_t i = 0; i < ns; i++)
    {
      if (nreg && sp[i].a <= sp[nreg - 1].b)
        {
          if (sp[i].b > sp[nreg - 1].b)
            sp[nreg - 1].b = sp[i].b;
        }
      else
        sp[nreg++] = sp[i];
    }
  for (ns = 0; ns < nreg; ns++)
    {
      e = cudaHostRegister ((void *) sp[ns].a, sp[ns].b - sp[ns].a, cudaHostRegisterReadOnly);
      if (e != cudaSuccess)
        break;
    }
  c->base.upload.pin_ms = ms_since (t0);
  if (e != cudaSuccess)
    {
      cudaGetLastError ();
      r = 1;
      goto out;
    }
  nparts = cut_parts (s, 64u << 20, &parts);
  if (nparts == SIZE_MAX)
    {
      r = flint_error_set (err, FLINT_EINTERNAL, "out of memory");
      goto out;
    }
  t0 = flint_now_ns ();
  for (size_t i = 0; i < 8 && e == cudaSuccess; i++)
    e = cudaStreamCreateWithFlags (&st[i], cudaStreamNonBlocking);
  for (size_t i = 0; i < nparts && e == cudaSuccess; i++)
    e = cudaMemcpyAsync ((void *) (uintptr_t) parts[i].dev, parts[i].host, parts[i].len, cudaMemcpyHostToDevice,
                         st[i % 8]);
  for (size_t i = 0; i < 8; i++)
    if (st[i])
      {
        cudaError_t e2 = cudaStreamSynchronize (st[i]);
        if (e == cudaSuccess)
          e = e2;
        cudaStreamDestroy (st[i]);
      }
  c->base.upload.copy_ms = ms_since (t0);
  c->base.upload.mode = "register";
  if (e != cudaSuccess)
    r = rt_error (err, "copy the weights from registered host pages", e);
out:
  for (size_t i = 0; i < ns; i++)
    cudaHostUnregister ((void *) sp[i].a);
  free (parts);
  free (sp);
  return r;
}

static int
weights_fill (cuda_backend_t *c, struct flint_bweights_s *s, flint_error_t *err)
{
  uint64_t t0 = flint_now_ns ();
  int r;

  memset (&c->base.upload, 0, sizeof c->base.upload);
  if (weights_map (c, s, err) < 0)
    return -1;
  c->base.upload.map_ms = ms_since (t0);
  for (size_t i = 0; i < s->n; i++)
    c->base.upload.bytes += s->w[i].bytes;
  r = c->upload_register ? copy_register (c, s, err) : 1;
  if (r == 1)
    r = copy_staging (c, s, err);
  if (r < 0)
    {
      weights_unmap (c, s);
      return -1;
    }
  return 0;
}

/* ---- weights: the table's operations ------------------------------------------------------- */

static void
set_free (cuda_backend_t *c, struct flint_bweights_s *s)
{
  if (s == NULL)
    return;
  if (s->mapped)
    weights_unmap (c, s);
  if (s->base)
    c->drv->cuMemAddressFree (s->base, s->reserved);
  free (s->h);
  free (s->off);
  free (s->w);
  free (s);
}

static int
cu_weights_upload (flint_backend_t *be, flint_bweight_t *w, size_t n, flint_bweights_t **set_out, flint_error_t *err)
{
  cuda_backend_t *c = CU (be);
  struct flint_bweights_s *s;
  size_t used = 0;
  CUresult r;

  if (enter (c) < 0)
    return flint_error_set (err, FLINT_EINTERNAL, "CUDA: cannot make the device current");
  flush (c);
  s = calloc (1, sizeof *s);
  if (s == NULL || (s->w = calloc (n ? n : 1, sizeof *s->w)) == NULL
      || (s->off = calloc (n ? n : 1, sizeof *s->off)) == NULL)
    {
      set_free (c, s);
      return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
    }
  memcpy (s->w, w, n * sizeof *w);
  s->n = n;
  for (size_t i = 0; i < n; i++)
    {
      s->off[i] = used;
      used = (used + w[i].bytes + TENSOR_ALIGN - 1) & ~(size_t) (TENSOR_ALIGN - 1);
    }
  s->used = used;
  s->reserved = (used + c->granularity - 1) / c->granularity * c->granularity;
  if (s->reserved == 0)
    s->reserved = c->granularity;
  s->chunk = c->chunk_bytes < s->reserved ? c->chunk_bytes : s->reserved;
  s->nchunks = (s->reserved + s->chunk - 1) / s->chunk;
  s->h = calloc (s->nchunks, sizeof *s->h);
  if (s->h == NULL)
    {
      set_free (c, s);
      return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
    }
  r = c->drv->cuMemAddressReserve (&s->base, s->reserved, c->granularity, 0, 0);
  if (r != CUDA_SUCCESS)
    {
      s->base = 0;
      set_free (c, s);
      return drv_error (c, err, "cuMemAddressReserve for the weights", r);
    }
  if (weights_fill (c, s, err) < 0)
    {
      set_free (c, s);
      return flint_error_prefix (err, "upload %.1f MiB of weights", (double) used / 1048576);
    }
  for (size_t i = 0; i < n; i++)
    w[i].dev = (const void *) (uintptr_t) (s->base + s->off[i]);
  pthread_mutex_lock (&c->sets_lock);
  s->next = c->sets;
  c->sets = s;
  pthread_mutex_unlock (&c->sets_lock);
  *set_out = s;
  return 0;
}

static int
cu_weights_release (flint_backend_t *be, flint_bweights_t *s, flint_error_t *err)
{
  cuda_backend_t *c = CU (be);
  cudaError_t e;
  if (enter (c) < 0)
    return flint_error_set (err, FLINT_EINTERNAL, "CUDA: cannot make the device current");
  flush (c);
  e = cudaStreamSynchronize (c->stream);
  if (e != cudaSuccess)
    return rt_error (err, "synchronise before releasing the weights", e);
  if (s->mapped)
    weights_unmap (c, s);
  return 0;
}

static int
cu_weights_restore (flint_backend_t *be, flint_bweights_t *s, flint_error_t *err)
{
  cuda_backend_t *c = CU (be);
  if (enter (c) < 0)
    return flint_error_set (err, FLINT_EINTERNAL, "CUDA: cannot make the device current");
  if (s->mapped)
    return 0;
  if (weights_fill (c, s, err) < 0)
    return flint_error_prefix (err, "restore %.1f MiB of weights", (double) s->used / 1048576);
  return 0;
}

static void
cu_weights_free (flint_backend_t *be, flint_bweights_t *s)
{
  cuda_backend_t *c = CU (be);
  if (s == NULL)
    return;
  enter (c);
  flush (c);
  cudaStreamSynchronize (c->stream);
  graphs_clear (c);
  pthread_mutex_lock (&c->sets_lock);
  for (struct flint_bweights_s **pp = &c->sets; *pp; pp = &(*pp)->next)
    if (*pp == s)
      {
        *pp = s->next;
        break;
      }
  pthread_mutex_unlock (&c->sets_lock);
  set_free (c, s);
}

static uint64_t
cu_weights_resident (flint_backend_t *be, const flint_bweights_t *s)
{
  (void) be;
  return s->mapped ? s->reserved : 0;
}

/* ---- KV cache ------------------------------------------------------------------------------ */

static int
cu_kv_new (flint_backend_t *be, const flint_kv_geom_t *g, flint_bkv_t **out, flint_error_t *err)
{
  cuda_backend_t *c = CU (be);
  flint_bkv_t *kv;
  size_t smem = fk_attention_smem (g->context, 0, g->head_dim);
  double bytes = 2.0 * g->layers * g->seqs * (double) g->context * g->kv_heads * g->head_dim * sizeof (float);
  cudaError_t e;

  if (enter (c) < 0)
    return flint_error_set (err, FLINT_EINTERNAL, "CUDA: cannot make the device current");
  flush (c);
  if (smem > c->smem_optin)
    return flint_error_set (err, FLINT_EPRECONDITION,
                            "a context of %u positions needs %zu bytes of shared memory in the CUDA attention kernel; "
                            "the device allows %zu (lower config `context`)", g->context, smem, c->smem_optin);
  if (smem > c->smem_prepared)
    {
      e = (cudaError_t) fk_attention_prepare (smem);
      if (e != cudaSuccess)
        return rt_error (err, "raise the attention kernel's shared memory", e);
      c->smem_prepared = smem;
    }
  if (bytes > (double) SIZE_MAX / 2)
    return flint_error_set (err, FLINT_EEXHAUSTED, "KV cache of %.0f bytes is too large", bytes);
  kv = calloc (1, sizeof *kv);
  if (kv == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  kv->g = *g;
  kv->bytes = (size_t) bytes;
  kv->k = (fk_kv_t) { .seqs = g->seqs, .context = g->context, .kv_heads = g->kv_heads, .head_dim = g->head_dim };
  e = cudaMalloc ((void **) &kv->k.mem, kv->bytes ? kv->bytes : 64);
  if (e == cudaSuccess)
    e = cudaMemsetAsync (kv->k.mem, 0, kv->bytes, c->stream);
  if (e != cudaSuccess)
    {
      cudaGetLastError ();
      if (kv->k.mem)
        cudaFree (kv->k.mem);
      free (kv);
      return flint_error_set (err, FLINT_EEXHAUSTED, "allocate a KV cache of %zu MiB on the GPU: %s",
                              (size_t) (bytes / 1048576), cudaGetErrorString (e));
    }
  *out = kv;
  return 0;
}

static void
cu_kv_free (flint_backend_t *be, flint_bkv_t *kv)
{
  cuda_backend_t *c = CU (be);
  if (kv == NULL)
    return;
  enter (c);
  flush (c);
  cudaStreamSynchronize (c->stream);
  graphs_clear (c);
  cudaFree (kv->k.mem);
  free (kv);
}

/* ---- batch and compute --------------------------------------------------------------------- */

static int
cu_batch_set (flint_backend_t *be, const flint_batch_t *b, flint_error_t *err)
{
  cuda_backend_t *c = CU (be);

  if (enter (c) < 0)
    return flint_error_set (err, FLINT_EINTERNAL, "CUDA: cannot make the device current");
  flush (c);
  pthread_mutex_lock (&c->sets_lock);
  for (struct flint_bweights_s *s = c->sets; s; s = s->next)
    if (!s->mapped)
      {
        pthread_mutex_unlock (&c->sets_lock);
        return flint_error_set (err, FLINT_EINTERNAL, "the weights are released (checkpoint in progress)");
      }
  pthread_mutex_unlock (&c->sets_lock);
  if (b->n_out > b->n)
    return flint_error_set (err, FLINT_EINTERNAL, "batch of %u rows asks for %u logit rows", b->n, b->n_out);
  if (b->n > c->cap)
    {
      uint32_t cap = b->n < 64 ? 64 : b->n;
      void *h = NULL, *d = NULL;
      cudaError_t e;
      /* the previous batch is done (download synchronised): the old tables can go */
      cudaStreamSynchronize (c->stream);
      if ((e = cudaMallocHost (&h, (size_t) 4 * cap * sizeof (uint32_t))) != cudaSuccess
          || (e = cudaMalloc (&d, (size_t) 4 * cap * sizeof (uint32_t))) != cudaSuccess)
        {
          if (h)
            cudaFreeHost (h);
          return rt_error (err, "allocate the batch tables", e);
        }
      graphs_clear (c);
      if (c->h_batch)
        cudaFreeHost (c->h_batch);
      if (c->d_batch)
        cudaFree (c->d_batch);
      c->h_batch = h;
      c->d_batch = d;
      c->cap = cap;
      c->fb = (fk_batch_t) { .tokens = (const int32_t *) c->d_batch, .pos = c->d_batch + cap,
                             .slot = c->d_batch + 2 * cap, .out_rows = c->d_batch + 3 * cap };
    }
  memcpy (c->h_batch, b->tokens, b->n * sizeof (uint32_t));
  memcpy (c->h_batch + c->cap, b->pos, b->n * sizeof (uint32_t));
  memcpy (c->h_batch + 2 * c->cap, b->slot, b->n * sizeof (uint32_t));
  if (b->n_out)
    memcpy (c->h_batch + 3 * c->cap, b->out_rows, b->n_out * sizeof (uint32_t));
  c->n = b->n;
  c->n_out = b->n_out;
  c->batch_dirty = true;
  return 0;
}

static void
cu_embed (flint_backend_t *be, float *out, const flint_wmat_t *t)
{
  op_t *o = record (CU (be), OP_EMBED);
  if (o == NULL)
    return;
  o->p[0] = out;
  o->p[1] = t->data;
  o->u[0] = (uint32_t) fk_dtype (t->dtype);
  o->u[1] = t->cols;
}

static void
cu_rmsnorm (flint_backend_t *be, float *out, const float *x, const flint_wmat_t *w, uint32_t rows, float eps)
{
  op_t *o = record (CU (be), OP_RMSNORM);
  if (o == NULL)
    return;
  o->p[0] = out;
  o->p[1] = x;
  o->p[2] = w->data;
  o->u[0] = (uint32_t) fk_dtype (w->dtype);
  o->u[1] = rows;
  o->u[2] = w->cols;
  o->f[0] = eps;
}

static void
cu_matmul (flint_backend_t *be, float *out, const float *x, uint32_t rows, const flint_wmat_t *w,
           const flint_wmat_t *bias)
{
  op_t *o = record (CU (be), OP_MATMUL);
  if (o == NULL)
    return;
  o->p[0] = out;
  o->p[1] = x;
  o->p[2] = w->data;
  o->p[3] = bias ? bias->data : NULL;
  o->u[0] = rows;
  o->u[1] = (uint32_t) fk_dtype (w->dtype);
  o->u[2] = w->rows;
  o->u[3] = w->cols;
  o->u[4] = bias ? (uint32_t) fk_dtype (bias->dtype) : 0;
}

static void
cu_rope (flint_backend_t *be, float *x, uint32_t heads, uint32_t head_dim, const float *cos_sin)
{
  op_t *o = record (CU (be), OP_ROPE);
  if (o == NULL)
    return;
  o->p[0] = x;
  o->p[1] = cos_sin;
  o->u[0] = heads;
  o->u[1] = head_dim;
}

static void
cu_attention (flint_backend_t *be, float *out, const float *q, const float *k, const float *v, flint_bkv_t *kv,
              uint32_t layer, const flint_attn_params_t *p)
{
  op_t *o = record (CU (be), OP_ATTENTION);
  if (o == NULL)
    return;
  o->p[0] = out;
  o->p[1] = q;
  o->p[2] = k;
  o->p[3] = v;
  o->p[4] = kv;
  o->p[5] = kv->k.mem;
  o->u[0] = layer;
  o->u[1] = p->heads;
  o->u[2] = p->kv_heads;
  o->u[3] = p->head_dim;
  o->u[4] = p->window;
  o->f[0] = p->scale;
}

static void
cu_silu_mul (flint_backend_t *be, float *out, const float *gate, const float *up, size_t n)
{
  op_t *o = record (CU (be), OP_SILU_MUL);
  if (o == NULL)
    return;
  o->p[0] = out;
  o->p[1] = gate;
  o->p[2] = up;
  o->u[0] = (uint32_t) n;
  o->u[1] = (uint32_t) ((uint64_t) n >> 32);
}

static void
cu_add (flint_backend_t *be, float *x, const float *y, size_t n)
{
  op_t *o = record (CU (be), OP_ADD);
  if (o == NULL)
    return;
  o->p[0] = x;
  o->p[1] = y;
  o->u[0] = (uint32_t) n;
  o->u[1] = (uint32_t) ((uint64_t) n >> 32);
}

static void
cu_gather (flint_backend_t *be, float *out, const float *x, uint32_t dim)
{
  op_t *o = record (CU (be), OP_GATHER);
  if (o == NULL)
    return;
  o->p[0] = out;
  o->p[1] = x;
  o->u[0] = dim;
}

/* ---- lifetime ------------------------------------------------------------------------------ */

static int
cublas_open (cuda_backend_t *c, flint_error_t *err)
{
  const char *dir = getenv ("FLINT_CUDA_LIBDIR");
  char path[4096];
  void *lib = dlopen ("libcublas.so.13", RTLD_NOW | RTLD_LOCAL);

  if (lib == NULL)
    {
      snprintf (path, sizeof path, "%s/libcublas.so.13", dir && *dir ? dir : FLINT_CUDA_LIBDIR);
      lib = dlopen (path, RTLD_NOW | RTLD_LOCAL);
    }
  if (lib == NULL)
    return flint_error_set (err, FLINT_EPRECONDITION, "FLINT_CUDA_MATMUL=cublas: cannot load cuBLAS: %s", dlerror ());
  c->cb.lib = lib;
#define XSTR(x) STR (x)
#define STR(x) #x
#define LOAD(f)                                                                                        \
  if ((*(void **) (&c->cb.f) = dlsym (lib, XSTR (f))) == NULL)                                         \
    return flint_error_set (err, FLINT_EPRECONDITION, "cuBLAS lacks `%s`", XSTR (f));
  LOAD (cublasCreate)
  LOAD (cublasDestroy)
  LOAD (cublasSetStream)
  LOAD (cublasSetWorkspace)
  LOAD (cublasGemmEx)
#undef LOAD
  if (c->cb.cublasCreate (&c->cb.h) != CUBLAS_STATUS_SUCCESS)
    {
      c->cb.h = NULL;
      return flint_error_set (err, FLINT_EINTERNAL, "cublasCreate failed");
    }
  /* an explicit workspace: cuBLAS must not allocate inside a graph capture */
  if (cudaMalloc (&c->cb.workspace, CUBLAS_WORKSPACE) != cudaSuccess
      || c->cb.cublasSetWorkspace (c->cb.h, c->cb.workspace, CUBLAS_WORKSPACE) != CUBLAS_STATUS_SUCCESS
      || c->cb.cublasSetStream (c->cb.h, c->stream) != CUBLAS_STATUS_SUCCESS)
    return flint_error_set (err, FLINT_EINTERNAL, "set up cuBLAS's workspace and stream");
  return 0;
}

static void
cu_close (flint_backend_t *be)
{
  cuda_backend_t *c = CU (be);
  if (c == NULL)
    return;
  if (c->stream)
    {
      enter (c);
      c->nops = 0;
      c->batch_dirty = false;
      cudaStreamSynchronize (c->stream);
    }
  graphs_clear (c);
  while (c->sets)
    {
      struct flint_bweights_s *s = c->sets;
      c->sets = s->next;
      set_free (c, s);
    }
  if (c->cb.h)
    c->cb.cublasDestroy (c->cb.h);
  if (c->cb.workspace)
    cudaFree (c->cb.workspace);
  if (c->cb.lib)
    dlclose (c->cb.lib);
  if (c->split)
    cudaFree (c->split);
  if (c->bounce)
    cudaFreeHost (c->bounce);
  if (c->h_batch)
    cudaFreeHost (c->h_batch);
  if (c->d_batch)
    cudaFree (c->d_batch);
  if (c->stream)
    cudaStreamDestroy (c->stream);
  if (c->ctx)
    c->drv->cuDevicePrimaryCtxRelease (c->cudev);
  free (c->tape);
  pthread_mutex_destroy (&c->sets_lock);
  free (c);
}

static const flint_backend_ops_t cuda_ops = {
  .close = cu_close,
  .alloc = cu_alloc,
  .free = cu_free,
  .upload = cu_upload,
  .download = cu_download,
  .weights_upload = cu_weights_upload,
  .weights_release = cu_weights_release,
  .weights_restore = cu_weights_restore,
  .weights_free = cu_weights_free,
  .weights_resident = cu_weights_resident,
  .kv_new = cu_kv_new,
  .kv_free = cu_kv_free,
  .batch_set = cu_batch_set,
  .embed = cu_embed,
  .rmsnorm = cu_rmsnorm,
  .matmul = cu_matmul,
  .rope = cu_rope,
  .attention = cu_attention,
  .silu_mul = cu_silu_mul,
  .add = cu_add,
  .gather = cu_gather,
};

static void
read_knobs (cuda_backend_t *c)
{
  const char *v;
  long cpus = sysconf (_SC_NPROCESSORS_ONLN);

  v = getenv ("FLINT_CUDA_MATMUL");
  c->use_cublas = v && strcmp (v, "cublas") == 0;
  c->cublas_rows = (uint32_t) env_size ("FLINT_CUDA_CUBLAS_ROWS", 32, 1, 1u << 20);
  v = getenv ("FLINT_CUDA_GRAPHS");
  c->use_graphs = !(v && strcmp (v, "0") == 0);
  v = getenv ("FLINT_CUDA_UPLOAD");
  c->upload_register = v && strcmp (v, "register") == 0;
  c->upload_threads = (uint32_t) env_size ("FLINT_CUDA_UPLOAD_THREADS", cpus > 8 ? 8 : cpus > 0 ? (size_t) cpus : 1, 1, 64);
  c->staging_bytes = env_size ("FLINT_CUDA_STAGING_MB", 4, 1, 1024) << 20;
  c->chunk_bytes = env_size ("FLINT_CUDA_CHUNK_MB", 256, 2, 1u << 20) << 20;
  c->chunk_bytes = (c->chunk_bytes + c->granularity - 1) / c->granularity * c->granularity;
}

int
flint__backend_cuda_open (const flint_backend_options_t *o, flint_backend_t **out, flint_error_t *err)
{
  flint_error_t e2 = FLINT_ERROR_INIT;
  const flint_cudadrv_t *drv = flint_cudadrv_load (&e2);
  cuda_backend_t *c;
  CUmemAllocationProp prop = { 0 };
  char name[96] = "";
  int count = 0, dev = o ? o->device : 0;
  CUresult r;
  cudaError_t e;

  if (drv == NULL)
    return flint_error_set (err, FLINT_EPRECONDITION, "no CUDA device: %s", e2.msg);
  r = drv->cuDeviceGetCount (&count);
  if (r != CUDA_SUCCESS || count == 0)
    return flint_error_set (err, FLINT_EPRECONDITION, "no CUDA device: %s",
                            r != CUDA_SUCCESS ? flint_cudadrv_strerror (drv, r) : "the driver sees no GPU");
  if (dev < 0 || dev >= count)
    return flint_error_set (err, FLINT_EPRECONDITION, "no CUDA device %d (this machine has %d)", dev, count);

  c = calloc (1, sizeof *c);
  if (c == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  pthread_mutex_init (&c->sets_lock, NULL);
  c->base.ops = &cuda_ops;
  c->base.name = "cuda";
  c->drv = drv;
  c->dev = dev;
  if ((r = drv->cuDeviceGet (&c->cudev, dev)) != CUDA_SUCCESS
      || (r = drv->cuDevicePrimaryCtxRetain (&c->ctx, c->cudev)) != CUDA_SUCCESS)
    {
      c->ctx = NULL;
      drv_error (c, err, "open the device's primary context", r);
      flint_error_prefix (err, "no CUDA device");
      cu_close (&c->base);
      return -1;
    }
  /* the runtime's first call on the device: fails here when the driver is older than the
   * runtime this backend was built with */
  if ((e = cudaSetDevice (dev)) != cudaSuccess || (e = cudaFree (NULL)) != cudaSuccess)
    {
      flint_error_set (err, FLINT_EPRECONDITION, "no CUDA device: CUDA runtime %d.%d on driver %d.%d: %s",
                       CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10, drv->driver_version / 1000,
                       drv->driver_version % 1000 / 10, cudaGetErrorString (e));
      cu_close (&c->base);
      return -1;
    }
  if (drv->cuCtxSetCurrent (c->ctx) != CUDA_SUCCESS
      || (e = cudaStreamCreateWithFlags (&c->stream, cudaStreamNonBlocking)) != cudaSuccess)
    {
      flint_error_set (err, FLINT_EINTERNAL, "CUDA: create the backend's stream");
      cu_close (&c->base);
      return -1;
    }
  {
    int v = 0;
    cudaDeviceGetAttribute (&c->sm_count, cudaDevAttrMultiProcessorCount, dev);
    cudaDeviceGetAttribute (&c->cc_major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute (&c->cc_minor, cudaDevAttrComputeCapabilityMinor, dev);
    cudaDeviceGetAttribute (&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    c->smem_optin = (size_t) v;
    c->smem_prepared = 48u << 10;
  }
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = dev;
  if ((r = drv->cuMemGetAllocationGranularity (&c->granularity, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED))
      != CUDA_SUCCESS || c->granularity == 0)
    {
      drv_error (c, err, "cuMemGetAllocationGranularity (no virtual memory management on this GPU?)", r);
      cu_close (&c->base);
      return -1;
    }
  drv->cuDeviceGetName (name, sizeof name, c->cudev);
  drv->cuDeviceTotalMem (&c->total_mem, c->cudev);
  read_knobs (c);
  if (c->use_cublas && cublas_open (c, err) < 0)
    {
      cu_close (&c->base);
      return -1;
    }
  snprintf (c->base.device, sizeof c->base.device, "cuda (%s, sm_%d%d, %d SMs, %.0f GiB, driver %d.%d%s)", name,
            c->cc_major, c->cc_minor, c->sm_count, (double) c->total_mem / (1u << 30), drv->driver_version / 1000,
            drv->driver_version % 1000 / 10, c->use_cublas ? ", cuBLAS prefill" : "");
  *out = &c->base;
  return 0;
}
