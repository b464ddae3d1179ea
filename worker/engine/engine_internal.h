/* Internals of the engine shared by engine.c (lifetime, hooks, metrics), request.c (payloads
 * and result records) and sched.c (the scheduler thread). Not installed; tests may include it.
 *
 * Threads and locks: `lock` guards the pending queue, every request's published events and the
 * engine's run state; the scheduler thread alone touches the active set, the models, the KV
 * caches and each request's decoding state, outside the lock. `stats_lock` guards the metrics. */
#ifndef FLINT_ENGINE_INTERNAL_H
#define FLINT_ENGINE_INTERNAL_H

#include "engine.h"
#include "backend.h"
#include "chat.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

#include <pthread.h>

#define FLINT_STATS_SAMPLES 1024
#define FLINT_MAX_STOP 16
#define FLINT_MAX_STOP_LEN 256
#define FLINT_MAX_STOP_IDS 16

/* The last FLINT_STATS_SAMPLES values of a latency, for quantiles. */
typedef struct flint_samples_s {
  double v[FLINT_STATS_SAMPLES];
  size_t n, next;
} flint_samples_t;

void flint__samples_add (flint_samples_t *s, double v);
/* The q-quantile (0..1) of the samples, 0 when there are none. */
double flint__samples_quantile (const flint_samples_t *s, double q);

typedef enum req_mode_e {
  REQ_PREFILL,
  REQ_DECODE,
} req_mode_t;

struct flint_engine_req_s {
  flint_engine_t *e;
  struct flint_engine_req_s *next_pending;

  /* what was asked (immutable once submitted) */
  flint_tokens_t prompt;
  uint32_t max_tokens;
  flint_sampling_t sampling;
  uint64_t seed;
  char *stop[FLINT_MAX_STOP];
  size_t stop_len[FLINT_MAX_STOP];
  size_t n_stop, max_stop_len;
  bool ignore_eos;

  /* decoding state: scheduler thread only */
  int32_t *toks;                 /* prompt, then generated */
  size_t n_toks, cap_toks;
  uint32_t slot;
  uint32_t prefilled;            /* prompt tokens in the target's KV cache */
  uint32_t d_cached;             /* positions valid in the draft's KV cache */
  req_mode_t mode;
  uint32_t chunk;                /* prompt tokens of this step */
  uint32_t k;                    /* draft tokens proposed this step */
  int32_t draft[16];             /* the proposals */
  uint32_t row0;                 /* first row of this request in the target batch */
  uint32_t out0;                 /* first logit row of this request */
  float *q_probs;                /* draft distributions [k][vocab], sampling with a draft */
  flint_rng_t rng;
  flint_buf_t text;              /* generated text so far (special tokens skipped) */
  size_t released;               /* bytes of `text` handed out */
  uint64_t t_submit, t_first, t_last, t_done;
  uint32_t spec_steps, spec_accepted, spec_proposed;
  int32_t st_id[17];             /* events of this step, staged until published */
  size_t st_off[17], st_len[17];
  uint32_t n_st;
  bool finishing;                /* decided this step: published with the step's events */
  const char *finish_reason;
  char error[256];

  /* published to the client: under e->lock */
  struct {
    int32_t *ids;
    size_t *off, *len;           /* into text */
    size_t n, cap;
  } ev;
  flint_buf_t pub_text;
  size_t read;                   /* events consumed by flint_engine_next */
  bool submitted, done, cancel;
  pthread_cond_t cond;
  char *tok_buf;                 /* the token text handed out by flint_engine_next */
  size_t tok_cap;
};

struct flint_engine_s {
  flint_engine_options_t opt;
  flint_backend_t *be;
  flint_model_t *model, *draft;
  flint_bkv_t *kv, *draft_kv;
  flint_tokenizer_t *tok;
  flint_chat_t chat;
  int32_t stop_ids[FLINT_MAX_STOP_IDS];
  size_t n_stop_ids;
  uint32_t context, max_seqs, spec_k, prefill_chunk, vocab;

  /* scheduler */
  pthread_t thread;
  bool thread_started;
  pthread_mutex_t lock;
  pthread_cond_t work;
  flint_engine_req_t *pending_head, *pending_tail;
  uint32_t n_pending;
  flint_engine_req_t **active;   /* [max_seqs] */
  uint32_t n_active;
  uint8_t *slot_used;            /* [max_seqs] */
  bool stopping, checkpointed;
  flint_engine_restore_stats_t restore_stats;   /* under lock */

  /* scheduler-thread scratch */
  float *logits, *d_logits;
  flint_sampler_t sampler;
  float *probs;                  /* [vocab] */
  int32_t *b_tok;
  uint32_t *b_pos, *b_slot, *b_out;

  /* metrics */
  pthread_mutex_t stats_lock;
  flint_samples_t ttft_ms, itl_ms;
  uint64_t requests_total, tokens_total;
  uint64_t spec_steps, spec_tokens;   /* verification steps, tokens they produced */
  uint64_t window_start_ns, window_tokens, prev_window_tokens;
  double prev_window_s;
  uint32_t kv_tokens;                  /* positions in use (published) */
};

/* sched.c */
void *flint__sched_main (void *arg);

#endif
