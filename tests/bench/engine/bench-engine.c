/* bench-engine: model-engine throughput against the memory-bandwidth roofline, measured in the
 * same run (issue 6). Prints a Markdown table for tests/bench/report.py.
 *
 *   bench-engine MODEL_DIR [--decode N] [--prompt N] [--batch B] [--threads T] [--copy-mib M]
 *
 * Baseline: a large memcpy (M MiB, default 1024, far past the caches) on every engine thread,
 * best of 5; its rate R (bytes copied per second) sets the decode roofline R / W tokens/s, W being
 * the weight bytes one decode step reads (every layer's matrices, norms and the head).
 *
 * Rows: prefill (one forward pass over a P-token prompt, best of 2), batch-1 decode (N/3 steps of
 * one token, greedy, through the model's forward pass), batched decode (B sequences, one token
 * each per step), and batch-1 decode end to end through the engine's scheduler (a JSON request,
 * the path an invoke takes); the decode rows are the best of three interleaved rounds. */
#include "engine.h"
#include "model.h"
#include "flint/util.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static uint32_t threads, n_decode = 64, n_prompt = 128, batch = 8;
static size_t copy_mib = 1024;

typedef struct copy_arg_s {
  char *dst;
  const char *src;
  size_t len;
} copy_arg_t;

static void *
copy_main (void *p)
{
  copy_arg_t *a = p;
  memcpy (a->dst, a->src, a->len);
  return NULL;
}

/* Bytes copied per second by `t` threads copying disjoint slices; best of 5. */
static double
memcpy_rate (uint32_t t)
{
  size_t len = copy_mib << 20;
  char *src = mmap (NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  char *dst = mmap (NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  double best = 0;
  pthread_t tid[256];
  copy_arg_t arg[256];

  if (src == MAP_FAILED || dst == MAP_FAILED)
    {
      perror ("mmap");
      exit (1);
    }
  memset (src, 1, len);
  memset (dst, 2, len); /* fault both in: the copies measure bandwidth, not page faults */
  for (int rep = 0; rep < 5; rep++)
    {
      uint64_t t0 = flint_now_ns ();
      for (uint32_t i = 0; i < t; i++)
        {
          size_t part = len / t;
          arg[i] = (copy_arg_t) { dst + i * part, src + i * part, part };
          pthread_create (&tid[i], NULL, copy_main, &arg[i]);
        }
      for (uint32_t i = 0; i < t; i++)
        pthread_join (tid[i], NULL);
      {
        double r = (double) len / ((double) (flint_now_ns () - t0) / 1e9);
        if (r > best)
          best = r;
      }
    }
  munmap (src, len);
  munmap (dst, len);
  return best;
}

static void
die (const flint_error_t *err)
{
  fprintf (stderr, "bench-engine: %s\n", err->msg);
  exit (1);
}

typedef struct run_s {
  flint_model_t *m;
  flint_bkv_t *kv;
  float *logits;
} run_t;

/* seq sequences decode `steps` tokens each, one per step per sequence, starting at `start`. */
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
        die (&err);
      for (uint32_t s = 0; s < seqs; s++)
        {
          /* greedy, but kept inside the tokenizer's range of the benchmark model */
          float best = -1e30f;
          for (uint32_t v = 0; v < 1024 && v < r->m->cfg.vocab; v++)
            if (r->logits[(size_t) s * r->m->cfg.vocab + v] > best)
              best = r->logits[(size_t) s * r->m->cfg.vocab + v], tok[s] = (int32_t) v;
        }
    }
  return (double) seqs * steps / ((double) (flint_now_ns () - t0) / 1e9);
}

int
main (int argc, char **argv)
{
  const char *dir = NULL;
  flint_backend_options_t bo = { 0 };
  flint_backend_t *be;
  flint_model_options_t mo = { 0 };
  flint_error_t err = FLINT_ERROR_INIT;
  run_t r = { 0 };
  double copy, roof, prefill, dec1, decb, e2e;
  uint64_t t0;

  for (int i = 1; i < argc; i++)
    {
      if (strcmp (argv[i], "--decode") == 0 && i + 1 < argc)
        n_decode = (uint32_t) atoi (argv[++i]);
      else if (strcmp (argv[i], "--prompt") == 0 && i + 1 < argc)
        n_prompt = (uint32_t) atoi (argv[++i]);
      else if (strcmp (argv[i], "--batch") == 0 && i + 1 < argc)
        batch = (uint32_t) atoi (argv[++i]);
      else if (strcmp (argv[i], "--threads") == 0 && i + 1 < argc)
        threads = (uint32_t) atoi (argv[++i]);
      else if (strcmp (argv[i], "--copy-mib") == 0 && i + 1 < argc)
        copy_mib = (size_t) atoi (argv[++i]);
      else if (argv[i][0] != '-' && dir == NULL)
        dir = argv[i];
      else
        {
          fprintf (stderr, "usage: bench-engine MODEL_DIR [--decode N] [--prompt N] [--batch B] [--threads T] "
                           "[--copy-mib M]\n");
          return 2;
        }
    }
  if (dir == NULL || batch == 0 || batch > 256 || n_prompt == 0)
    return 2;

  bo.threads = threads;
  if (flint__backend_open ("cpu", &bo, &be, &err) < 0)
    die (&err);
  if (threads == 0)
    {
      cpu_set_t set;
      threads = sched_getaffinity (0, sizeof set, &set) == 0 ? (uint32_t) CPU_COUNT (&set) : 1;
    }
  copy = memcpy_rate (threads);

  mo.be = be;
  mo.context = n_prompt + n_decode + 8;
  mo.max_tokens = n_prompt > batch ? n_prompt : batch;
  mo.max_out = batch;
  if (flint__model_open (dir, &mo, &r.m, &err) < 0)
    die (&err);
  {
    flint_kv_geom_t g = flint__model_kv_geom (r.m, batch, r.m->context);
    if (be->ops->kv_new (be, &g, &r.kv, &err) < 0)
      die (&err);
  }
  r.logits = malloc ((size_t) batch * r.m->cfg.vocab * sizeof (float));
  roof = copy / (double) r.m->weight_bytes;

  /* warm-up: fault the weight pages in (they live in the store's page cache) */
  decode (&r, 1, 0, 2);

  /* prefill: one pass over the prompt in slot 0 */
  {
    int32_t *tok = malloc (n_prompt * sizeof *tok);
    uint32_t *pos = malloc (n_prompt * sizeof *pos), *slot = calloc (n_prompt, sizeof *slot), last = n_prompt - 1;
    flint_batch_t b = { n_prompt, tok, pos, slot, 1, &last };
    for (uint32_t i = 0; i < n_prompt; i++)
      tok[i] = (int32_t) ((i * 37) % 1000), pos[i] = i;
    prefill = 0;
    for (int rep = 0; rep < 2; rep++)
      {
        double rate;
        t0 = flint_now_ns ();
        if (flint__model_forward (r.m, r.kv, &b, r.logits, &err) < 0)
          die (&err);
        rate = n_prompt / ((double) (flint_now_ns () - t0) / 1e9);
        prefill = rate > prefill ? rate : prefill;
      }
    free (tok), free (pos), free (slot);
  }
  /* Best of three rounds: the machine may be shared (the memcpy baseline is a best too). A round
   * runs each measurement once, so that they see the same conditions. */
  {
    flint_engine_options_t eo = { .model_dir = dir, .threads = threads, .max_seqs = 1,
                                  .context = n_prompt + n_decode + 8 };
    flint_engine_t *e;
    uint32_t len = n_decode / 3 ? n_decode / 3 : 1;
    char payload[256];

    snprintf (payload, sizeof payload, "{\"prompt\": \"flint\", \"max_tokens\": %u, \"temperature\": 0, "
                                       "\"ignore_eos\": true}", len + 1);
    if (flint_engine_open (&eo, &e, &err) < 0)
      die (&err);
    dec1 = decb = e2e = 0;
    for (uint32_t seg = 0; seg < 3; seg++)
      {
        double a = decode (&r, 1, n_prompt + seg * len, len), rate;
        double b = decode (&r, batch, n_prompt + seg * (len / 2 ? len / 2 : 1), len / 2 ? len / 2 : 1);
        flint_engine_req_t *q;
        flint_engine_token_t tk;
        uint64_t first = 0;
        uint32_t got = 0;

        dec1 = a > dec1 ? a : dec1;
        decb = b > decb ? b : decb;
        /* end to end through the scheduler: the JSON request path an invoke takes */
        if (flint_engine_request_new (e, payload, strlen (payload), &q, &err) < 0 || flint_engine_submit (e, q, &err) < 0)
          die (&err);
        while (flint_engine_next (q, -1, &tk) == 1)
          if (got++ == 0)
            first = flint_now_ns ();
        rate = (got - 1) / ((double) (flint_now_ns () - first) / 1e9);
        e2e = rate > e2e ? rate : e2e;
        flint_engine_request_free (q);
      }
    flint_engine_free (e);
  }

  printf ("Model: %s, %u layers, hidden %u, %u heads (%u KV), vocab %u; weights read per decode step %.2f GB (%s); "
          "CPU backend, %s.  \n",
          r.m->cfg.arch_name, r.m->cfg.layers, r.m->cfg.hidden, r.m->cfg.heads, r.m->cfg.kv_heads, r.m->cfg.vocab,
          r.m->weight_bytes / 1e9, flint_dtype_name (r.m->layer[0].q.dtype), be->device);
  printf ("Baseline: memcpy of %zu MiB on %u threads, best of 5: %.2f GB/s copied, so the batch-1 decode roofline is "
          "%.2f tokens/s. A copy reads and writes each byte while decoding only reads the weights, so decoding can "
          "pass 100%%.\n\n", copy_mib, threads, copy / 1e9, roof);
  printf ("| measurement | tokens/s | vs roofline |\n|---|---:|---:|\n");
  printf ("| decode, batch 1 (best of 3 x %u tokens) | %.2f | %.0f%% |\n", n_decode / 3, dec1, 100 * dec1 / roof);
  printf ("| decode, batch 1, through the scheduler (JSON request; best of 3 x %u tokens) | %.2f | %.0f%% |\n",
          n_decode / 3, e2e,
          100 * e2e / roof);
  printf ("| decode, batch %u (aggregate) | %.2f | %.0f%% of %u x roofline |\n", batch, decb,
          100 * decb / (roof * batch), batch);
  printf ("| prefill, %u-token prompt | %.2f | - |\n", n_prompt, prefill);
  {
    /* the GPU rows belong to the CUDA backend (a device-to-device copy is its roofline) */
    flint_backend_t *gpu = NULL;
    flint_error_t gerr = FLINT_ERROR_INIT;
    if (access ("/dev/nvidiactl", F_OK) != 0)
      printf ("| GPU (CUDA backend), batch-1 decode | not run: no GPU on this machine | - |\n");
    else if (flint__backend_open ("cuda", &bo, &gpu, &gerr) < 0)
      printf ("| GPU (CUDA backend), batch-1 decode | not run: %s | - |\n", gerr.msg);
    else
      {
        printf ("| GPU (CUDA backend), batch-1 decode | see the `engine-gpu` section (tests/bench/engine/run-gpu) on %s "
                "| - |\n", gpu->device);
        gpu->ops->close (gpu);
      }
  }
  {
    double load[1] = { 0 };
    getloadavg (load, 1);
    printf ("\nGoal: batch-1 decode at least 50%% of the roofline: **%s** (%.0f%%). Load average at the end of the "
            "run: %.2f on %ld CPUs (other work on the machine shares its memory bandwidth).\n",
            dec1 >= 0.5 * roof ? "met" : "not met", 100 * dec1 / roof, load[0], sysconf (_SC_NPROCESSORS_ONLN));
  }
  fflush (stdout);

  free (r.logits);
  be->ops->kv_free (be, r.kv);
  flint__model_free (r.m);
  be->ops->close (be);
  return 0;
}
