/* The engine's lifetime, checkpoint hooks and metrics. See engine.h; the scheduler is in
 * sched.c, payloads and result records in request.c. */
#include "engine_internal.h"
#include "flint/cleanup.h"
#include "flint/json.h"
#include "flint/util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKENIZER_BYTES (64u << 20)
#define DEFAULT_CONTEXT_CAP 4096

/* ---- latency samples ----------------------------------------------------------------------- */

void
flint__samples_add (flint_samples_t *s, double v)
{
  s->v[s->next] = v;
  s->next = (s->next + 1) % FLINT_STATS_SAMPLES;
  if (s->n < FLINT_STATS_SAMPLES)
    s->n++;
}

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

double
flint__samples_quantile (const flint_samples_t *s, double q)
{
  double tmp[FLINT_STATS_SAMPLES];
  size_t i;
  if (s->n == 0)
    return 0;
  memcpy (tmp, s->v, s->n * sizeof *tmp);
  qsort (tmp, s->n, sizeof *tmp, cmp_double);
  i = (size_t) ceil (q * (double) s->n);
  return tmp[i ? i - 1 : 0];
}

/* ---- open ---------------------------------------------------------------------------------- */

typedef struct map_ctx_s {
  const flint_engine_options_t *o;
  bool draft;
} map_ctx_t;

static int
map_cb (void *data, const char *dir, const char *file, const void **addr, size_t *len, flint_error_t *err)
{
  map_ctx_t *m = data;
  return m->o->map (m->o->map_data, m->draft, dir, file, addr, len, err);
}

static void
add_stop_id (flint_engine_t *e, int32_t id)
{
  if (id < 0 || (uint32_t) id >= e->vocab || e->n_stop_ids == FLINT_MAX_STOP_IDS)
    return;
  for (size_t i = 0; i < e->n_stop_ids; i++)
    if (e->stop_ids[i] == id)
      return;
  e->stop_ids[e->n_stop_ids++] = id;
}

/* generation_config.json may name more end-of-sequence ids than config.json (chat models). */
static void
read_generation_config (flint_engine_t *e, const char *dir)
{
  char path[4096];
  _cleanup_free_ char *text = NULL;
  size_t len;
  flint_json_doc_t *doc = NULL;
  const flint_json_t *v;
  char jerr[100];

  snprintf (path, sizeof path, "%s/generation_config.json", dir);
  if (flint_read_file (path, 1u << 20, &text, &len) < 0 || flint_json_parse (text, len, &doc, jerr, sizeof jerr) < 0)
    return; /* optional */
  v = flint_json_get (flint_json_root (doc), "eos_token_id");
  if (v && v->type == FLINT_JSON_NUMBER && v->is_int)
    add_stop_id (e, (int32_t) v->i64);
  else if (v && v->type == FLINT_JSON_ARRAY)
    for (size_t i = 0; i < v->len; i++)
      if (v->items[i]->type == FLINT_JSON_NUMBER && v->items[i]->is_int)
        add_stop_id (e, (int32_t) v->items[i]->i64);
  flint_json_doc_free (doc);
}

int
flint_engine_open (const flint_engine_options_t *o, flint_engine_t **out, flint_error_t *err)
{
  flint_engine_t *e;
  flint_backend_options_t bo = { .threads = o->threads, .kernels = o->cpu_kernels };
  flint_model_options_t mo = { 0 };
  map_ctx_t mc = { o, false }, dmc = { o, true };
  _cleanup_free_ char *tok_text = NULL;
  size_t tok_len;
  char path[4096];
  uint32_t max_rows;
  int r;

  e = calloc (1, sizeof *e);
  if (e == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  e->opt = *o;
  pthread_mutex_init (&e->lock, NULL);
  pthread_mutex_init (&e->stats_lock, NULL);
  pthread_cond_init (&e->work, NULL);
  e->max_seqs = o->max_seqs ? o->max_seqs : 8;
  e->spec_k = o->draft_dir ? (o->spec_tokens ? o->spec_tokens : 4) : 0;
  if (e->spec_k > 15)
    e->spec_k = 15;
  e->prefill_chunk = o->prefill_chunk ? o->prefill_chunk : 256;
  if (e->max_seqs > 1024)
    {
      flint_error_set (err, FLINT_EPRECONDITION,
                       "%u concurrent requests (max_concurrency) is more than the engine decodes together (1024)",
                       e->max_seqs);
      goto fail;
    }

  if (flint__backend_open (o->backend, &bo, &e->be, err) < 0)
    goto fail;

  max_rows = e->max_seqs * (e->spec_k + 1);
  mo.be = e->be;
  mo.map = o->map ? map_cb : NULL;
  mo.map_data = &mc;
  mo.context = o->context;
  mo.max_tokens = e->prefill_chunk + max_rows;
  mo.max_out = max_rows;
  if (flint__model_open (o->model_dir, &mo, &e->model, err) < 0)
    {
      flint_error_prefix (err, "model `%s`", o->model_dir);
      goto fail;
    }
  e->context = e->model->context;
  e->vocab = e->model->cfg.vocab;
  if (o->draft_dir)
    {
      mo.map_data = &dmc;
      mo.context = e->context;
      mo.max_tokens = e->prefill_chunk + e->max_seqs * (e->spec_k + 2);
      mo.max_out = e->max_seqs;
      if (flint__model_open (o->draft_dir, &mo, &e->draft, err) < 0)
        {
          flint_error_prefix (err, "draft model `%s`", o->draft_dir);
          goto fail;
        }
      if (e->draft->cfg.vocab != e->vocab)
        {
          flint_error_set (err, FLINT_EPRECONDITION,
                           "draft model `%s`: `config.json`: field `vocab_size`: %u, but the model's is %u (a draft "
                           "must share the model's tokenizer)", o->draft_dir, e->draft->cfg.vocab, e->vocab);
          goto fail;
        }
    }

  snprintf (path, sizeof path, "%s/tokenizer.json", o->model_dir);
  r = flint_read_file (path, MAX_TOKENIZER_BYTES, &tok_text, &tok_len);
  if (r < 0)
    {
      flint_error_set_errno (err, FLINT_EPRECONDITION, r, "model `%s`: read `tokenizer.json`", o->model_dir);
      goto fail;
    }
  if (flint_tokenizer_load ("tokenizer.json", tok_text, tok_len, &e->tok, err) < 0)
    {
      flint_error_prefix (err, "model `%s`", o->model_dir);
      goto fail;
    }
  if (flint_tokenizer_size (e->tok) > e->vocab)
    {
      flint_error_set (err, FLINT_EPRECONDITION,
                       "model `%s`: `tokenizer.json` has token ids up to %u but `config.json` field `vocab_size` is %u",
                       o->model_dir, flint_tokenizer_size (e->tok) - 1, e->vocab);
      goto fail;
    }
  if (flint__chat_choose (o->chat_template, e->tok, e->model->cfg.arch == FLINT_ARCH_MISTRAL, &e->chat, err) < 0)
    goto fail;
  for (size_t i = 0; i < e->model->cfg.n_eos; i++)
    add_stop_id (e, e->model->cfg.eos_ids[i]);
  read_generation_config (e, o->model_dir);
  add_stop_id (e, flint__chat_end_token (e->chat, e->tok));

  {
    flint_kv_geom_t g = flint__model_kv_geom (e->model, e->max_seqs, e->context);
    if (e->be->ops->kv_new (e->be, &g, &e->kv, err) < 0)
      goto fail;
    if (e->draft)
      {
        g = flint__model_kv_geom (e->draft, e->max_seqs, e->context);
        if (e->be->ops->kv_new (e->be, &g, &e->draft_kv, err) < 0)
          goto fail;
      }
  }
  e->logits = malloc ((size_t) max_rows * e->vocab * sizeof (float));
  e->d_logits = malloc ((size_t) e->max_seqs * e->vocab * sizeof (float));
  e->probs = malloc ((size_t) e->vocab * sizeof (float));
  e->active = calloc (e->max_seqs, sizeof *e->active);
  e->slot_used = calloc (e->max_seqs, 1);
  e->b_tok = malloc ((size_t) (e->draft ? e->draft->max_tokens : e->model->max_tokens) * sizeof *e->b_tok);
  e->b_pos = malloc ((size_t) (e->draft ? e->draft->max_tokens : e->model->max_tokens) * sizeof *e->b_pos);
  e->b_slot = malloc ((size_t) (e->draft ? e->draft->max_tokens : e->model->max_tokens) * sizeof *e->b_slot);
  e->b_out = malloc ((size_t) max_rows * sizeof *e->b_out);
  if (!e->logits || !e->d_logits || !e->probs || !e->active || !e->slot_used || !e->b_tok || !e->b_pos || !e->b_slot
      || !e->b_out || flint__sampler_init (&e->sampler, e->vocab) < 0)
    {
      flint_error_set (err, FLINT_EEXHAUSTED, "out of memory for the engine's buffers");
      goto fail;
    }
  e->window_start_ns = flint_now_ns ();
  r = pthread_create (&e->thread, NULL, flint__sched_main, e);
  if (r != 0)
    {
      flint_error_set_errno (err, FLINT_EINTERNAL, r, "start the scheduler thread");
      goto fail;
    }
  e->thread_started = true;
  *out = e;
  return 0;

fail:
  flint_engine_free (e);
  return -1;
}

void
flint_engine_free (flint_engine_t *e)
{
  if (e == NULL)
    return;
  if (e->thread_started)
    {
      pthread_mutex_lock (&e->lock);
      e->stopping = true;
      pthread_cond_broadcast (&e->work);
      pthread_mutex_unlock (&e->lock);
      pthread_join (e->thread, NULL);
    }
  if (e->be)
    {
      if (e->kv)
        e->be->ops->kv_free (e->be, e->kv);
      if (e->draft_kv)
        e->be->ops->kv_free (e->be, e->draft_kv);
    }
  flint__model_free (e->draft);
  flint__model_free (e->model);
  if (e->be)
    e->be->ops->close (e->be);
  flint_tokenizer_free (e->tok);
  flint__sampler_free (&e->sampler);
  free (e->logits);
  free (e->d_logits);
  free (e->probs);
  free (e->active);
  free (e->slot_used);
  free (e->b_tok);
  free (e->b_pos);
  free (e->b_slot);
  free (e->b_out);
  pthread_mutex_destroy (&e->lock);
  pthread_mutex_destroy (&e->stats_lock);
  pthread_cond_destroy (&e->work);
  free (e);
}

const char *
flint_engine_device (const flint_engine_t *e)
{
  return e->be->device;
}

const char *
flint_engine_backend_fallback (const flint_engine_t *e)
{
  return e->be->fallback[0] ? e->be->fallback : NULL;
}

/* ---- checkpoint hooks ---------------------------------------------------------------------- */

int
flint_engine_before_checkpoint (flint_engine_t *e, flint_error_t *err)
{
  flint_backend_t *be = e->be;
  uint64_t t0;
  int r = 0;

  pthread_mutex_lock (&e->lock);
  if (e->checkpointed)
    goto out;
  if (e->n_active || e->pending_head)
    {
      r = flint_error_set (err, FLINT_EUNAVAILABLE, "%u requests in flight: checkpoint an idle engine",
                           e->n_active + e->n_pending);
      goto out;
    }
  /* the scheduler is idle (no active request) and stays so while `checkpointed` is set */
  t0 = flint_now_ns ();
  e->checkpointed = true;
  memset (&e->restore_stats, 0, sizeof e->restore_stats);
  if (e->opt.checkpoint_keeps_weights)
    goto out;
  be->ops->kv_free (be, e->kv);
  e->kv = NULL;
  if (e->draft_kv)
    be->ops->kv_free (be, e->draft_kv);
  e->draft_kv = NULL;
  if (be->ops->weights_release (be, e->model->wset, err) < 0
      || (e->draft && be->ops->weights_release (be, e->draft->wset, err) < 0))
    r = -1;
  e->restore_stats.release_ms = (double) (flint_now_ns () - t0) / 1e6;
out:
  pthread_mutex_unlock (&e->lock);
  return r;
}

int
flint_engine_after_restore (flint_engine_t *e, flint_error_t *err)
{
  flint_backend_t *be = e->be;
  flint_engine_restore_stats_t *st;
  flint_kv_geom_t g;
  uint64_t t0, t1;
  int r = -1;

  pthread_mutex_lock (&e->lock);
  if (!e->checkpointed)
    {
      r = 0;
      goto out;
    }
  if (e->opt.checkpoint_keeps_weights)
    {
      /* nothing was set aside: the device state came back whole with the process */
      e->checkpointed = false;
      pthread_cond_broadcast (&e->work);
      r = 0;
      goto out;
    }
  st = &e->restore_stats;
  t0 = flint_now_ns ();
  st->weight_bytes = 0;
  st->weight_map_ms = st->weight_pin_ms = st->weight_copy_ms = 0;
  for (int i = 0; i < 2; i++)
    {
      flint_model_t *m = i == 0 ? e->model : e->draft;
      if (m == NULL)
        continue;
      memset (&be->upload, 0, sizeof be->upload);
      if (be->ops->weights_restore (be, m->wset, err) < 0)
        goto out;
      st->weight_bytes += be->upload.bytes;
      st->weight_map_ms += be->upload.map_ms;
      st->weight_pin_ms += be->upload.pin_ms;
      st->weight_copy_ms += be->upload.copy_ms;
      if (be->upload.mode)
        st->copy_mode = be->upload.mode;
    }
  t1 = flint_now_ns ();
  st->weights_ms = (double) (t1 - t0) / 1e6;
  /* a retry after a failure here keeps what was already re-created */
  g = flint__model_kv_geom (e->model, e->max_seqs, e->context);
  if (e->kv == NULL && be->ops->kv_new (be, &g, &e->kv, err) < 0)
    goto out;
  if (e->draft && e->draft_kv == NULL)
    {
      g = flint__model_kv_geom (e->draft, e->max_seqs, e->context);
      if (be->ops->kv_new (be, &g, &e->draft_kv, err) < 0)
        goto out;
    }
  st->kv_ms = (double) (flint_now_ns () - t1) / 1e6;
  e->checkpointed = false;
  pthread_cond_broadcast (&e->work);
  r = 0;
out:
  pthread_mutex_unlock (&e->lock);
  return r;
}

void
flint_engine_restore_stats (flint_engine_t *e, flint_engine_restore_stats_t *out)
{
  pthread_mutex_lock (&e->lock);
  *out = e->restore_stats;
  pthread_mutex_unlock (&e->lock);
}

/* ---- metrics ------------------------------------------------------------------------------- */

size_t
flint_engine_stats (flint_engine_t *e, const char **names, double *values, size_t max)
{
  size_t n = 0;
  uint64_t now = flint_now_ns ();
  double window_s, tps;
  uint32_t running, waiting;

  pthread_mutex_lock (&e->lock);
  running = e->n_active;
  waiting = e->n_pending;
  pthread_mutex_unlock (&e->lock);
  pthread_mutex_lock (&e->stats_lock);
  /* tokens/s over the current window plus the previous one (10 s windows) */
  window_s = (double) (now - e->window_start_ns) / 1e9;
  if (window_s >= 10.0)
    {
      e->prev_window_tokens = e->window_tokens;
      e->prev_window_s = window_s;
      e->window_tokens = 0;
      e->window_start_ns = now;
      window_s = 0;
    }
  tps = window_s + e->prev_window_s > 0.5
            ? (double) (e->window_tokens + e->prev_window_tokens) / (window_s + e->prev_window_s)
            : 0;
#define PUT(k, v)                                                                                      \
  do                                                                                                   \
    {                                                                                                  \
      if (n < max)                                                                                     \
        {                                                                                              \
          names[n] = k;                                                                                \
          values[n] = (v);                                                                             \
          n++;                                                                                         \
        }                                                                                              \
    }                                                                                                  \
  while (0)
  PUT ("ttft_p50_ms", flint__samples_quantile (&e->ttft_ms, 0.5));
  PUT ("ttft_p99_ms", flint__samples_quantile (&e->ttft_ms, 0.99));
  PUT ("itl_p50_ms", flint__samples_quantile (&e->itl_ms, 0.5));
  PUT ("itl_p99_ms", flint__samples_quantile (&e->itl_ms, 0.99));
  PUT ("tokens_per_s", tps);
  PUT ("kv_used", (double) e->kv_tokens / ((double) e->max_seqs * e->context));
  PUT ("kv_capacity_tokens", (double) e->max_seqs * e->context);
  PUT ("requests_running", running);
  PUT ("requests_waiting", waiting);
  PUT ("requests_total", (double) e->requests_total);
  PUT ("tokens_total", (double) e->tokens_total);
  if (e->draft)
    PUT ("spec_acceptance_length", e->spec_steps ? (double) e->spec_tokens / (double) e->spec_steps : 0);
#undef PUT
  pthread_mutex_unlock (&e->stats_lock);
  return n;
}
