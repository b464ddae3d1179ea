/* The registry: flintd's durable state in SQLite (WAL), STATE/registry.db.
 *
 * It records endpoints (name, serving version, live scale knobs), their immutable versions
 * (manifest text, bundle digest, state) and snapshot records (image files with checksums).
 * Bundles themselves live on disk by digest (store.h). Everything else flintd knows (replicas,
 * queues, metrics) is runtime state rebuilt after a restart.
 *
 * All calls are synchronous and meant for the control plane on flintd's loop thread (a commit
 * in WAL mode with synchronous=NORMAL costs tens of microseconds); none is on the invoke path. */
#ifndef FLINT_REGISTRY_H
#define FLINT_REGISTRY_H

#include "manifest.h"
#include "flint/error.h"

#include <stdint.h>

typedef struct flint_registry_s flint_registry_t;

typedef struct flint_version_rec_s {
  char *endpoint;
  uint64_t version;
  char *state;          /* "deploying", "ready", "failed" */
  char *manifest;       /* flint.yaml text as deployed */
  char *manifest_path;
  char *bundle_sha256;
  int64_t created_ms;
  char *error;          /* why it failed, or "" */
} flint_version_rec_t;

typedef struct flint_endpoint_rec_s {
  char *name;
  uint64_t current_version;  /* 0 = none ready yet */
  char *scale;               /* knobs as "key=value\n" lines (flint_scale_format) */
  int64_t created_ms;
} flint_endpoint_rec_t;

typedef struct flint_snapshot_file_s {
  char *path;        /* relative to the image directory */
  uint64_t size;
  char *sha256;
} flint_snapshot_file_t;

typedef struct flint_snapshot_rec_s {
  char *endpoint;
  uint64_t version;
  char *dir;
  uint64_t size_bytes;
  double dump_ms;
  int64_t created_ms;
  char *meta;        /* free-form key=value lines (CRIU version, kernel, GPU model, ...) */
  flint_snapshot_file_t *files;
  size_t n_files;
} flint_snapshot_rec_t;

/* Opens (creating and migrating) the registry at `path`. */
int flint_registry_open (const char *path, flint_registry_t **out, flint_error_t *err);
void flint_registry_close (flint_registry_t *r);

/* Endpoint rows. put inserts or updates name's scale knobs (created_ms kept on update). */
int flint_registry_put_endpoint (flint_registry_t *r, const char *name, const char *scale, flint_error_t *err);
int flint_registry_set_current (flint_registry_t *r, const char *name, uint64_t version, flint_error_t *err);
/* Removes the endpoint, its versions and snapshot records. */
int flint_registry_delete_endpoint (flint_registry_t *r, const char *name, flint_error_t *err);

/* Allocates the next version number of `endpoint` and inserts the row (state "deploying"). */
int flint_registry_add_version (flint_registry_t *r, const flint_version_rec_t *rec, uint64_t *version_out,
                                flint_error_t *err);
int flint_registry_set_version_state (flint_registry_t *r, const char *endpoint, uint64_t version,
                                      const char *state, const char *error, flint_error_t *err);
/* Marks every "deploying" version "failed" with `reason` (after a restart). Returns the count. */
int flint_registry_fail_deploying (flint_registry_t *r, const char *reason, flint_error_t *err);

/* Enumerates endpoints and, for each, its versions (newest first). The records passed to the
 * callbacks are owned by the registry and valid during the call only. */
typedef int (*flint_registry_endpoint_cb) (void *ud, const flint_endpoint_rec_t *ep);
typedef int (*flint_registry_version_cb) (void *ud, const flint_version_rec_t *v);
int flint_registry_list_endpoints (flint_registry_t *r, flint_registry_endpoint_cb cb, void *ud, flint_error_t *err);
int flint_registry_list_versions (flint_registry_t *r, const char *endpoint, flint_registry_version_cb cb, void *ud,
                                  flint_error_t *err);

/* How many versions (of any endpoint) use the bundle `sha256`. */
int flint_registry_bundle_refs (flint_registry_t *r, const char *sha256, uint64_t *count_out, flint_error_t *err);

/* Snapshot records (one per endpoint version). get returns 0 and fills *out (free with
 * flint_snapshot_rec_free), or -1 with FLINT_ENOTFOUND. */
int flint_registry_put_snapshot (flint_registry_t *r, const flint_snapshot_rec_t *s, flint_error_t *err);
int flint_registry_get_snapshot (flint_registry_t *r, const char *endpoint, uint64_t version,
                                 flint_snapshot_rec_t *out, flint_error_t *err);
int flint_registry_delete_snapshot (flint_registry_t *r, const char *endpoint, uint64_t version, flint_error_t *err);
void flint_snapshot_rec_free (flint_snapshot_rec_t *s);

#endif
