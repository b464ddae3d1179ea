/* Loader for `kind: llm`: the built-in model engine (worker/engine) as a flint function.
 *
 * init opens the engine on the model directory in the bundle; the safetensors files are not
 * read from the bundle but mapped from the node weight store (flint_weights_map: MAP_SHARED,
 * read-only), where the deploy put them under their file names ("draft-" + name for the draft
 * model). An error there (a bad header, a shape that does not match config.json, a tokenizer
 * without merges) fails init, so the deploy fails with the file and the field named.
 *
 * Each invoke is one generation request: its executor thread parses the payload, hands it to
 * the engine's scheduler (which batches it with the others in flight) and relays the tokens:
 * one JSON line per token for InvokeStream, one JSON object at the end for Invoke. The thread
 * polls for cancellation while it waits. docs/MODELS.md documents the payload and the records.
 *
 * Knobs come from the manifest's `config:` map: context, chat_template, spec_tokens,
 * prefill_chunk, threads, backend, snapshot_weights ("aside", the default: the checkpoint hooks
 * release the weights' device memory and drop the KV caches, and restore copies the weights back
 * from the weight store; "inside": they stay on the device and the checkpoint carries them).
 *
 * Checkpoints: before_checkpoint and after_restore are the engine's hooks; after a restore the
 * RestoredAck carries their cost (restore_phases: weight copy, KV re-allocation). */
#include "worker.h"
#include "engine.h"
#include "flint/buf.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLL_MS 50

static flint_engine_t *
engine_of (flint_ctx_t *ctx)
{
  return flint_user (ctx);
}

static int
map_weight (void *data, bool draft, const char *dir, const char *file, const void **addr, size_t *len,
            flint_error_t *err)
{
  flint_ctx_t *ctx = data;
  char name[512];

  snprintf (name, sizeof name, "%s%s", draft ? "draft-" : "", file);
  flint__ctx_clear_error (ctx);
  if (flint_weights_map (ctx, name, addr, len) < 0)
    return flint_error_set (err, FLINT_EPRECONDITION, "`%s/%s`: not in the node weight store (%s)", dir, file,
                            flint__ctx_error (ctx));
  if (*len == 0)
    return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: empty file", file);
  return 0;
}

/* A positive integer from the manifest's config map (absent: 0). */
static int
config_uint (flint_ctx_t *ctx, const char *key, uint32_t max, uint32_t *out)
{
  const char *v = flint_config (ctx, key);
  char *end;
  unsigned long n;

  *out = 0;
  if (v == NULL)
    return 0;
  errno = 0;
  n = strtoul (v, &end, 10);
  if (errno || end == v || *end || n == 0 || n > max || v[0] == '-')
    return flint_set_error (ctx, "config `%s`: expected an integer from 1 to %u, got `%.40s`", key, max, v);
  *out = (uint32_t) n;
  return 0;
}

static int
llm_init (flint_ctx_t *ctx)
{
  flint_engine_options_t o = { 0 };
  flint_error_t err = FLINT_ERROR_INIT;
  flint_engine_t *e;
  const char *model = flint__ctx_path (ctx);
  uint32_t cpu = flint__ctx_cpu_millis (ctx);

  o.model_dir = model;
  o.draft_dir = flint__ctx_draft_path (ctx);
  o.map = map_weight;
  o.map_data = ctx;
  o.max_seqs = flint__ctx_max_concurrency (ctx);
  o.chat_template = flint_config (ctx, "chat_template");
  o.backend = flint_config (ctx, "backend");
  {
    const char *sw = flint_config (ctx, "snapshot_weights");
    if (sw && strcmp (sw, "inside") != 0 && strcmp (sw, "aside") != 0)
      return flint_set_error (ctx, "config `snapshot_weights`: expected `aside` or `inside`, got `%.40s`", sw);
    o.checkpoint_keeps_weights = sw && strcmp (sw, "inside") == 0;
  }
  if (config_uint (ctx, "context", 1u << 24, &o.context) < 0 || config_uint (ctx, "threads", 256, &o.threads) < 0
      || config_uint (ctx, "spec_tokens", 15, &o.spec_tokens) < 0
      || config_uint (ctx, "prefill_chunk", 8192, &o.prefill_chunk) < 0)
    return -1;
  if (o.threads == 0 && cpu)
    {
      /* a CPU quota below the core count: threads beyond it would only be throttled */
      cpu_set_t set;
      uint32_t cores = sched_getaffinity (0, sizeof set, &set) == 0 ? (uint32_t) CPU_COUNT (&set) : 1;
      o.threads = (cpu + 999) / 1000;
      if (o.threads > cores)
        o.threads = cores;
    }
  if (flint_engine_open (&o, &e, &err) < 0)
    return flint_set_error (ctx, "%s", err.msg);
  flint_set_user (ctx, e);
  flint_log_line (ctx, "flint-worker: model `%s`%s%s loaded on %s", model, o.draft_dir ? " with draft " : "",
                  o.draft_dir ? o.draft_dir : "", flint_engine_device (e));
  if (flint_engine_backend_fallback (e))
    flint_log_line (ctx, "flint-worker: model `%s` runs on the CPU: no GPU answered (%s)", model,
                    flint_engine_backend_fallback (e));
  return 0;
}

static int
fail_code (flint_status_t code)
{
  switch (code)
    {
    case FLINT_EINVAL: return FLINT_FN_INVALID_ARGUMENT;
    case FLINT_EUNAVAILABLE: return FLINT_FN_UNAVAILABLE;
    case FLINT_EEXHAUSTED: return FLINT_FN_RESOURCE_EXHAUSTED;
    default: return FLINT_FN_INTERNAL;
    }
}

static int
llm_invoke (flint_ctx_t *ctx, const flint_input_t *in, flint_output_t *out)
{
  flint_engine_t *e = engine_of (ctx);
  flint_engine_req_t *r = NULL;
  flint_error_t err = FLINT_ERROR_INIT;
  flint_engine_token_t tok;
  flint_buf_t line = FLINT_BUF_INIT;
  bool cancelled = false;
  int rc;

  if (flint_engine_request_new (e, in->data, in->len, &r, &err) < 0)
    return flint_fail (out, fail_code (err.code), "%s", err.msg);
  if (flint_engine_submit (e, r, &err) < 0)
    {
      flint_engine_request_free (r);
      return flint_fail (out, fail_code (err.code), "%s", err.msg);
    }
  for (;;)
    {
      rc = flint_engine_next (r, POLL_MS, &tok);
      if (rc == 0)
        break;
      if (!cancelled && flint_output_cancelled (out))
        {
          flint_engine_cancel (r);
          cancelled = true;
        }
      if (rc < 0 || !in->streaming || cancelled)
        continue;
      flint_buf_reset (&line);
      flint_buf_puts (&line, "{\"token\":");
      flint_buf_json_string (&line, tok.text, tok.len);
      flint_buf_printf (&line, ",\"id\":%d}\n", tok.id);
      if (flint_output_write (out, line.data, line.len) < 0)
        {
          flint_engine_cancel (r);
          cancelled = true;
        }
    }
  flint_buf_reset (&line);
  if (strcmp (flint_engine_request_finish_reason (r), "error") == 0)
    rc = flint_fail (out, FLINT_FN_INTERNAL, "model engine: %s", flint_engine_request_error (r));
  else if (strcmp (flint_engine_request_finish_reason (r), "cancelled") == 0)
    rc = flint_fail (out, 1 /* CANCELLED */, "generation stopped: the caller went away or the deadline passed");
  else
    {
      flint_engine_result_json (r, in->streaming, &line);
      flint_buf_putc (&line, '\n');
      rc = flint_output_write (out, line.data, line.len);
    }
  flint_buf_free (&line);
  flint_engine_request_free (r);
  return rc;
}

static int
llm_before_checkpoint (flint_ctx_t *ctx)
{
  flint_error_t err = FLINT_ERROR_INIT;
  if (flint_engine_before_checkpoint (engine_of (ctx), &err) < 0)
    return flint_set_error (ctx, "model engine: %s", err.msg);
  return 0;
}

static int
llm_after_restore (flint_ctx_t *ctx)
{
  flint_error_t err = FLINT_ERROR_INIT;
  if (flint_engine_after_restore (engine_of (ctx), &err) < 0)
    return flint_set_error (ctx, "model engine: %s", err.msg);
  return 0;
}

static size_t
llm_restore_phases (flint_ctx_t *ctx, const char **names, double *values, size_t max, uint64_t *bytes_out)
{
  flint_engine_restore_stats_t st;
  size_t n = 0;

  flint_engine_restore_stats (engine_of (ctx), &st);
  if (n < max)
    names[n] = "weight_copy", values[n++] = st.weights_ms;
  if (n < max)
    names[n] = "kv_alloc", values[n++] = st.kv_ms;
  *bytes_out = st.weight_bytes;
  return n;
}

static size_t
llm_stats (flint_ctx_t *ctx, const char **names, double *values, size_t max)
{
  flint_engine_t *e = engine_of (ctx);
  return e ? flint_engine_stats (e, names, values, max) : 0;
}

static void
llm_unload (flint_ctx_t *ctx)
{
  flint_engine_free (engine_of (ctx));
  flint_set_user (ctx, NULL);
}

int
flint__load_llm (flint_ctx_t *ctx, const char *path, flint_function_t *fn, flint_error_t *err)
{
  (void) ctx;
  (void) path;
  memset (fn, 0, sizeof *fn);
  fn->init = llm_init;
  fn->invoke = llm_invoke;
  fn->before_checkpoint = llm_before_checkpoint;
  fn->after_restore = llm_after_restore;
  fn->stats = llm_stats;
  fn->restore_phases = llm_restore_phases;
  fn->unload = llm_unload;
  (void) err;
  return 0;
}
