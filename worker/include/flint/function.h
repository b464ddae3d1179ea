/* The flint function ABI: what a native function (a shared object) exports and what it may call.
 *
 * A bundle of `kind: native` holds a shared object built against this header:
 *
 *   #include <flint/function.h>
 *   FLINT_FUNCTION_ABI;                         // exports the ABI version flint checks
 *
 *   int flint_init (flint_ctx_t *ctx) { ... }   // optional: once per worker, before any invoke
 *   int flint_invoke (flint_ctx_t *ctx, const flint_input_t *in, flint_output_t *out)
 *   {
 *     return flint_output_write (out, in->data, in->len);   // echo
 *   }
 *
 * Lifecycle of a worker: dlopen → flint_init → [flint_before_checkpoint → (snapshot) →
 * flint_after_restore in each restored replica] → flint_invoke, many times → flint_fini → exit.
 * flint_init is where weights are mapped and caches warmed: its effect is what snapshots keep.
 *
 * Entry points (looked up by name with dlsym):
 *   flint_invoke              required
 *   flint_init                optional
 *   flint_before_checkpoint   optional: release what a checkpoint cannot carry (sockets, threads
 *                             blocked in the kernel, GPU memory) or should not (per-replica keys).
 *   flint_after_restore       optional: runs exactly once in every replica restored from a
 *                             snapshot, before it takes traffic: reseed RNGs, refresh clocks and
 *                             anything unique per replica.
 *   flint_fini                optional: runs once when the worker ends normally (flintd stopped
 *                             the replica and closed its channel), after the last invoke, if
 *                             flint_init succeeded: release what init and invokes kept. A worker
 *                             that is killed (crash, limit, timeout) runs nothing.
 * Every entry returns 0 on success; a non-zero return fails the operation with the message set
 * through flint_set_error() (or a generic one).
 *
 * Threading: with `max_concurrency: 1` (the default) invokes are serialised on one thread.
 * With a higher value, flint_invoke runs concurrently on several threads and must be
 * thread-safe; a flint_output_t is only ever used by the thread running its invoke.
 *
 * Memory: everything passed in is owned by flint and valid only during the call. */
#ifndef FLINT_FUNCTION_H
#define FLINT_FUNCTION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FLINT_ABI_VERSION 1

/* Exports the ABI version this function was built against; flint-worker refuses a mismatch. */
#define FLINT_FUNCTION_ABI \
  __attribute__((visibility("default"))) const uint32_t flint_abi_version = FLINT_ABI_VERSION

typedef struct flint_ctx_s flint_ctx_t;       /* one per worker process */
typedef struct flint_output_s flint_output_t; /* one per invocation */

typedef struct flint_input_s {
  const uint8_t *data;       /* the request payload (not NUL-terminated) */
  size_t len;
  uint64_t request_id;       /* unique within the worker */
  int streaming;             /* 1 when the caller reads a stream of chunks (InvokeStream) */
  uint64_t deadline_ms;      /* milliseconds left when the request reached the worker; 0 = none */
} flint_input_t;

/* Status codes a function may fail an invocation with (same values as gRPC's). */
enum {
  FLINT_FN_UNKNOWN = 2,          /* the default for a failing invoke */
  FLINT_FN_INVALID_ARGUMENT = 3, /* the input is wrong: the caller should not retry as is */
  FLINT_FN_NOT_FOUND = 5,
  FLINT_FN_RESOURCE_EXHAUSTED = 8,
  FLINT_FN_FAILED_PRECONDITION = 9,
  FLINT_FN_INTERNAL = 13,
  FLINT_FN_UNAVAILABLE = 14,     /* transient: the caller may retry */
};

/* --- entry points a function exports --------------------------------------------------- */
int flint_init (flint_ctx_t *ctx);
int flint_invoke (flint_ctx_t *ctx, const flint_input_t *in, flint_output_t *out);
int flint_before_checkpoint (flint_ctx_t *ctx);
int flint_after_restore (flint_ctx_t *ctx);
void flint_fini (flint_ctx_t *ctx);

/* --- services flint-worker provides to the function ------------------------------------ */

/* Appends bytes to the invocation's output. For a unary invoke the pieces are concatenated into
 * one response; for a streaming invoke each call sends one chunk to the caller right away.
 * Returns 0, or -1 when the output is over the endpoint's payload limit or the caller has gone
 * (cancelled, deadline passed): the function should stop working on this request then. */
int flint_output_write (flint_output_t *out, const void *data, size_t len);

/* 1 when the caller cancelled or the deadline passed; long invokes should poll it. */
int flint_output_cancelled (const flint_output_t *out);

/* Fails the current invocation (returns non-zero from flint_invoke afterwards) or, outside an
 * invoke, the init / hook in progress. `code` is one of FLINT_FN_*; the message reaches the
 * caller, prefixed with the endpoint name. Returns -1 for `return flint_fail(...)`. */
int flint_fail (flint_output_t *out, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int flint_set_error (flint_ctx_t *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Maps the named weights (declared under `weights:` in flint.yaml) read-only and shared from the
 * node's weight store. The mapping lives as long as the worker and is shared by every replica on
 * the node: snapshots reference it instead of copying it, so restore cost does not grow with
 * it. Returns 0 and the address and size, or -1 (unknown name, I/O error; see flint_set_error).
 * Cost: one open+mmap the first time, a lookup afterwards. */
int flint_weights_map (flint_ctx_t *ctx, const char *name, const void **data_out, size_t *len_out);

/* A value from the manifest's `config:` map, or NULL. Secrets listed in the manifest arrive as
 * environment variables instead (getenv). */
const char *flint_config (flint_ctx_t *ctx, const char *key);

/* Identity of this replica: changes in every replica restored from a snapshot. NUL-terminated. */
const char *flint_replica_id (flint_ctx_t *ctx);

/* A pointer the function may keep across calls (its own state). */
void flint_set_user (flint_ctx_t *ctx, void *user);
void *flint_user (flint_ctx_t *ctx);

/* Writes one log line to the endpoint's log (same as writing to stderr, but tagged with the
 * request id when called during an invoke). */
void flint_log_line (flint_ctx_t *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif

#endif
