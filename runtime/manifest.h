/* flint.yaml: the manifest of a deployable function or model.
 *
 * Parsed with libyaml into a plain struct. Every error names the file, line, column and field:
 *   "examples/echo/flint.yaml:4:9: field `memory`: expected a size such as 256Mi, got `lots`".
 * Unknown fields are errors (with a suggestion), so a typo never silently falls back to a
 * default. docs/MANIFEST.md documents every field and its default. */
#ifndef FLINT_MANIFEST_H
#define FLINT_MANIFEST_H

#include "flint/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum flint_kind_e {
  FLINT_KIND_NATIVE = 1,
  FLINT_KIND_EXEC = 2,
  FLINT_KIND_LLM = 3,
} flint_kind_t;

typedef struct flint_kv_s {
  char *key;
  char *value;
} flint_kv_t;

/* Autoscaling and request-handling knobs: live-updatable with `flint scale`. */
typedef struct flint_scale_s {
  uint32_t min_replicas;        /* default 0: scale to zero */
  uint32_t max_replicas;        /* default 4 */
  uint32_t target_concurrency;  /* in-flight requests per replica the autoscaler aims for; default = max_concurrency */
  uint32_t max_concurrency;     /* hard per-replica cap; default 1 (native/exec), 8 (llm) */
  uint32_t buffer_replicas;     /* idle headroom while active; default 0 */
  uint64_t scaledown_window_ms; /* default 60 s */
  uint64_t timeout_ms;          /* per request; default 60 s */
  uint64_t startup_timeout_ms;  /* default 60 s (300 s for llm) */
  uint32_t retries;             /* for idempotent functions; default 0 */
  uint32_t queue_size;          /* activator FIFO bound per endpoint; default 1000 */
  uint32_t parked_replicas;     /* restored replicas kept frozen (parked tier); default 1 */
} flint_scale_t;

typedef struct flint_resources_s {
  uint64_t memory_bytes;  /* default 256 MiB */
  uint32_t cpu_millis;    /* default 1000 (one core); llm: 0 = no limit (every core) */
  uint32_t pids;          /* default 128 */
  uint64_t tmp_bytes;     /* default 64 MiB */
  uint32_t nofile;        /* default 1024 */
  bool gpu;
} flint_resources_t;

typedef struct flint_manifest_s {
  char *name;
  flint_kind_t kind;
  char *function;            /* native: .so, exec: executable (bundle-relative) */
  char **args;               /* exec: extra arguments */
  size_t n_args;
  char *model;               /* llm: model directory (bundle-relative), default "." */
  char *draft_model;         /* llm: optional draft model directory */
  flint_kv_t *config;
  size_t n_config;
  flint_kv_t *weights;       /* name → bundle-relative file */
  size_t n_weights;
  char **secrets;
  size_t n_secrets;
  flint_resources_t resources;
  bool network;
  bool snapshot;             /* default true */
  uint64_t max_payload;      /* default 6 MiB */
  uint32_t threads;          /* threads running invokes in a worker; 0 = max_concurrency */
  char *canary;              /* optional payload sent to a new replica before it takes traffic */
  flint_scale_t scale;
} flint_manifest_t;

/* Parses `len` bytes of YAML. `path` is used in messages only. On success returns 0 and a
 * manifest owned by the caller (flint_manifest_free). On error returns -1 with FLINT_EINVAL
 * and "path:line:col: field `x`: ..." in `err`. */
int flint_manifest_parse (const char *text, size_t len, const char *path, flint_manifest_t **out,
                          flint_error_t *err);
void flint_manifest_free (flint_manifest_t *m);

/* Validates an endpoint name: 1-63 of [a-z0-9-], starting with a letter or digit. */
bool flint_name_valid (const char *name);

/* Validates a bundle-relative path: relative, no "..", no empty components. */
bool flint_relpath_valid (const char *path);

/* Applies one `key=value` knob (as given to `flint scale`) to `s`. Returns 0, or -1 with
 * FLINT_EINVAL naming the knob. Knob names are those of the manifest. */
int flint_scale_set (flint_scale_t *s, const char *key, const char *value, flint_error_t *err);

/* Checks cross-field constraints (min <= max, ...). Returns 0 or -1 with FLINT_EINVAL. */
int flint_scale_validate (const flint_scale_t *s, flint_error_t *err);

const char *flint_kind_name (flint_kind_t kind);

#endif
