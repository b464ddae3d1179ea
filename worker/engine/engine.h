/* libflint-engine: flint's model engine, serving a llama-family model from safetensors.
 *
 * One engine per worker. It loads a model directory (config.json, tokenizer.json, *.safetensors
 * mapped shared and read-only from the node weight store) and optionally a draft model for
 * speculative decoding, then serves generation requests with continuous batching: a scheduler
 * thread runs one decode step at a time over every active request (prompt chunks of new ones
 * included), so requests join and leave between steps.
 *
 * Request lifecycle (any thread):
 *   flint_engine_request_new (payload JSON → validated, tokenized)  -- INVALID_ARGUMENT errors
 *   flint_engine_submit
 *   flint_engine_next ... until it returns 0 (streamed tokens, in order)
 *   flint_engine_result_json (the final record)
 *   flint_engine_request_free
 * flint_engine_cancel may be called at any time after submit; the request then finishes with
 * finish_reason "cancelled".
 *
 * The invoke payload and the result records are documented in docs/MODELS.md. */
#ifndef FLINT_ENGINE_H
#define FLINT_ENGINE_H

#include "flint/buf.h"
#include "flint/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct flint_engine_s flint_engine_t;
typedef struct flint_engine_req_s flint_engine_req_t;

/* Maps weight file `file` of the model in `dir` (`draft` for the draft model) read-only and
 * shared; the mapping must outlive the engine. */
typedef int (*flint_engine_map_fn) (void *data, bool draft, const char *dir, const char *file, const void **addr_out,
                                    size_t *len_out, flint_error_t *err);

typedef struct flint_engine_options_s {
  const char *model_dir;
  const char *draft_dir;        /* NULL: no speculative decoding */
  flint_engine_map_fn map;      /* NULL: the engine maps the files in the directories itself */
  void *map_data;
  const char *backend;          /* "cpu", "cuda", NULL = the best available */
  const char *cpu_kernels;      /* force a CPU kernel build (tests); NULL = the best */
  uint32_t threads;             /* CPU threads; 0 = the CPUs this process may run on */
  uint32_t max_seqs;            /* requests decoded together; 0 = 8 */
  uint32_t context;             /* tokens per request (prompt + output); 0 = the model's, at most 4096 */
  uint32_t spec_tokens;         /* draft tokens proposed per step; 0 = 4 */
  uint32_t prefill_chunk;       /* prompt tokens per step, all requests together; 0 = 256 */
  const char *chat_template;    /* "chatml", "llama3", "mistral", "llama2", "none"; NULL = from the model */
  bool checkpoint_keeps_weights; /* the checkpoint hooks leave weights and KV caches on the device (a
                                   checkpoint then carries them: the baseline of the GPU cold-start
                                   benchmark); false = set them aside (issue 7) */
} flint_engine_options_t;

/* Opens the engine. Returns 0, or -1 with FLINT_EPRECONDITION and a message naming the file and
 * field at fault (`config.json`, `tokenizer.json`, a safetensors shard), or another code for
 * environment failures. Cost: parsing and mapping; no weight is copied on the CPU backend. */
int flint_engine_open (const flint_engine_options_t *o, flint_engine_t **out, flint_error_t *err);
/* Stops the scheduler (requests in flight finish as cancelled) and frees everything. */
void flint_engine_free (flint_engine_t *e);

/* Parses an invoke payload: {"prompt": "..."} or {"messages": [...]}, with max_tokens,
 * temperature, top_p, top_k, seed, stop, ignore_eos. Returns 0 and a request owned by the caller,
 * or -1 with FLINT_EINVAL (a bad field, a prompt longer than the context: the message says which
 * and how long). */
int flint_engine_request_new (flint_engine_t *e, const void *json, size_t len, flint_engine_req_t **out,
                              flint_error_t *err);
/* Hands the request to the scheduler (the caller keeps ownership and must not free it before
 * flint_engine_next returned 0). Returns 0, or -1 with FLINT_EUNAVAILABLE when the engine is
 * stopping or checkpointed. */
int flint_engine_submit (flint_engine_t *e, flint_engine_req_t *r, flint_error_t *err);

typedef struct flint_engine_token_s {
  int32_t id;
  const char *text;             /* the text this token releases (may be empty: held back for a
                                   stop string or an incomplete UTF-8 character); valid until the
                                   next call */
  size_t len;
} flint_engine_token_t;

/* Waits up to `timeout_ms` (-1 = forever) for the request's next token. Returns 1 with a token,
 * 0 when the request has finished (no more tokens), -ETIMEDOUT. */
int flint_engine_next (flint_engine_req_t *r, int timeout_ms, flint_engine_token_t *tok_out);
void flint_engine_cancel (flint_engine_req_t *r);
/* Appends the final record: for unary invokes (`streaming` false) {"text", "tokens",
 * "finish_reason", "usage", "timings", ["speculative"]}; for streams the same without text and
 * tokens, with "done": true. Only after flint_engine_next returned 0. */
void flint_engine_result_json (const flint_engine_req_t *r, bool streaming, flint_buf_t *out);
/* The request's generated ids (after it finished). */
size_t flint_engine_request_tokens (const flint_engine_req_t *r, const int32_t **ids_out);
/* "stop", "length", "cancelled" or "error" (then flint_engine_request_error says why). */
const char *flint_engine_request_finish_reason (const flint_engine_req_t *r);
const char *flint_engine_request_error (const flint_engine_req_t *r);
void flint_engine_request_free (flint_engine_req_t *r);

/* Checkpoint hooks: drop the KV caches and release the weights' device memory (refused with
 * FLINT_EUNAVAILABLE while requests are in flight); after a restore, map the weights again and
 * re-create the caches. Requests submitted in between wait. */
int flint_engine_before_checkpoint (flint_engine_t *e, flint_error_t *err);
int flint_engine_after_restore (flint_engine_t *e, flint_error_t *err);

/* What the last pair of checkpoint hooks cost, for the restore's phase report (issue 7). On the
 * CPU nothing is copied: weight_bytes is 0 and the weight times are the bookkeeping's. */
typedef struct flint_engine_restore_stats_s {
  double release_ms;            /* before_checkpoint: KV caches freed, weight memory released */
  double weights_ms;            /* after_restore: weight memory mapped again and filled, wall clock */
  double weight_map_ms;         /*   of which creating and mapping device memory */
  double weight_pin_ms;         /*   of which pinning (staging buffers or host pages) */
  double weight_copy_ms;        /*   of which the host -> device copy */
  uint64_t weight_bytes;        /* bytes copied to the device */
  const char *copy_mode;        /* "staging", "register", NULL (CPU) */
  double kv_ms;                 /* after_restore: KV caches re-created */
} flint_engine_restore_stats_t;

/* Copies the stats of the last hooks into *out (zeros before any). Thread-safe. */
void flint_engine_restore_stats (flint_engine_t *e, flint_engine_restore_stats_t *out);

/* Metrics for Pong frames: up to `max` (name, value) pairs; returns how many. Names are static
 * strings: ttft_p50_ms, ttft_p99_ms, itl_p50_ms, itl_p99_ms, tokens_per_s, kv_used,
 * kv_capacity_tokens, requests_running, requests_waiting, requests_total, tokens_total,
 * spec_acceptance_length (with a draft model). Thread-safe. */
size_t flint_engine_stats (flint_engine_t *e, const char **names, double *values, size_t max);

/* What the engine runs on, e.g. "cpu (avx512 kernels, 2 threads)". */
const char *flint_engine_device (const flint_engine_t *e);

/* Why the engine is not on a GPU although it was built with CUDA and no backend was named
 * ("cuda: no CUDA device: no NVIDIA driver: libcuda.so.1: cannot open ..."), or NULL. For the
 * worker's log: a model meant for a GPU that lands on the CPU must say so. */
const char *flint_engine_backend_fallback (const flint_engine_t *e);

#endif
