/* The CPU backend: the operations of backend.h on host memory with a small thread pool and the
 * SIMD tiles of cpu_kernels.c.
 *
 * Weights are used where they lie: `dev` is the host address inside the MAP_SHARED mapping of
 * the node weight store, and the kernels widen BF16/F16 to F32 in registers. Nothing is copied,
 * so a replica's private memory holds only activations and its KV cache. Releasing a weight
 * set (before a checkpoint) only forbids its use until it is restored.
 *
 * Work split: a matrix product is cut into blocks of weight rows small enough to stay in L2
 * while every group of up to 4 activation rows passes over them; blocks are claimed
 * dynamically by the pool's threads. Each output element is computed whole by one tile call,
 * so the split never changes a result. Attention runs one task per (row, head). The cheap
 * row-wise operations (norms, activations, adds) run on the calling thread. */
#include "backend.h"
#include "cpu_kernels.h"
#include "pool.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct flint_bweights_s {
  struct flint_bweights_s *next;
  flint_bweight_t *w;
  size_t n;
  bool released;
};

struct flint_bkv_s {
  flint_kv_geom_t g;
  float *mem;
  size_t bytes;
  size_t row;            /* floats per (position): kv_heads x head_dim */
};

typedef struct cpu_backend_s {
  flint_backend_t base;
  flint_pool_t *pool;
  const flint_cpu_kernels_t *k;
  uint32_t threads;
  /* the current batch */
  uint32_t n, n_out;
  int32_t *tokens;
  uint32_t *pos, *slot, *out_rows;
  size_t cap, out_cap;
  /* attention scores, one buffer per pool thread */
  float **scores;
  size_t scores_len;
  struct flint_bweights_s *sets;
  pthread_mutex_t sets_lock;
} cpu_backend_t;

#define CPU(be) ((cpu_backend_t *) (be))

/* ---- memory ------------------------------------------------------------------------------- */

static void *
cpu_alloc (flint_backend_t *be, size_t bytes)
{
  void *p = NULL;
  (void) be;
  if (posix_memalign (&p, 64, bytes ? bytes : 64) != 0)
    return NULL;
  memset (p, 0, bytes);
  return p;
}

static void
cpu_free (flint_backend_t *be, void *p)
{
  (void) be;
  free (p);
}

static int
cpu_upload (flint_backend_t *be, void *dev, const void *host, size_t bytes, flint_error_t *err)
{
  (void) be;
  (void) err;
  if (bytes)
    memmove (dev, host, bytes);
  return 0;
}

static int
cpu_download (flint_backend_t *be, void *host, const void *dev, size_t bytes, flint_error_t *err)
{
  (void) be;
  (void) err;
  if (bytes)
    memmove (host, dev, bytes);
  return 0;
}

/* ---- weights ------------------------------------------------------------------------------ */

static int
cpu_weights_upload (flint_backend_t *be, flint_bweight_t *w, size_t n, flint_bweights_t **set_out, flint_error_t *err)
{
  flint_bweights_t *s = calloc (1, sizeof *s);
  if (s == NULL || (n && (s->w = malloc (n * sizeof *s->w)) == NULL))
    {
      free (s);
      return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
    }
  for (size_t i = 0; i < n; i++)
    w[i].dev = w[i].host;
  memcpy (s->w, w, n * sizeof *w);
  s->n = n;
  pthread_mutex_lock (&CPU (be)->sets_lock);
  s->next = CPU (be)->sets;
  CPU (be)->sets = s;
  pthread_mutex_unlock (&CPU (be)->sets_lock);
  *set_out = s;
  return 0;
}

static int
cpu_weights_release (flint_backend_t *be, flint_bweights_t *s, flint_error_t *err)
{
  (void) be;
  (void) err;
  /* Nothing to give back: the pages belong to the weight store's shared mapping, which CRIU
   * records as a file mapping without its contents. The set is only marked unusable, so that a
   * compute step between the hooks is caught instead of silently working on a CPU and failing
   * on a GPU. */
  s->released = true;
  return 0;
}

static int
cpu_weights_restore (flint_backend_t *be, flint_bweights_t *s, flint_error_t *err)
{
  (void) be;
  (void) err;
  /* the mapping never went away: the next access faults the pages back in from the store */
  s->released = false;
  return 0;
}

static void
cpu_weights_free (flint_backend_t *be, flint_bweights_t *s)
{
  cpu_backend_t *c = CPU (be);
  if (s == NULL)
    return;
  pthread_mutex_lock (&c->sets_lock);
  for (flint_bweights_t **pp = &c->sets; *pp; pp = &(*pp)->next)
    if (*pp == s)
      {
        *pp = s->next;
        break;
      }
  pthread_mutex_unlock (&c->sets_lock);
  free (s->w);
  free (s);
}

static uint64_t
cpu_weights_resident (flint_backend_t *be, const flint_bweights_t *s)
{
  (void) be;
  (void) s;
  return 0;
}

/* ---- KV cache ------------------------------------------------------------------------------ */

static int
cpu_kv_new (flint_backend_t *be, const flint_kv_geom_t *g, flint_bkv_t **out, flint_error_t *err)
{
  cpu_backend_t *c = CPU (be);
  flint_bkv_t *kv = calloc (1, sizeof *kv);
  double bytes;

  if (kv == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  kv->g = *g;
  kv->row = (size_t) g->kv_heads * g->head_dim;
  bytes = 2.0 * g->layers * g->seqs * (double) g->context * (double) kv->row * sizeof (float);
  if (bytes > (double) SIZE_MAX / 2)
    {
      free (kv);
      return flint_error_set (err, FLINT_EEXHAUSTED, "KV cache of %.0f bytes is too large", bytes);
    }
  kv->bytes = (size_t) bytes;
  /* untouched pages cost nothing: memory grows with the positions actually used */
  kv->mem = mmap (NULL, kv->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (kv->mem == MAP_FAILED)
    {
      int e = errno;
      free (kv);
      return flint_error_set_errno (err, FLINT_EEXHAUSTED, e, "reserve a KV cache of %zu MiB", (size_t) (bytes / 1048576));
    }
  if (g->context > c->scores_len)
    {
      for (uint32_t t = 0; t < c->threads; t++)
        {
          float *p = realloc (c->scores[t], g->context * sizeof (float));
          if (p == NULL)
            {
              munmap (kv->mem, kv->bytes);
              free (kv);
              return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
            }
          c->scores[t] = p;
        }
      c->scores_len = g->context;
    }
  *out = kv;
  return 0;
}

static void
cpu_kv_free (flint_backend_t *be, flint_bkv_t *kv)
{
  (void) be;
  if (kv == NULL)
    return;
  munmap (kv->mem, kv->bytes);
  free (kv);
}

/* K (which = 0) or V (1) of (layer, slot, pos). */
static inline float *
kv_at (const flint_bkv_t *kv, uint32_t layer, int which, uint32_t slot, uint32_t pos)
{
  const flint_kv_geom_t *g = &kv->g;
  return kv->mem + ((((size_t) layer * 2 + (size_t) which) * g->seqs + slot) * g->context + pos) * kv->row;
}

/* ---- batch --------------------------------------------------------------------------------- */

static int
cpu_batch_set (flint_backend_t *be, const flint_batch_t *b, flint_error_t *err)
{
  cpu_backend_t *c = CPU (be);

  pthread_mutex_lock (&c->sets_lock);
  for (flint_bweights_t *s = c->sets; s; s = s->next)
    if (s->released)
      {
        pthread_mutex_unlock (&c->sets_lock);
        return flint_error_set (err, FLINT_EINTERNAL, "the weights are released (checkpoint in progress)");
      }
  pthread_mutex_unlock (&c->sets_lock);
  if (b->n > c->cap)
    {
      int32_t *t = realloc (c->tokens, b->n * sizeof *t);
      uint32_t *p = t ? realloc (c->pos, b->n * sizeof *p) : NULL;
      uint32_t *s = p ? realloc (c->slot, b->n * sizeof *s) : NULL;
      if (t)
        c->tokens = t;
      if (p)
        c->pos = p;
      if (s)
        c->slot = s;
      if (!s)
        return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
      c->cap = b->n;
    }
  if (b->n_out > c->out_cap)
    {
      uint32_t *o = realloc (c->out_rows, b->n_out * sizeof *o);
      if (o == NULL)
        return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
      c->out_rows = o;
      c->out_cap = b->n_out;
    }
  memcpy (c->tokens, b->tokens, b->n * sizeof *c->tokens);
  memcpy (c->pos, b->pos, b->n * sizeof *c->pos);
  memcpy (c->slot, b->slot, b->n * sizeof *c->slot);
  if (b->n_out)
    memcpy (c->out_rows, b->out_rows, b->n_out * sizeof *c->out_rows);
  c->n = b->n;
  c->n_out = b->n_out;
  return 0;
}

/* ---- compute ------------------------------------------------------------------------------ */

/* Below this many multiply-adds a hand-off to the pool costs more than it saves: the calling
 * thread runs every task itself (same tasks, same results). */
#define PARALLEL_MIN_WORK (1u << 16)

static void
run_tasks (cpu_backend_t *c, flint_pool_fn fn, void *arg, uint32_t n, uint64_t work)
{
  if (work < PARALLEL_MIN_WORK)
    for (uint32_t t = 0; t < n; t++)
      fn (arg, t, 0);
  else
    flint__pool_run (c->pool, fn, arg, n);
}

static void
cpu_embed (flint_backend_t *be, float *out, const flint_wmat_t *t)
{
  cpu_backend_t *c = CPU (be);
  size_t es = flint_dtype_size (t->dtype);
  for (uint32_t i = 0; i < c->n; i++)
    c->k->widen ((const uint8_t *) t->data + (size_t) c->tokens[i] * t->cols * es, t->dtype, out + (size_t) i * t->cols,
                 t->cols);
}

static float
wvec (const flint_wmat_t *w, size_t i)
{
  switch (w->dtype)
    {
    case FLINT_DTYPE_BF16:
      {
        uint32_t bits = (uint32_t) ((const uint16_t *) w->data)[i] << 16;
        float f;
        memcpy (&f, &bits, sizeof f);
        return f;
      }
    case FLINT_DTYPE_F16: return flint__f16_to_f32 (((const uint16_t *) w->data)[i]);
    default: return ((const float *) w->data)[i];
    }
}

static void
cpu_rmsnorm (flint_backend_t *be, float *out, const float *x, const flint_wmat_t *w, uint32_t rows, float eps)
{
  uint32_t d = w->cols;
  (void) be;
  for (uint32_t r = 0; r < rows; r++)
    {
      const float *xr = x + (size_t) r * d;
      float *o = out + (size_t) r * d;
      double ss = 0;
      float scale;
      for (uint32_t i = 0; i < d; i++)
        ss += (double) xr[i] * xr[i];
      scale = (float) (1.0 / sqrt (ss / d + eps));
      for (uint32_t i = 0; i < d; i++)
        o[i] = xr[i] * scale * wvec (w, i);
    }
}

typedef struct mm_job_s {
  cpu_backend_t *c;
  float *out;
  const float *x;
  uint32_t rows;
  const flint_wmat_t *w;
  const flint_wmat_t *bias;
  uint32_t block;        /* weight rows per task */
} mm_job_t;

static void
mm_task (void *arg, uint32_t task, uint32_t thread)
{
  const mm_job_t *j = arg;
  const flint_wmat_t *w = j->w;
  uint32_t N = w->rows, K = w->cols;
  uint32_t c0 = task * j->block, c1 = c0 + j->block < N ? c0 + j->block : N;
  size_t es = flint_dtype_size (w->dtype);
  (void) thread;

  for (uint32_t r0 = 0; r0 < j->rows; r0 += FLINT_TILE_MAX)
    {
      uint32_t nx = j->rows - r0 < FLINT_TILE_MAX ? j->rows - r0 : FLINT_TILE_MAX;
      uint32_t step = nx <= 2 ? 4 : 2;
      const float *xs[FLINT_TILE_MAX];
      for (uint32_t r = 0; r < nx; r++)
        xs[r] = j->x + (size_t) (r0 + r) * K;
      for (uint32_t c = c0; c < c1;)
        {
          uint32_t nw = c1 - c >= step ? step : 1;
          const void *ws[FLINT_TILE_MAX];
          for (uint32_t q = 0; q < nw; q++)
            ws[q] = (const uint8_t *) w->data + (size_t) (c + q) * K * es;
          j->c->k->tile (xs, nx, ws, nw, w->dtype, K, j->out + (size_t) r0 * N + c, N);
          c += nw;
        }
    }
  if (j->bias)
    for (uint32_t r = 0; r < j->rows; r++)
      for (uint32_t c = c0; c < c1; c++)
        j->out[(size_t) r * N + c] += wvec (j->bias, c);
}

static void
cpu_matmul (flint_backend_t *be, float *out, const float *x, uint32_t rows, const flint_wmat_t *w,
            const flint_wmat_t *bias)
{
  cpu_backend_t *c = CPU (be);
  size_t row_bytes = (size_t) w->cols * flint_dtype_size (w->dtype);
  /* a block stays in L2 while the activation rows pass over it; at least 4 rows per task
   * (and enough tasks to share among the threads) */
  uint32_t block = (uint32_t) ((128u << 10) / (row_bytes ? row_bytes : 1));
  mm_job_t j = { c, out, x, rows, w, bias, 0 };

  if (block < 4)
    block = 4;
  if (block > 64)
    block = 64;
  while (block > 4 && (w->rows + block - 1) / block < 4 * c->threads)
    block /= 2;
  block &= ~3u;
  j.block = block;
  run_tasks (c, mm_task, &j, (w->rows + block - 1) / block, (uint64_t) rows * w->rows * w->cols);
}

static void
cpu_rope (flint_backend_t *be, float *x, uint32_t heads, uint32_t hd, const float *cs)
{
  cpu_backend_t *c = CPU (be);
  uint32_t half = hd / 2;
  for (uint32_t i = 0; i < c->n; i++)
    {
      const float *t = cs + (size_t) c->pos[i] * half * 2;
      for (uint32_t h = 0; h < heads; h++)
        {
          float *v = x + ((size_t) i * heads + h) * hd;
          for (uint32_t j = 0; j < half; j++)
            {
              float a = v[j], b = v[j + half], co = t[2 * j], si = t[2 * j + 1];
              v[j] = a * co - b * si;
              v[j + half] = b * co + a * si;
            }
        }
    }
}

typedef struct attn_job_s {
  cpu_backend_t *c;
  float *out;
  const float *q;
  const flint_bkv_t *kv;
  uint32_t layer;
  const flint_attn_params_t *p;
} attn_job_t;

static void
attn_task (void *arg, uint32_t task, uint32_t thread)
{
  const attn_job_t *j = arg;
  const flint_attn_params_t *p = j->p;
  uint32_t row = task / p->heads, h = task % p->heads, hd = p->head_dim;
  uint32_t kvh = h / (p->heads / p->kv_heads);
  uint32_t pos = j->c->pos[row], slot = j->c->slot[row];
  uint32_t start = p->window && pos + 1 > p->window ? pos + 1 - p->window : 0;
  const float *q = j->q + ((size_t) row * p->heads + h) * hd;
  float *o = j->out + ((size_t) row * p->heads + h) * hd;
  float *s = j->c->scores[thread];
  float mx = -INFINITY, sum = 0;

  /* scores: the SIMD tiles, four positions at a time (the same arithmetic per position) */
  for (uint32_t t = start; t <= pos;)
    {
      const void *ws[4];
      uint32_t nw = pos + 1 - t >= 4 ? 4 : 1;
      for (uint32_t c = 0; c < nw; c++)
        ws[c] = kv_at (j->kv, j->layer, 0, slot, t + c) + (size_t) kvh * hd;
      j->c->k->tile (&q, 1, ws, nw, FLINT_DTYPE_F32, hd, s + (t - start), 1);
      t += nw;
    }
  for (uint32_t t = start; t <= pos; t++)
    {
      s[t - start] *= p->scale;
      if (s[t - start] > mx)
        mx = s[t - start];
    }
  for (uint32_t t = start; t <= pos; t++)
    {
      s[t - start] = expf (s[t - start] - mx);
      sum += s[t - start];
    }
  memset (o, 0, hd * sizeof *o);
  for (uint32_t t = start; t <= pos; t++)
    {
      const float *vr = kv_at (j->kv, j->layer, 1, slot, t) + (size_t) kvh * hd;
      float wgt = s[t - start] / sum;
      for (uint32_t e = 0; e < hd; e++)
        o[e] += wgt * vr[e];
    }
}

static void
cpu_attention (flint_backend_t *be, float *out, const float *q, const float *k, const float *v, flint_bkv_t *kv,
               uint32_t layer, const flint_attn_params_t *p)
{
  cpu_backend_t *c = CPU (be);
  attn_job_t j = { c, out, q, kv, layer, p };

  /* all of the batch's keys and values go in first: rows of one sequence see each other */
  for (uint32_t i = 0; i < c->n; i++)
    {
      memcpy (kv_at (kv, layer, 0, c->slot[i], c->pos[i]), k + (size_t) i * kv->row, kv->row * sizeof (float));
      memcpy (kv_at (kv, layer, 1, c->slot[i], c->pos[i]), v + (size_t) i * kv->row, kv->row * sizeof (float));
    }
  {
    uint64_t work = 0;
    for (uint32_t i = 0; i < c->n; i++)
      work += (uint64_t) (c->pos[i] + 1) * p->heads * p->head_dim * 2;
    run_tasks (c, attn_task, &j, c->n * p->heads, work);
  }
}

typedef struct silu_job_s {
  float *out;
  const float *g, *u;
  size_t n;
} silu_job_t;

#define SILU_CHUNK 8192

static void
silu_task (void *arg, uint32_t task, uint32_t thread)
{
  const silu_job_t *j = arg;
  size_t a = (size_t) task * SILU_CHUNK, b = a + SILU_CHUNK < j->n ? a + SILU_CHUNK : j->n;
  (void) thread;
  for (size_t i = a; i < b; i++)
    j->out[i] = j->g[i] / (1.0f + expf (-j->g[i])) * j->u[i];
}

static void
cpu_silu_mul (flint_backend_t *be, float *out, const float *g, const float *u, size_t n)
{
  silu_job_t j = { out, g, u, n };
  /* an exp per element: worth the threads for prompt chunks */
  run_tasks (CPU (be), silu_task, &j, (uint32_t) ((n + SILU_CHUNK - 1) / SILU_CHUNK), (uint64_t) n * 16);
}

static void
cpu_add (flint_backend_t *be, float *x, const float *y, size_t n)
{
  (void) be;
  for (size_t i = 0; i < n; i++)
    x[i] += y[i];
}

static void
cpu_gather (flint_backend_t *be, float *out, const float *x, uint32_t dim)
{
  cpu_backend_t *c = CPU (be);
  for (uint32_t i = 0; i < c->n_out; i++)
    memmove (out + (size_t) i * dim, x + (size_t) c->out_rows[i] * dim, dim * sizeof (float));
}

/* ---- lifetime ------------------------------------------------------------------------------ */

static void
cpu_close (flint_backend_t *be)
{
  cpu_backend_t *c = CPU (be);
  if (c == NULL)
    return;
  flint__pool_free (c->pool);
  for (uint32_t t = 0; c->scores && t < c->threads; t++)
    free (c->scores[t]);
  free (c->scores);
  free (c->tokens);
  free (c->pos);
  free (c->slot);
  free (c->out_rows);
  pthread_mutex_destroy (&c->sets_lock);
  free (c);
}

static const flint_backend_ops_t cpu_ops = {
  .close = cpu_close,
  .alloc = cpu_alloc,
  .free = cpu_free,
  .upload = cpu_upload,
  .download = cpu_download,
  .weights_upload = cpu_weights_upload,
  .weights_release = cpu_weights_release,
  .weights_restore = cpu_weights_restore,
  .weights_free = cpu_weights_free,
  .weights_resident = cpu_weights_resident,
  .kv_new = cpu_kv_new,
  .kv_free = cpu_kv_free,
  .batch_set = cpu_batch_set,
  .embed = cpu_embed,
  .rmsnorm = cpu_rmsnorm,
  .matmul = cpu_matmul,
  .rope = cpu_rope,
  .attention = cpu_attention,
  .silu_mul = cpu_silu_mul,
  .add = cpu_add,
  .gather = cpu_gather,
};

int
flint__backend_cpu_open (const flint_backend_options_t *o, flint_backend_t **out, flint_error_t *err)
{
  cpu_backend_t *c = calloc (1, sizeof *c);
  uint32_t threads = o ? o->threads : 0;
  int r;

  if (c == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  if (threads == 0)
    {
      cpu_set_t set;
      threads = sched_getaffinity (0, sizeof set, &set) == 0 ? (uint32_t) CPU_COUNT (&set) : 1;
    }
  if (threads > 256)
    threads = 256;
  pthread_mutex_init (&c->sets_lock, NULL);
  c->base.ops = &cpu_ops;
  c->base.name = "cpu";
  c->k = flint__cpu_kernels_detect (o ? o->kernels : NULL);
  c->threads = threads;
  c->scores = calloc (threads, sizeof *c->scores);
  if (c->scores == NULL)
    {
      cpu_close (&c->base);
      return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
    }
  r = flint__pool_new (threads, &c->pool);
  if (r < 0)
    {
      cpu_close (&c->base);
      return flint_error_set_errno (err, FLINT_EINTERNAL, r, "start %u engine threads", threads);
    }
  snprintf (c->base.device, sizeof c->base.device, "cpu (%s kernels, %u threads)", c->k->isa, threads);
  *out = &c->base;
  return 0;
}
