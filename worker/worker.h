/* flint-worker internals: the frame loop that hosts one function inside a sandbox.
 *
 * A worker talks to flintd over one stream socket (fd 3 by default) using the frames of
 * proto/flint/worker/v1/worker.proto. It loads one function through a `loader` (native shared
 * object, executable, or the built-in model engine), runs its init, and then serves invokes
 * until the socket closes. The function sees only the ABI in include/flint/function.h. */
#ifndef FLINT_WORKER_H
#define FLINT_WORKER_H

#include "flint/function.h"
#include "flint/error.h"

#include <stdbool.h>
#include <stdint.h>

/* The entry points of a loaded function, whatever its kind. Unset hooks are NULL. */
typedef struct flint_function_s {
  int (*init) (flint_ctx_t *ctx);
  int (*invoke) (flint_ctx_t *ctx, const flint_input_t *in, flint_output_t *out);
  int (*before_checkpoint) (flint_ctx_t *ctx);
  int (*after_restore) (flint_ctx_t *ctx);
  /* The function's own clean-up when the worker ends normally (flint_fini); may be NULL. */
  void (*fini) (flint_ctx_t *ctx);
  /* Engine metrics for Pong frames (name → value pairs); NULL for plain functions. Writes up to
   * `max` pairs and returns how many. */
  size_t (*stats) (flint_ctx_t *ctx, const char **names, double *values, size_t max);
  /* Phases of the last after_restore hook worth reporting (name → milliseconds, e.g. the
   * engine's weight copy), for the RestoredAck frame; *bytes_out: bytes copied to a device.
   * NULL for plain functions. Writes up to `max` pairs and returns how many. */
  size_t (*restore_phases) (flint_ctx_t *ctx, const char **names, double *values, size_t max, uint64_t *bytes_out);
  /* Releases what the loader acquired (dlclose, child process). May be NULL. */
  void (*unload) (flint_ctx_t *ctx);
  void *loader_state;
} flint_function_t;

/* Loaders: fill `fn` for the function at `path` (inside the sandbox). On failure return -1 with
 * `err` set: FLINT_EPRECONDITION for a function that cannot be hosted (missing entry points,
 * ABI mismatch, not executable), FLINT_EINTERNAL for environment failures. */
int flint__load_native (flint_ctx_t *ctx, const char *path, flint_function_t *fn, flint_error_t *err);
int flint__load_exec (flint_ctx_t *ctx, const char *path, char *const *args, size_t nargs,
                      flint_function_t *fn, flint_error_t *err);
int flint__load_llm (flint_ctx_t *ctx, const char *path, flint_function_t *fn, flint_error_t *err);

/* Runs the worker on channel `chan` until flintd closes it or sends a fatal frame.
 * Returns the process exit status. */
int flint_worker_run (int chan);

/* What the Load frame said, for loaders: concurrency cap, CPU allowance (thousandths of a core,
 * 0 = no limit), the function's path, the draft model directory of an llm (NULL = none). */
uint32_t flint__ctx_max_concurrency (const flint_ctx_t *ctx);
uint32_t flint__ctx_cpu_millis (const flint_ctx_t *ctx);
const char *flint__ctx_path (const flint_ctx_t *ctx);
const char *flint__ctx_draft_path (const flint_ctx_t *ctx);

/* The message set by flint_set_error()/flint_fail() during init or a hook, or "" (for loaders). */
const char *flint__ctx_error (flint_ctx_t *ctx);
void flint__ctx_clear_error (flint_ctx_t *ctx);

#endif
