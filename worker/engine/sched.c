/* The scheduler thread: continuous batching and speculative decoding.
 *
 * Each step takes every active request one step further in a single forward pass of the model:
 * requests still reading their prompt contribute a chunk of it (the chunks share a budget of
 * `prefill_chunk` tokens per step, first come first served), decoding requests contribute
 * their last token. Requests join when a KV slot is free and leave when they finish, between
 * steps, so a long generation never holds up a short one.
 *
 * With a draft model, a decoding request first lets the draft propose k tokens (k small forward
 * passes of the draft, batched across requests), then the model verifies them in the same
 * single pass: the request's rows are its last token and the k proposals, and the logits of
 * all k+1 rows come back. Greedy requests accept proposals while they equal the model's argmax
 * and then take the model's token (so the output is exactly what the model alone would give);
 * sampling requests use the standard rejection rule (accept y with probability
 * min(1, p(y)/q(y)), else draw from max(0, p - q)), which leaves the output distribution that
 * of the model. KV caches need no rollback: entries past the accepted prefix are simply
 * overwritten later.
 *
 * Invariants for a decoding request with n tokens: the model's cache holds positions 0..n-2
 * (token n-1 is the next input); the draft's holds 0..d_cached-1, d_cached <= n-1. */
#include "engine_internal.h"
#include "unicode.h"
#include "flint/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- output: text, stop conditions, events -------------------------------------------------- */

static bool
is_stop_id (const flint_engine_t *e, int32_t t)
{
  for (size_t i = 0; i < e->n_stop_ids; i++)
    if (e->stop_ids[i] == t)
      return true;
  return false;
}

/* The longest suffix of text that is a proper prefix of a stop string: it may become one. */
static size_t
stop_holdback (const flint_engine_req_t *r)
{
  size_t hold = 0, len = r->text.len;
  for (size_t s = 0; s < r->n_stop; s++)
    {
      size_t max = r->stop_len[s] - 1 < len ? r->stop_len[s] - 1 : len;
      for (size_t l = max; l > hold; l--)
        if (memcmp (r->text.data + len - l, r->stop[s], l) == 0)
          {
            hold = l;
            break;
          }
    }
  return hold;
}

/* Appends token `t` to the request; decides whether it finishes the request; stages the event
 * with the text it releases. Returns true when the request is finished. */
static bool
commit (flint_engine_t *e, flint_engine_req_t *r, int32_t t, uint64_t now)
{
  size_t old = r->text.len, end;
  const char *reason = NULL;

  r->toks[r->n_toks++] = t;
  if (!r->ignore_eos && is_stop_id (e, t))
    reason = "stop";
  else
    {
      flint_tokenizer_decode (e->tok, t, true, &r->text);
      if (r->n_stop && r->text.len > old)
        {
          /* a match must end in the new bytes: search from where one could start */
          size_t from = old > r->max_stop_len ? old - r->max_stop_len + 1 : 0, best = SIZE_MAX;
          for (size_t s = 0; s < r->n_stop; s++)
            {
              const char *p = memmem (r->text.data + from, r->text.len - from, r->stop[s], r->stop_len[s]);
              if (p && (size_t) (p - r->text.data) < best)
                best = (size_t) (p - r->text.data);
            }
          if (best != SIZE_MAX)
            {
              r->text.len = best;
              r->text.data[best] = '\0';
              reason = "stop";
            }
        }
    }
  if (reason == NULL && r->n_toks - r->prompt.n >= r->max_tokens)
    reason = "length";
  if (reason == NULL && r->n_toks >= e->context)
    reason = "length";
  if (reason)
    {
      r->finishing = true;
      r->finish_reason = reason;
      end = r->text.len;
    }
  else
    {
      size_t hold = stop_holdback (r);
      size_t complete = flint_utf8_complete_prefix ((const uint8_t *) r->text.data, r->text.len);
      end = r->text.len - hold < complete ? r->text.len - hold : complete;
      if (end < r->released)
        end = r->released;
    }
  r->st_id[r->n_st] = t;
  r->st_off[r->n_st] = r->released;
  r->st_len[r->n_st] = end - r->released;
  r->n_st++;
  r->released = end;

  pthread_mutex_lock (&e->stats_lock);
  e->tokens_total++;
  e->window_tokens++;
  if (r->t_first == 0)
    {
      r->t_first = now;
      flint__samples_add (&e->ttft_ms, (double) (now - r->t_submit) / 1e6);
    }
  pthread_mutex_unlock (&e->stats_lock);
  return r->finishing;
}

static void
fail_request (flint_engine_req_t *r, const char *msg)
{
  if (r->finishing)
    return;
  r->finishing = true;
  r->finish_reason = "error";
  snprintf (r->error, sizeof r->error, "%s", msg);
}

/* ---- one step ------------------------------------------------------------------------------- */

typedef struct batch_s {
  flint_engine_t *e;
  uint32_t n, n_out;
} batch_t;

static void
add_row (batch_t *b, int32_t tok, uint32_t pos, uint32_t slot)
{
  b->e->b_tok[b->n] = tok;
  b->e->b_pos[b->n] = pos;
  b->e->b_slot[b->n] = slot;
  b->n++;
}

static int
run (flint_engine_t *e, flint_model_t *m, flint_bkv_t *kv, batch_t *b, float *logits, flint_error_t *err)
{
  flint_batch_t fb = {
    .n = b->n, .tokens = e->b_tok, .pos = e->b_pos, .slot = e->b_slot, .n_out = b->n_out, .out_rows = e->b_out,
  };
  return flint__model_forward (m, kv, &fb, logits, err);
}

/* The draft proposes up to r->k tokens for each decoding request. */
static int
draft_phase (flint_engine_t *e, flint_engine_req_t **act, uint32_t na, flint_error_t *err)
{
  uint32_t V = e->vocab;

  for (uint32_t round = 1; round <= e->spec_k; round++)
    {
      batch_t b = { e, 0, 0 };
      for (uint32_t i = 0; i < na; i++)
        {
          flint_engine_req_t *r = act[i];
          if (r->finishing)
            continue;
          if (round == 1 && r->mode == REQ_PREFILL && r->chunk)
            for (uint32_t j = 0; j < r->chunk; j++)
              add_row (&b, r->prompt.ids[r->prefilled + j], r->prefilled + j, r->slot);
          if (r->mode == REQ_DECODE && r->k >= round)
            {
              if (round == 1)
                for (size_t p = r->d_cached; p < r->n_toks; p++)
                  add_row (&b, r->toks[p], (uint32_t) p, r->slot);
              else
                add_row (&b, r->draft[round - 2], (uint32_t) r->n_toks + round - 2, r->slot);
              r->out0 = b.n_out;
              e->b_out[b.n_out++] = b.n - 1;
            }
        }
      if (b.n == 0)
        break;
      if (run (e, e->draft, e->draft_kv, &b, e->d_logits, err) < 0)
        return -1;
      for (uint32_t i = 0; i < na; i++)
        {
          flint_engine_req_t *r = act[i];
          const float *L;
          if (r->finishing || r->mode != REQ_DECODE || r->k < round)
            continue;
          L = e->d_logits + (size_t) r->out0 * V;
          if (r->sampling.temperature <= 0)
            r->draft[round - 1] = flint__argmax (L, V);
          else
            {
              float *q = r->q_probs + (size_t) (round - 1) * V;
              flint__sample_probs (&e->sampler, L, &r->sampling, q);
              r->draft[round - 1] = flint__sample_from (q, V, &r->rng);
            }
        }
    }
  return 0;
}

/* Verifies the proposals of a decoding request against the model's logits and commits the
 * accepted tokens plus one from the model. */
static void
accept (flint_engine_t *e, flint_engine_req_t *r, uint64_t now)
{
  uint32_t V = e->vocab, k = r->k, a = 0, committed = 0;
  size_t n_old = r->n_toks;
  const float *L0 = e->logits + (size_t) r->out0 * V;
  bool done = false;

  if (r->sampling.temperature <= 0)
    {
      for (uint32_t i = 0; i <= k && !done; i++)
        {
          int32_t t = flint__argmax (L0 + (size_t) i * V, V);
          committed++;
          done = commit (e, r, t, now);
          if (done || i == k || t != r->draft[i])
            break;
          a++;
        }
    }
  else
    {
      uint32_t i;
      for (i = 0; i < k && !done; i++)
        {
          float *p = e->probs;
          const float *q = r->q_probs + (size_t) i * V;
          int32_t y = r->draft[i];
          flint__sample_probs (&e->sampler, L0 + (size_t) i * V, &r->sampling, p);
          committed++;
          if (flint__rng_uniform (&r->rng) * q[y] < p[y])
            {
              a++;
              done = commit (e, r, y, now);
              continue;
            }
          /* rejected: draw from the part of p that q does not cover */
          {
            double sum = 0;
            for (uint32_t j = 0; j < V; j++)
              {
                float d = p[j] - q[j];
                p[j] = d > 0 ? d : 0;
                sum += p[j];
              }
            if (sum <= 0)
              flint__sample_probs (&e->sampler, L0 + (size_t) i * V, &r->sampling, p);
          }
          commit (e, r, flint__sample_from (p, V, &r->rng), now);
          done = true;
        }
      if (!done && i == k)
        {
          committed++;
          commit (e, r, flint__sample (&e->sampler, L0 + (size_t) k * V, &r->sampling, &r->rng), now);
        }
    }
  if (e->draft && k)
    {
      size_t d = n_old + (a < k - 1 ? a : k - 1);
      r->d_cached = (uint32_t) (d < r->n_toks - 1 ? d : r->n_toks - 1);
      r->spec_steps++;
      r->spec_proposed += k;
      r->spec_accepted += a;
      pthread_mutex_lock (&e->stats_lock);
      e->spec_steps++;
      e->spec_tokens += committed;
      pthread_mutex_unlock (&e->stats_lock);
    }
}

static void
step (flint_engine_t *e)
{
  flint_engine_req_t **act = e->active;
  uint32_t na = e->n_active, budget = e->prefill_chunk, V = e->vocab;
  flint_error_t err = FLINT_ERROR_INIT;
  batch_t b = { e, 0, 0 };
  uint64_t now;

  /* plan */
  for (uint32_t i = 0; i < na; i++)
    {
      flint_engine_req_t *r = act[i];
      if (r->finishing)
        continue;
      if (r->prefilled < r->prompt.n)
        {
          r->mode = REQ_PREFILL;
          r->chunk = r->prompt.n - r->prefilled < budget ? (uint32_t) r->prompt.n - r->prefilled : budget;
          budget -= r->chunk;
          continue;
        }
      r->mode = REQ_DECODE;
      r->k = 0;
      if (e->draft)
        {
          size_t left = r->max_tokens - (r->n_toks - r->prompt.n), room = e->context - r->n_toks;
          size_t k = e->spec_k;
          if (k > left - 1)
            k = left - 1;
          if (k > room)
            k = room;
          if (r->n_toks - r->d_cached > e->spec_k + 1)
            k = 0; /* the draft fell behind (a step without proposals): decode plainly */
          r->k = (uint32_t) k;
          if (k && r->sampling.temperature > 0 && r->q_probs == NULL)
            {
              r->q_probs = malloc ((size_t) e->spec_k * V * sizeof (float));
              if (r->q_probs == NULL)
                r->k = 0;
            }
        }
    }

  if (e->draft && draft_phase (e, act, na, &err) < 0)
    goto failed;

  /* the model's pass: prompt chunks, and last token + proposals of decoding requests */
  for (uint32_t i = 0; i < na; i++)
    {
      flint_engine_req_t *r = act[i];
      if (r->finishing)
        continue;
      r->out0 = UINT32_MAX;
      if (r->mode == REQ_PREFILL)
        {
          for (uint32_t j = 0; j < r->chunk; j++)
            add_row (&b, r->prompt.ids[r->prefilled + j], r->prefilled + j, r->slot);
          if (r->chunk && r->prefilled + r->chunk == r->prompt.n)
            {
              r->out0 = b.n_out;
              e->b_out[b.n_out++] = b.n - 1;
            }
          continue;
        }
      r->out0 = b.n_out;
      add_row (&b, r->toks[r->n_toks - 1], (uint32_t) r->n_toks - 1, r->slot);
      e->b_out[b.n_out++] = b.n - 1;
      for (uint32_t j = 0; j < r->k; j++)
        {
          add_row (&b, r->draft[j], (uint32_t) r->n_toks + j, r->slot);
          e->b_out[b.n_out++] = b.n - 1;
        }
    }
  if (b.n == 0)
    return;
  if (run (e, e->model, e->kv, &b, e->logits, &err) < 0)
    goto failed;

  now = flint_now_ns ();
  for (uint32_t i = 0; i < na; i++)
    {
      flint_engine_req_t *r = act[i];
      size_t before = r->n_toks;
      bool decoding = r->t_first != 0;
      if (r->finishing)
        continue;
      if (r->mode == REQ_PREFILL)
        {
          if (r->chunk == 0)
            continue;
          r->prefilled += r->chunk;
          if (e->draft)
            r->d_cached = r->prefilled;
          if (r->out0 != UINT32_MAX)
            commit (e, r, flint__sample (&e->sampler, e->logits + (size_t) r->out0 * V, &r->sampling, &r->rng), now);
        }
      else
        accept (e, r, now);
      /* inter-token latency: a step that produced several tokens (speculation) spreads its
       * time over them */
      if (decoding && r->n_toks > before)
        {
          size_t n = r->n_toks - before;
          pthread_mutex_lock (&e->stats_lock);
          for (size_t j = 0; j < n; j++)
            flint__samples_add (&e->itl_ms, (double) (now - r->t_last) / 1e6 / (double) n);
          pthread_mutex_unlock (&e->stats_lock);
        }
      r->t_last = now;
    }
  return;

failed:
  for (uint32_t i = 0; i < na; i++)
    fail_request (act[i], err.msg);
}

/* ---- the loop ------------------------------------------------------------------------------- */

static void
admit (flint_engine_t *e)
{
  while (e->pending_head && e->n_active < e->max_seqs)
    {
      flint_engine_req_t *r = e->pending_head;
      uint32_t s = 0;
      e->pending_head = r->next_pending;
      if (e->pending_head == NULL)
        e->pending_tail = NULL;
      e->n_pending--;
      while (e->slot_used[s])
        s++;
      e->slot_used[s] = 1;
      r->slot = s;
      e->active[e->n_active++] = r;
    }
}

static void
publish (flint_engine_t *e)
{
  uint32_t kept = 0, kv = 0;
  uint64_t now = flint_now_ns ();

  for (uint32_t i = 0; i < e->n_active; i++)
    {
      flint_engine_req_t *r = e->active[i];
      bool signal = r->n_st > 0 || r->finishing;
      for (uint32_t j = 0; j < r->n_st; j++)
        {
          if (r->ev.n == r->ev.cap)
            {
              size_t cap = r->ev.cap ? 2 * r->ev.cap : 64;
              int32_t *ids = realloc (r->ev.ids, cap * sizeof *ids);
              size_t *off = realloc (r->ev.off, cap * sizeof *off);
              size_t *len = realloc (r->ev.len, cap * sizeof *len);
              if (!ids || !off || !len)
                abort ();
              r->ev.ids = ids, r->ev.off = off, r->ev.len = len, r->ev.cap = cap;
            }
          r->ev.ids[r->ev.n] = r->st_id[j];
          r->ev.off[r->ev.n] = r->pub_text.len;
          r->ev.len[r->ev.n] = r->st_len[j];
          flint_buf_append (&r->pub_text, r->text.data + r->st_off[j], r->st_len[j]);
          r->ev.n++;
        }
      r->n_st = 0;
      if (r->finishing)
        {
          r->t_done = now;
          r->done = true;
          e->slot_used[r->slot] = 0;
          pthread_mutex_lock (&e->stats_lock);
          e->requests_total++;
          pthread_mutex_unlock (&e->stats_lock);
        }
      else
        {
          e->active[kept++] = r;
          kv += (uint32_t) r->n_toks;
        }
      if (signal)
        pthread_cond_broadcast (&r->cond);
    }
  e->n_active = kept;
  pthread_mutex_lock (&e->stats_lock);
  e->kv_tokens = kv;
  pthread_mutex_unlock (&e->stats_lock);
}

static void
finish_cancelled (flint_engine_req_t *r)
{
  if (!r->finishing)
    {
      r->finishing = true;
      r->finish_reason = "cancelled";
    }
}

void *
flint__sched_main (void *arg)
{
  flint_engine_t *e = arg;

  pthread_mutex_lock (&e->lock);
  for (;;)
    {
      bool work = false;
      while (!e->stopping && (e->checkpointed || (e->n_active == 0 && e->pending_head == NULL)))
        pthread_cond_wait (&e->work, &e->lock);
      if (e->stopping)
        break;
      /* cancelled before they got a slot: done without running */
      for (flint_engine_req_t **pp = &e->pending_head; *pp;)
        {
          flint_engine_req_t *r = *pp;
          if (!r->cancel)
            {
              pp = &r->next_pending;
              continue;
            }
          *pp = r->next_pending;
          e->n_pending--;
          finish_cancelled (r);
          r->t_done = flint_now_ns ();
          r->done = true;
          pthread_cond_broadcast (&r->cond);
        }
      e->pending_tail = NULL;
      for (flint_engine_req_t *r = e->pending_head; r; r = r->next_pending)
        e->pending_tail = r;
      admit (e);
      for (uint32_t i = 0; i < e->n_active; i++)
        {
          if (e->active[i]->cancel)
            finish_cancelled (e->active[i]);
          work |= !e->active[i]->finishing;
        }
      pthread_mutex_unlock (&e->lock);
      if (work)
        step (e);
      pthread_mutex_lock (&e->lock);
      publish (e);
    }
  /* stopping: whatever is in flight ends as cancelled */
  for (uint32_t i = 0; i < e->n_active; i++)
    finish_cancelled (e->active[i]);
  publish (e);
  while (e->pending_head)
    {
      flint_engine_req_t *r = e->pending_head;
      e->pending_head = r->next_pending;
      finish_cancelled (r);
      r->t_done = flint_now_ns ();
      r->done = true;
      pthread_cond_broadcast (&r->cond);
    }
  e->pending_tail = NULL;
  e->n_pending = 0;
  pthread_mutex_unlock (&e->lock);
  return NULL;
}
