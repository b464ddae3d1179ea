/* Generation requests from the client's side: the invoke payload (validated field by field,
 * tokenized, checked against the context), submission, the token stream and the final record.
 * docs/MODELS.md documents the payload and the records. */
#include "engine_internal.h"
#include "flint/json.h"
#include "flint/util.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define DEFAULT_MAX_TOKENS 256

static const char *const fields[] = { "prompt", "messages", "max_tokens", "temperature", "top_p",
                                      "top_k",  "seed",     "stop",       "ignore_eos" };

void
flint_engine_request_free (flint_engine_req_t *r)
{
  if (r == NULL)
    return;
  flint_tokens_free (&r->prompt);
  for (size_t i = 0; i < r->n_stop; i++)
    free (r->stop[i]);
  free (r->toks);
  free (r->q_probs);
  flint_buf_free (&r->text);
  flint_buf_free (&r->pub_text);
  free (r->ev.ids);
  free (r->ev.off);
  free (r->ev.len);
  free (r->tok_buf);
  pthread_cond_destroy (&r->cond);
  free (r);
}

static int
parse_stop (flint_engine_req_t *r, const flint_json_t *v, flint_error_t *err)
{
  const flint_json_t *one = v;
  size_t n = 1;

  if (v->type == FLINT_JSON_ARRAY)
    {
      n = v->len;
      if (n > FLINT_MAX_STOP)
        return flint_error_set (err, FLINT_EINVAL, "field `stop`: %zu strings (at most %d)", n, FLINT_MAX_STOP);
    }
  else if (v->type != FLINT_JSON_STRING)
    return flint_error_set (err, FLINT_EINVAL, "field `stop`: expected a string or a list of strings");
  for (size_t i = 0; i < n; i++)
    {
      if (v->type == FLINT_JSON_ARRAY)
        one = v->items[i];
      if (one->type != FLINT_JSON_STRING || one->len == 0 || one->len > FLINT_MAX_STOP_LEN)
        return flint_error_set (err, FLINT_EINVAL, "field `stop`: each stop string must be 1 to %d bytes",
                                FLINT_MAX_STOP_LEN);
      r->stop[r->n_stop] = malloc (one->len + 1);
      if (r->stop[r->n_stop] == NULL)
        return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
      memcpy (r->stop[r->n_stop], one->str, one->len + 1);
      r->stop_len[r->n_stop] = one->len;
      if (one->len > r->max_stop_len)
        r->max_stop_len = one->len;
      r->n_stop++;
    }
  return 0;
}

static int
parse_messages (flint_engine_t *e, const flint_json_t *v, flint_buf_t *text, flint_error_t *err)
{
  flint_chat_msg_t *msgs;
  int rc;

  if (v->type != FLINT_JSON_ARRAY || v->len == 0)
    return flint_error_set (err, FLINT_EINVAL, "field `messages`: expected a non-empty list of {\"role\", \"content\"}");
  if (v->len > 4096)
    return flint_error_set (err, FLINT_EINVAL, "field `messages`: %zu messages (at most 4096)", v->len);
  msgs = calloc (v->len, sizeof *msgs);
  if (msgs == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  for (size_t i = 0; i < v->len; i++)
    {
      const flint_json_t *m = v->items[i];
      if (m->type != FLINT_JSON_OBJECT)
        {
          free (msgs);
          return flint_error_set (err, FLINT_EINVAL, "field `messages[%zu]`: expected an object", i);
        }
      for (size_t k = 0; k < m->len; k++)
        if (strcmp (m->keys[k], "role") != 0 && strcmp (m->keys[k], "content") != 0)
          {
            free (msgs);
            return flint_error_set (err, FLINT_EINVAL, "field `messages[%zu]`: unknown field `%.40s` (role, content)",
                                    i, m->keys[k]);
          }
      if (!flint_json_get_string (m, "role", &msgs[i].role, &msgs[i].role_len)
          || !flint_json_get_string (m, "content", &msgs[i].content, &msgs[i].content_len))
        {
          free (msgs);
          return flint_error_set (err, FLINT_EINVAL, "field `messages[%zu]`: needs string fields `role` and `content`",
                                  i);
        }
    }
  rc = flint__chat_render (e->chat, msgs, v->len, text, err);
  free (msgs);
  return rc;
}

int
flint_engine_request_new (flint_engine_t *e, const void *json, size_t len, flint_engine_req_t **out, flint_error_t *err)
{
  flint_json_doc_t *doc = NULL;
  const flint_json_t *root, *v, *prompt, *messages;
  flint_engine_req_t *r;
  char jerr[160];
  flint_buf_t chat = FLINT_BUF_INIT;
  int64_t i64;
  double d;

  r = calloc (1, sizeof *r);
  if (r == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  r->e = e;
  pthread_cond_init (&r->cond, NULL);
  r->max_tokens = DEFAULT_MAX_TOKENS;
  r->sampling = (flint_sampling_t) { .temperature = 1.0f, .top_p = 1.0f, .top_k = 0 };
  if (getrandom (&r->seed, sizeof r->seed, 0) != sizeof r->seed)
    r->seed = flint_now_ns () ^ (uint64_t) (uintptr_t) r;

  if (flint_json_parse (json, len, &doc, jerr, sizeof jerr) < 0)
    {
      flint_error_set (err, FLINT_EINVAL, "the payload is not JSON: %s", jerr);
      goto fail;
    }
  root = flint_json_root (doc);
  if (root->type != FLINT_JSON_OBJECT)
    {
      flint_error_set (err, FLINT_EINVAL, "the payload must be a JSON object: {\"prompt\": \"...\"} or {\"messages\": [...]}");
      goto fail;
    }
  for (size_t i = 0; i < root->len; i++)
    {
      bool known = false;
      for (size_t k = 0; k < sizeof fields / sizeof fields[0]; k++)
        known |= strcmp (root->keys[i], fields[k]) == 0;
      if (!known)
        {
          flint_error_set (err, FLINT_EINVAL, "field `%.60s`: unknown (accepted: prompt, messages, max_tokens, "
                           "temperature, top_p, top_k, seed, stop, ignore_eos)", root->keys[i]);
          goto fail;
        }
    }
  prompt = flint_json_get (root, "prompt");
  messages = flint_json_get (root, "messages");
  if ((prompt == NULL) == (messages == NULL))
    {
      flint_error_set (err, FLINT_EINVAL, "give exactly one of `prompt` and `messages`");
      goto fail;
    }
  if ((v = flint_json_get (root, "max_tokens")))
    {
      if (!flint_json_get_int (root, "max_tokens", &i64) || i64 < 1 || i64 > (int64_t) e->context)
        {
          flint_error_set (err, FLINT_EINVAL, "field `max_tokens`: expected an integer from 1 to %u (the context)",
                           e->context);
          goto fail;
        }
      r->max_tokens = (uint32_t) i64;
    }
  if ((v = flint_json_get (root, "temperature")))
    {
      if (!flint_json_get_number (root, "temperature", &d) || !(d >= 0 && d <= 100))
        {
          flint_error_set (err, FLINT_EINVAL, "field `temperature`: expected a number from 0 (greedy) to 100");
          goto fail;
        }
      r->sampling.temperature = (float) d;
    }
  if ((v = flint_json_get (root, "top_p")))
    {
      if (!flint_json_get_number (root, "top_p", &d) || !(d > 0 && d <= 1))
        {
          flint_error_set (err, FLINT_EINVAL, "field `top_p`: expected a number in (0, 1]");
          goto fail;
        }
      r->sampling.top_p = (float) d;
    }
  if ((v = flint_json_get (root, "top_k")))
    {
      if (!flint_json_get_int (root, "top_k", &i64) || i64 < 0 || i64 > (int64_t) e->vocab)
        {
          flint_error_set (err, FLINT_EINVAL, "field `top_k`: expected an integer from 0 (off) to %u", e->vocab);
          goto fail;
        }
      r->sampling.top_k = (uint32_t) i64;
    }
  if ((v = flint_json_get (root, "seed")))
    {
      if (!flint_json_get_int (root, "seed", &i64) || i64 < 0)
        {
          flint_error_set (err, FLINT_EINVAL, "field `seed`: expected a non-negative integer");
          goto fail;
        }
      r->seed = (uint64_t) i64;
    }
  if ((v = flint_json_get (root, "stop")) && v->type != FLINT_JSON_NULL && parse_stop (r, v, err) < 0)
    goto fail;
  if ((v = flint_json_get (root, "ignore_eos")))
    {
      bool b;
      if (!flint_json_get_bool (root, "ignore_eos", &b))
        {
          flint_error_set (err, FLINT_EINVAL, "field `ignore_eos`: expected true or false");
          goto fail;
        }
      r->ignore_eos = b;
    }

  if (prompt)
    {
      if (prompt->type != FLINT_JSON_STRING)
        {
          flint_error_set (err, FLINT_EINVAL, "field `prompt`: expected a string");
          goto fail;
        }
      if (flint_tokenizer_encode (e->tok, prompt->str, prompt->len, true, &r->prompt) < 0)
        {
          flint_error_set (err, FLINT_EINTERNAL, "tokenize the prompt: out of memory");
          goto fail;
        }
    }
  else
    {
      if (parse_messages (e, messages, &chat, err) < 0)
        goto fail;
      if (flint_tokenizer_encode (e->tok, chat.data ? chat.data : "", chat.len, false, &r->prompt) < 0)
        {
          flint_error_set (err, FLINT_EINTERNAL, "tokenize the messages: out of memory");
          goto fail;
        }
    }
  if (r->prompt.n == 0)
    {
      flint_error_set (err, FLINT_EINVAL, "field `%s`: the prompt is empty (no tokens)", prompt ? "prompt" : "messages");
      goto fail;
    }
  if (r->prompt.n >= e->context)
    {
      flint_error_set (err, FLINT_EINVAL,
                       "field `%s`: the prompt is %zu tokens, but this endpoint's context holds %u tokens (prompt and "
                       "output together); shorten it, or raise `config: context:` in flint.yaml up to the model's "
                       "max_position_embeddings (%u)", prompt ? "prompt" : "messages", r->prompt.n, e->context,
                       e->model->cfg.max_pos);
      goto fail;
    }
  flint_buf_free (&chat);
  flint_json_doc_free (doc);
  *out = r;
  return 0;

fail:
  flint_buf_free (&chat);
  flint_json_doc_free (doc);
  flint_engine_request_free (r);
  return -1;
}

int
flint_engine_submit (flint_engine_t *e, flint_engine_req_t *r, flint_error_t *err)
{
  r->toks = malloc ((r->prompt.n + r->max_tokens + 16) * sizeof *r->toks);
  if (r->toks == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  memcpy (r->toks, r->prompt.ids, r->prompt.n * sizeof *r->toks);
  r->n_toks = r->prompt.n;
  r->cap_toks = r->prompt.n + r->max_tokens + 16;
  flint__rng_seed (&r->rng, r->seed);
  r->t_submit = flint_now_ns ();
  pthread_mutex_lock (&e->lock);
  if (e->stopping)
    {
      pthread_mutex_unlock (&e->lock);
      return flint_error_set (err, FLINT_EUNAVAILABLE, "the engine is stopping");
    }
  r->submitted = true;
  if (e->pending_tail)
    e->pending_tail->next_pending = r;
  else
    e->pending_head = r;
  e->pending_tail = r;
  e->n_pending++;
  pthread_cond_broadcast (&e->work);
  pthread_mutex_unlock (&e->lock);
  return 0;
}

int
flint_engine_next (flint_engine_req_t *r, int timeout_ms, flint_engine_token_t *tok)
{
  flint_engine_t *e = r->e;
  struct timespec until;
  int rc = 0;

  if (timeout_ms >= 0)
    {
      clock_gettime (CLOCK_REALTIME, &until);
      until.tv_sec += timeout_ms / 1000;
      until.tv_nsec += (long) (timeout_ms % 1000) * 1000000L;
      if (until.tv_nsec >= 1000000000L)
        until.tv_sec++, until.tv_nsec -= 1000000000L;
    }
  pthread_mutex_lock (&e->lock);
  while (r->read == r->ev.n && !r->done)
    {
      if (timeout_ms < 0)
        pthread_cond_wait (&r->cond, &e->lock);
      else if (pthread_cond_timedwait (&r->cond, &e->lock, &until) == ETIMEDOUT)
        {
          rc = -ETIMEDOUT;
          break;
        }
    }
  if (rc == 0 && r->read < r->ev.n)
    {
      size_t i = r->read++, n = r->ev.len[i];
      if (n + 1 > r->tok_cap)
        {
          char *p = realloc (r->tok_buf, n + 1);
          if (p == NULL)
            abort ();
          r->tok_buf = p;
          r->tok_cap = n + 1;
        }
      memcpy (r->tok_buf, r->pub_text.data + r->ev.off[i], n);
      r->tok_buf[n] = '\0';
      tok->id = r->ev.ids[i];
      tok->text = r->tok_buf;
      tok->len = n;
      rc = 1;
    }
  pthread_mutex_unlock (&e->lock);
  return rc;
}

void
flint_engine_cancel (flint_engine_req_t *r)
{
  pthread_mutex_lock (&r->e->lock);
  r->cancel = true;
  pthread_cond_broadcast (&r->e->work);
  pthread_mutex_unlock (&r->e->lock);
}

size_t
flint_engine_request_tokens (const flint_engine_req_t *r, const int32_t **ids_out)
{
  *ids_out = r->toks ? r->toks + r->prompt.n : NULL;
  return r->toks ? r->n_toks - r->prompt.n : 0;
}

const char *
flint_engine_request_finish_reason (const flint_engine_req_t *r)
{
  return r->finish_reason ? r->finish_reason : "";
}

const char *
flint_engine_request_error (const flint_engine_req_t *r)
{
  return r->error;
}

static double
ms (uint64_t a, uint64_t b)
{
  return b > a ? (double) (b - a) / 1e6 : 0;
}

void
flint_engine_result_json (const flint_engine_req_t *r, bool streaming, flint_buf_t *out)
{
  size_t completion = r->toks ? r->n_toks - r->prompt.n : 0;
  double total = ms (r->t_submit, r->t_done), ttft = r->t_first ? ms (r->t_submit, r->t_first) : 0;

  flint_buf_putc (out, '{');
  if (streaming)
    flint_buf_puts (out, "\"done\":true,");
  else
    {
      flint_buf_puts (out, "\"text\":");
      flint_buf_json_string (out, r->text.data ? r->text.data : "", r->text.len);
      flint_buf_puts (out, ",\"tokens\":[");
      for (size_t i = 0; i < completion; i++)
        flint_buf_printf (out, "%s%d", i ? "," : "", r->toks[r->prompt.n + i]);
      flint_buf_puts (out, "],");
    }
  flint_buf_puts (out, "\"finish_reason\":");
  flint_buf_json_string (out, flint_engine_request_finish_reason (r), strlen (flint_engine_request_finish_reason (r)));
  flint_buf_printf (out, ",\"usage\":{\"prompt_tokens\":%zu,\"completion_tokens\":%zu}", r->prompt.n, completion);
  flint_buf_printf (out, ",\"timings\":{\"ttft_ms\":%.3f,\"total_ms\":%.3f,\"tokens_per_s\":%.3f}", ttft, total,
                    total > 0 ? (double) completion / (total / 1e3) : 0.0);
  if (r->e->draft)
    flint_buf_printf (out,
                      ",\"speculative\":{\"draft_tokens\":%u,\"steps\":%u,\"proposed\":%u,\"accepted\":%u,"
                      "\"acceptance_length\":%.3f}",
                      r->e->spec_k, r->spec_steps, r->spec_proposed, r->spec_accepted,
                      r->spec_steps ? (double) (r->spec_accepted + r->spec_steps) / r->spec_steps : 0.0);
  flint_buf_puts (out, "}");
}
