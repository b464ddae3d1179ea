/* engine-tool: drives libflint-engine directly, for the engine tests (test_engine.py compares
 * what it prints with tests/engine/reference.py) and for poking at models by hand.
 *
 *   engine-tool logits MODEL ID...                    logits of every position, JSON rows
 *   engine-tool encode MODEL TEXT                     token ids (BOS included), JSON
 *   engine-tool decode MODEL ID...                    the text, JSON string
 *   engine-tool open MODEL                            opens the engine; prints the error if any
 *   engine-tool generate MODEL PAYLOAD...             submits every payload at once (continuous
 *                                                     batching) and prints each result, one JSON
 *                                                     line per payload, in order
 *   engine-tool stream MODEL PAYLOAD                  token events then the final record
 *   engine-tool checkpoint MODEL PAYLOAD              result, checkpoint hooks, result again
 *   engine-tool cancel MODEL N PAYLOAD                cancels after N tokens (0: right after
 *                                                     submit), prints the record, then runs the
 *                                                     payload again to completion
 * Options (before MODEL): --backend cpu|cuda|auto, --draft DIR, --kernels generic|avx2|avx512, --threads N,
 * --max-seqs N, --context N, --spec N, --chunk N, --sequential (generate one at a time),
 * --stats (print the engine's metrics after generate). */
#include "engine.h"
#include "engine_internal.h"
#include "model.h"
#include "flint/buf.h"
#include "flint/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static flint_engine_options_t opt;
static bool sequential, stats;

static void
usage (void)
{
  fprintf (stderr, "usage: engine-tool [options] logits|encode|decode|open|generate|stream|checkpoint MODEL ...\n");
  exit (2);
}

static flint_engine_t *
open_engine (const char *model)
{
  flint_engine_t *e;
  flint_error_t err = FLINT_ERROR_INIT;
  opt.model_dir = model;
  if (flint_engine_open (&opt, &e, &err) < 0)
    {
      printf ("%s\n", err.msg);
      exit (1);
    }
  return e;
}

static int
cmd_logits (const char *model, int argc, char **argv)
{
  flint_backend_options_t bo = { .threads = opt.threads, .kernels = opt.cpu_kernels };
  flint_backend_t *be;
  flint_model_t *m;
  flint_model_options_t mo = { 0 };
  flint_bkv_t *kv;
  flint_error_t err = FLINT_ERROR_INIT;
  uint32_t n = (uint32_t) argc;
  int32_t *tok = calloc (n, sizeof *tok);
  uint32_t *pos = calloc (n, sizeof *pos), *slot = calloc (n, sizeof *slot), *out = calloc (n, sizeof *out);
  float *logits;
  flint_batch_t b;
  flint_kv_geom_t g;

  if (flint__backend_open (opt.backend ? opt.backend : "cpu", &bo, &be, &err) < 0)
    goto fail;
  mo.be = be;
  mo.context = opt.context;
  mo.max_tokens = n;
  mo.max_out = n;
  if (flint__model_open (model, &mo, &m, &err) < 0)
    goto fail;
  g = flint__model_kv_geom (m, 1, m->context);
  if (be->ops->kv_new (be, &g, &kv, &err) < 0)
    goto fail;
  for (uint32_t i = 0; i < n; i++)
    {
      tok[i] = atoi (argv[i]);
      pos[i] = i;
      out[i] = i;
    }
  logits = malloc ((size_t) n * m->cfg.vocab * sizeof *logits);
  /* half the prompt in one pass, the rest one token at a time: both paths of the cache */
  {
    uint32_t first = n / 2 ? n / 2 : 1;
    b = (flint_batch_t) { first, tok, pos, slot, first, out };
    if (flint__model_forward (m, kv, &b, logits, &err) < 0)
      goto fail;
    for (uint32_t i = first; i < n; i++)
      {
        uint32_t zero = 0;
        b = (flint_batch_t) { 1, tok + i, pos + i, slot, 1, &zero };
        if (flint__model_forward (m, kv, &b, logits + (size_t) i * m->cfg.vocab, &err) < 0)
          goto fail;
      }
  }
  printf ("[");
  for (uint32_t i = 0; i < n; i++)
    {
      printf ("%s[", i ? "," : "");
      for (uint32_t j = 0; j < m->cfg.vocab; j++)
        printf ("%s%.9g", j ? "," : "", logits[(size_t) i * m->cfg.vocab + j]);
      printf ("]");
    }
  printf ("]\n");
  be->ops->kv_free (be, kv);
  flint__model_free (m);
  be->ops->close (be);
  free (logits), free (tok), free (pos), free (slot), free (out);
  return 0;
fail:
  printf ("%s\n", err.msg);
  return 1;
}

static int
cmd_encode (const char *model, const char *text)
{
  flint_engine_t *e = open_engine (model);
  flint_tokens_t t = { 0 };
  flint_tokenizer_encode (e->tok, text, strlen (text), true, &t);
  printf ("[");
  for (size_t i = 0; i < t.n; i++)
    printf ("%s%d", i ? ", " : "", t.ids[i]);
  printf ("]\n");
  flint_tokens_free (&t);
  flint_engine_free (e);
  return 0;
}

static int
cmd_decode (const char *model, int argc, char **argv)
{
  flint_engine_t *e = open_engine (model);
  flint_buf_t b = FLINT_BUF_INIT, j = FLINT_BUF_INIT;
  for (int i = 0; i < argc; i++)
    flint_tokenizer_decode (e->tok, atoi (argv[i]), true, &b);
  flint_buf_json_string (&j, b.data ? b.data : "", b.len);
  printf ("%s\n", j.data);
  flint_buf_free (&b);
  flint_buf_free (&j);
  flint_engine_free (e);
  return 0;
}

static void
print_result (flint_engine_req_t *r, bool streaming)
{
  flint_buf_t out = FLINT_BUF_INIT;
  if (strcmp (flint_engine_request_finish_reason (r), "error") == 0)
    printf ("{\"error\": \"%s\"}\n", flint_engine_request_error (r));
  else
    {
      flint_engine_result_json (r, streaming, &out);
      printf ("%s\n", out.data);
    }
  flint_buf_free (&out);
}

static int
run_payloads (flint_engine_t *e, int argc, char **argv, bool stream)
{
  flint_engine_req_t **r = calloc ((size_t) argc, sizeof *r);
  flint_error_t err = FLINT_ERROR_INIT;
  flint_engine_token_t tok;
  int rc = 0;

  for (int i = 0; i < argc; i++)
    {
      if (flint_engine_request_new (e, argv[i], strlen (argv[i]), &r[i], &err) < 0)
        {
          printf ("{\"error\": \"%s\", \"code\": %d}\n", err.msg, (int) err.code);
          rc = 1;
          continue;
        }
      if (flint_engine_submit (e, r[i], &err) < 0)
        {
          printf ("submit: %s\n", err.msg);
          return 1;
        }
      if (sequential || stream)
        {
          while (flint_engine_next (r[i], -1, &tok) == 1)
            if (stream)
              {
                flint_buf_t j = FLINT_BUF_INIT;
                flint_buf_json_string (&j, tok.text, tok.len);
                printf ("{\"token\":%s,\"id\":%d}\n", j.data, tok.id);
                flint_buf_free (&j);
              }
        }
    }
  for (int i = 0; i < argc; i++)
    {
      if (r[i] == NULL)
        continue;
      while (flint_engine_next (r[i], -1, &tok) == 1)
        ;
      print_result (r[i], stream);
      flint_engine_request_free (r[i]);
    }
  free (r);
  return rc;
}

static void
print_stats (flint_engine_t *e)
{
  const char *names[32];
  double values[32];
  size_t n = flint_engine_stats (e, names, values, 32);
  printf ("{");
  for (size_t i = 0; i < n; i++)
    printf ("%s\"%s\": %.6g", i ? ", " : "", names[i], values[i]);
  printf ("}\n");
}

int
main (int argc, char **argv)
{
  int i = 1;
  const char *cmd, *model;
  flint_engine_t *e;
  int rc;

  for (; i < argc && strncmp (argv[i], "--", 2) == 0; i++)
    {
      const char *o = argv[i];
      if (strcmp (o, "--sequential") == 0)
        sequential = true;
      else if (strcmp (o, "--stats") == 0)
        stats = true;
      else if (i + 1 >= argc)
        usage ();
      else if (strcmp (o, "--backend") == 0)
        opt.backend = argv[++i];
      else if (strcmp (o, "--draft") == 0)
        opt.draft_dir = argv[++i];
      else if (strcmp (o, "--kernels") == 0)
        opt.cpu_kernels = argv[++i];
      else if (strcmp (o, "--threads") == 0)
        opt.threads = (uint32_t) atoi (argv[++i]);
      else if (strcmp (o, "--max-seqs") == 0)
        opt.max_seqs = (uint32_t) atoi (argv[++i]);
      else if (strcmp (o, "--context") == 0)
        opt.context = (uint32_t) atoi (argv[++i]);
      else if (strcmp (o, "--spec") == 0)
        opt.spec_tokens = (uint32_t) atoi (argv[++i]);
      else if (strcmp (o, "--chunk") == 0)
        opt.prefill_chunk = (uint32_t) atoi (argv[++i]);
      else if (strcmp (o, "--chat-template") == 0)
        opt.chat_template = argv[++i];
      else
        usage ();
    }
  if (argc - i < 2)
    usage ();
  cmd = argv[i++];
  model = argv[i++];
  if (strcmp (cmd, "logits") == 0)
    return cmd_logits (model, argc - i, argv + i);
  if (strcmp (cmd, "encode") == 0 && argc - i == 1)
    return cmd_encode (model, argv[i]);
  if (strcmp (cmd, "decode") == 0)
    return cmd_decode (model, argc - i, argv + i);
  e = open_engine (model);
  if (strcmp (cmd, "open") == 0)
    {
      const char *why = flint_engine_backend_fallback (e);
      printf ("ok: %s\n", flint_engine_device (e));
      if (why)
        printf ("fallback: %s\n", why);
      rc = 0;
    }
  else if (strcmp (cmd, "generate") == 0)
    {
      rc = run_payloads (e, argc - i, argv + i, false);
      if (stats)
        print_stats (e);
    }
  else if (strcmp (cmd, "stream") == 0)
    rc = run_payloads (e, argc - i, argv + i, true);
  else if (strcmp (cmd, "checkpoint") == 0 && argc - i == 1)
    {
      flint_error_t err = FLINT_ERROR_INIT;
      rc = run_payloads (e, 1, argv + i, false);
      if (flint_engine_before_checkpoint (e, &err) < 0 || flint_engine_before_checkpoint (e, &err) < 0)
        printf ("before_checkpoint: %s\n", err.msg), rc = 1;
      if (flint_engine_after_restore (e, &err) < 0)
        printf ("after_restore: %s\n", err.msg), rc = 1;
      rc |= run_payloads (e, 1, argv + i, false);
    }
  else if (strcmp (cmd, "cancel") == 0 && argc - i == 2)
    {
      flint_error_t err = FLINT_ERROR_INIT;
      flint_engine_req_t *r;
      flint_engine_token_t tok;
      int after = atoi (argv[i]), seen = 0;
      if (flint_engine_request_new (e, argv[i + 1], strlen (argv[i + 1]), &r, &err) < 0
          || flint_engine_submit (e, r, &err) < 0)
        {
          printf ("%s\n", err.msg);
          return 1;
        }
      if (after == 0)
        flint_engine_cancel (r);
      while (flint_engine_next (r, -1, &tok) == 1)
        if (++seen == after)
          flint_engine_cancel (r);
      print_result (r, false);
      flint_engine_request_free (r);
      rc = run_payloads (e, 1, argv + i + 1, false);
    }
  else
    usage ();
  flint_engine_free (e);
  return rc;
}
