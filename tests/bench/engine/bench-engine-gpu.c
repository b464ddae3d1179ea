/* bench-engine-gpu: the model engine on the CUDA backend against the GPU's memory roofline,
 * measured in the same run (issue 6). Prints Markdown rows for tests/bench/engine/run-gpu.
 *
 *   bench-engine-gpu MODEL_DIR [--decode N] [--prompt N] [--batch B] [--copy-mib M] [--header]
 *   bench-engine-gpu --probe          exit 0 when a GPU answers, else say why and exit 77
 *   bench-engine-gpu --h2d MIB        pinned host -> device copy rate of MIB MiB, median of 7,
 *                                     printed as `h2d_gbs <GB/s>` (tests/bench/gpu-coldstart)
 *
 * Baseline: a device-to-device copy of M MiB (default 4096, far past the L2), timed with CUDA
 * events, median of 10 after 3 warm-ups; its rate R counts bytes read plus bytes written, and
 * R / W tokens/s is the batch-1 decode roofline, W being the weight bytes one decode step reads.
 *
 * Rows per model: weight upload (bytes / s through the backend's pinned staging), batch-1 decode
 * (greedy, N steps through the model's forward pass, CUDA graphs as in production; median of 5
 * segments), batch-B decode (aggregate), prefill of a P-token prompt with the default
 * batch-invariant kernel and with the cuBLAS path (FLINT_CUDA_MATMUL=cublas).
 *
 * Without a GPU it prints "skipped: no GPU (...)" and exits 77. */
#include "backend.h"
#include "model.h"
#include "flint/util.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t n_decode = 128, n_prompt = 512, batch = 8;
static size_t copy_mib = 4096;

static void
die (const char *what, const flint_error_t *err)
{
  fprintf (stderr, "bench-engine-gpu: %s: %s\n", what, err->msg);
  exit (1);
}

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

static double
median (double *v, size_t n)
{
  qsort (v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Bytes read + written per second by a device-to-device copy; 0 when it cannot be measured. */
static double
d2d_rate (void)
{
  size_t len = copy_mib << 20;
  void *a = NULL, *b = NULL;
  cudaEvent_t e0, e1;
  double t[10];

  if (cudaMalloc (&a, len) != cudaSuccess || cudaMalloc (&b, len) != cudaSuccess)
    {
      fprintf (stderr, "bench-engine-gpu: cannot allocate 2 x %zu MiB for the copy baseline\n", copy_mib);
      return 0;
    }
  cudaMemset (a, 1, len);
  cudaMemset (b, 2, len);
  cudaEventCreate (&e0);
  cudaEventCreate (&e1);
  for (int i = 0; i < 13; i++)
    {
      float ms = 0;
      cudaEventRecord (e0, 0);
      cudaMemcpyAsync (b, a, len, cudaMemcpyDeviceToDevice, 0);
      cudaEventRecord (e1, 0);
      cudaEventSynchronize (e1);
      cudaEventElapsedTime (&ms, e0, e1);
      if (i >= 3)
        t[i - 3] = ms / 1e3;
    }
  cudaEventDestroy (e0);
  cudaEventDestroy (e1);
  cudaFree (a);
  cudaFree (b);
  return 2.0 * (double) len / median (t, 10);
}

/* Bytes per second of a pinned host -> device copy of `mib` MiB, median of 7 after a warm-up. */
static double
h2d_rate (size_t mib)
{
  size_t len = mib << 20;
  void *h = NULL, *d = NULL;
  cudaEvent_t e0, e1;
  double t[7];

  if (cudaHostAlloc (&h, len, cudaHostAllocDefault) != cudaSuccess || cudaMalloc (&d, len) != cudaSuccess)
    return 0;
  memset (h, 3, len);
  cudaEventCreate (&e0);
  cudaEventCreate (&e1);
  for (int i = 0; i < 8; i++)
    {
      float ms = 0;
      cudaEventRecord (e0, 0);
      cudaMemcpyAsync (d, h, len, cudaMemcpyHostToDevice, 0);
      cudaEventRecord (e1, 0);
      cudaEventSynchronize (e1);
      cudaEventElapsedTime (&ms, e0, e1);
      if (i > 0)
        t[i - 1] = ms / 1e3;
    }
  cudaEventDestroy (e0);
  cudaEventDestroy (e1);
  cudaFreeHost (h);
  cudaFree (d);
  return (double) len / median (t, 7);
}

typedef struct run_s {
  flint_backend_t *be;
  flint_model_t *m;
  flint_bkv_t *kv;
  float *logits;
  double upload_gbs;
} run_t;

static void
open_run (run_t *r, const char *dir)
{
  flint_error_t err = FLINT_ERROR_INIT;
  flint_model_options_t mo = { 0 };
  flint_kv_geom_t g;

  if (flint__backend_open ("cuda", NULL, &r->be, &err) < 0)
    die ("open the CUDA backend", &err);
  mo.be = r->be;
  mo.context = n_prompt + n_decode + 8;
  mo.max_tokens = n_prompt > batch ? n_prompt : batch;
  mo.max_out = batch;
  if (flint__model_open (dir, &mo, &r->m, &err) < 0)
    die ("open the model", &err);
  r->upload_gbs = r->be->upload.copy_ms > 0 ? (double) r->be->upload.bytes / (r->be->upload.copy_ms / 1e3) / 1e9 : 0;
  g = flint__model_kv_geom (r->m, batch, r->m->context);
  if (r->be->ops->kv_new (r->be, &g, &r->kv, &err) < 0)
    die ("create the KV cache", &err);
  r->logits = malloc ((size_t) batch * r->m->cfg.vocab * sizeof (float));
}

static void
close_run (run_t *r)
{
  free (r->logits);
  r->be->ops->kv_free (r->be, r->kv);
  flint__model_free (r->m);
  r->be->ops->close (r->be);
  memset (r, 0, sizeof *r);
}

/* `seqs` sequences decode `steps` tokens each from position `start`; tokens/s (aggregate). */
static double
decode (run_t *r, uint32_t seqs, uint32_t start, uint32_t steps)
{
  int32_t tok[256];
  uint32_t pos[256], slot[256], out[256];
  flint_error_t err = FLINT_ERROR_INIT;
  uint64_t t0;

  for (uint32_t s = 0; s < seqs; s++)
    tok[s] = (int32_t) (7 + 13 * s), slot[s] = s, out[s] = s;
  t0 = flint_now_ns ();
  for (uint32_t i = 0; i < steps; i++)
    {
      flint_batch_t b = { seqs, tok, pos, slot, seqs, out };
      for (uint32_t s = 0; s < seqs; s++)
        pos[s] = start + i;
      if (flint__model_forward (r->m, r->kv, &b, r->logits, &err) < 0)
        die ("decode", &err);
      for (uint32_t s = 0; s < seqs; s++)
        {
          float best = -1e30f;
          for (uint32_t v = 0; v < 1024 && v < r->m->cfg.vocab; v++)
            if (r->logits[(size_t) s * r->m->cfg.vocab + v] > best)
              best = r->logits[(size_t) s * r->m->cfg.vocab + v], tok[s] = (int32_t) v;
        }
    }
  return (double) seqs * steps / ((double) (flint_now_ns () - t0) / 1e9);
}

/* Prompt tokens per second of one pass over an n_prompt-token prompt, best of 3. */
static double
prefill (run_t *r)
{
  int32_t *tok = malloc (n_prompt * sizeof *tok);
  uint32_t *pos = malloc (n_prompt * sizeof *pos), *slot = calloc (n_prompt, sizeof *slot), last = n_prompt - 1;
  flint_batch_t b = { n_prompt, tok, pos, slot, 1, &last };
  flint_error_t err = FLINT_ERROR_INIT;
  double best = 0;

  for (uint32_t i = 0; i < n_prompt; i++)
    tok[i] = (int32_t) ((i * 37) % 1000), pos[i] = i;
  for (int rep = 0; rep < 4; rep++)
    {
      uint64_t t0 = flint_now_ns ();
      double rate;
      if (flint__model_forward (r->m, r->kv, &b, r->logits, &err) < 0)
        die ("prefill", &err);
      rate = n_prompt / ((double) (flint_now_ns () - t0) / 1e9);
      if (rep > 0 && rate > best)
        best = rate;
    }
  free (tok), free (pos), free (slot);
  return best;
}

int
main (int argc, char **argv)
{
  const char *dir = NULL;
  flint_error_t err = FLINT_ERROR_INIT;
  flint_backend_t *probe;
  run_t r = { 0 };
  double copy, roof, dec1, decb, pre_exact, pre_cublas, seg[5];
  bool header = false, probe_only = false;
  size_t h2d_mib = 0;

  for (int i = 1; i < argc; i++)
    {
      if (strcmp (argv[i], "--decode") == 0 && i + 1 < argc)
        n_decode = (uint32_t) atoi (argv[++i]);
      else if (strcmp (argv[i], "--prompt") == 0 && i + 1 < argc)
        n_prompt = (uint32_t) atoi (argv[++i]);
      else if (strcmp (argv[i], "--batch") == 0 && i + 1 < argc)
        batch = (uint32_t) atoi (argv[++i]);
      else if (strcmp (argv[i], "--copy-mib") == 0 && i + 1 < argc)
        copy_mib = (size_t) atoi (argv[++i]);
      else if (strcmp (argv[i], "--header") == 0)
        header = true;
      else if (strcmp (argv[i], "--probe") == 0)
        probe_only = true;
      else if (strcmp (argv[i], "--h2d") == 0 && i + 1 < argc)
        h2d_mib = (size_t) atoi (argv[++i]);
      else if (argv[i][0] != '-' && dir == NULL)
        dir = argv[i];
      else
        {
          fprintf (stderr, "usage: bench-engine-gpu MODEL_DIR [--decode N] [--prompt N] [--batch B] [--copy-mib M] "
                           "[--header]\n");
          return 2;
        }
    }
  if ((dir == NULL && !probe_only && !h2d_mib) || batch == 0 || batch > 256 || n_prompt == 0 || n_decode < 5)
    return 2;
  if (flint__backend_open ("cuda", NULL, &probe, &err) < 0)
    {
      printf ("skipped: no GPU (%s)\n", err.msg);
      return 77;
    }
  if (h2d_mib)
    {
      printf ("h2d_gbs %.2f\n", h2d_rate (h2d_mib) / 1e9);
      probe->ops->close (probe);
      return 0;
    }
  if (probe_only)
    {
      printf ("%s\n", probe->device);
      probe->ops->close (probe);
      return 0;
    }
  copy = d2d_rate ();

  setenv ("FLINT_CUDA_MATMUL", "exact", 1);
  open_run (&r, dir);
  roof = copy / (double) r.m->weight_bytes;
  decode (&r, 1, 0, 4); /* warm-up: graphs captured for the shapes used below */
  decode (&r, batch, 0, 4);
  pre_exact = prefill (&r);
  for (int s = 0; s < 5; s++)
    seg[s] = decode (&r, 1, n_prompt, n_decode / 5);
  dec1 = median (seg, 5);
  for (int s = 0; s < 5; s++)
    seg[s] = decode (&r, batch, n_prompt, n_decode / 5);
  decb = median (seg, 5);
  if (header)
    {
      printf ("GPU: %s. Baseline: device-to-device copy of %zu MiB, median of 10, %.0f GB/s (read + written).\n\n",
              probe->device, copy_mib, copy / 1e9);
      printf ("| model | weights read per step | measurement | tokens/s | vs roofline |\n|---|---:|---|---:|---:|\n");
    }
  printf ("| %s %u layers, hidden %u | %.2f GB | weight upload (%s, %.1f GB/s) | - | - |\n", r.m->cfg.arch_name,
          r.m->cfg.layers, r.m->cfg.hidden, r.m->weight_bytes / 1e9, r.be->upload.mode ? r.be->upload.mode : "-",
          r.upload_gbs);
  printf ("| | | decode, batch 1 (%u tokens, median of 5) | %.1f | %.0f%% of %.1f |\n", n_decode, dec1,
          100 * dec1 / roof, roof);
  printf ("| | | decode, batch %u (aggregate) | %.1f | %.0f%% of %u x |\n", batch, decb, 100 * decb / (roof * batch),
          batch);
  printf ("| | | prefill, %u-token prompt, batch-invariant kernel | %.1f | - |\n", n_prompt, pre_exact);
  fflush (stdout);
  close_run (&r);

  setenv ("FLINT_CUDA_MATMUL", "cublas", 1);
  open_run (&r, dir);
  pre_cublas = prefill (&r);
  printf ("| | | prefill, %u-token prompt, cuBLAS (FLINT_CUDA_MATMUL=cublas) | %.1f | - |\n", n_prompt, pre_cublas);
  close_run (&r);
  probe->ops->close (probe);
  return 0;
}
