/* flintd's internal model, shared by the runtime's files (not installed, not for front-ends
 * other than flintd.c).
 *
 *   daemon ──< endpoint ──< version        (immutable deploys; one serves traffic: `current`)
 *                  │  └──< replica          (a running worker of some version)
 *                  └──< request (queued)    (the activator's FIFO, while no replica has room)
 *   replica ──< request (in flight)
 *
 * Everything here lives on the loop thread. Requests come from the gRPC bridge and the HTTP
 * front door through a small sink interface, so dispatch knows nothing of either protocol. */
#ifndef FLINT_DAEMON_H
#define FLINT_DAEMON_H

#include "channel.h"
#include "logs.h"
#include "metrics.h"
#include "manifest.h"
#include "registry.h"
#include "flint/buf.h"
#include "flint/error.h"
#include "flint/list.h"
#include "flint/map.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct flint_daemon_s flint_daemon_t;
typedef struct flint_endpoint_s flint_endpoint_t;
typedef struct flint_version_s flint_version_t;
typedef struct flint_replica_s flint_replica_t;
typedef struct flint_request_s flint_request_t;
typedef struct flint_helper_s flint_helper_t;
typedef struct flint_deploy_s flint_deploy_t;
typedef struct flint_engine_stats_s flint_engine_stats_t;

/* ---- configuration --------------------------------------------------------------------- */

typedef struct flint_daemon_config_s {
  const char *state_dir;      /* durable: registry, bundles, logs, secrets (default /var/lib/flint) */
  const char *run_dir;        /* tmpfs: weight store, snapshot images, sandboxes (default /run/flint) */
  const char *socket_path;    /* gRPC unix socket (default RUN_DIR/flintd.sock) */
  const char *listen_addr;    /* gRPC TCP address (default 127.0.0.1:7470; "" = none) */
  const char *http_addr;      /* HTTP front door (default 127.0.0.1:7471; "" = none) */
  const char *libexec_dir;    /* flint-worker, flint-spawner, flint-snapshotter */
  bool isolate;               /* sandboxes (default true); false = development mode */
  bool snapshots;             /* CRIU snapshots (default true) */
  uint64_t max_bundle_bytes;  /* default 16 GiB */
} flint_daemon_config_t;

/* ---- requests ---------------------------------------------------------------------------- */

/* Where a request's answer goes (gRPC call, HTTP request). Called on the loop. `done` is
 * called exactly once; the request is freed after it returns. */
typedef struct flint_sink_ops_s {
  void (*chunk) (flint_request_t *req, const uint8_t *data, size_t len);
  void (*done) (flint_request_t *req, flint_status_t code, const char *msg, const uint8_t *data, size_t len);
} flint_sink_ops_t;

typedef enum flint_request_state_e {
  FLINT_REQ_NEW,
  FLINT_REQ_QUEUED,      /* in the endpoint's FIFO */
  FLINT_REQ_DISPATCHED,  /* sent to a replica */
  FLINT_REQ_DONE,
} flint_request_state_t;

struct flint_request_s {
  flint_daemon_t *d;
  flint_endpoint_t *ep;
  flint_replica_t *replica;      /* while dispatched */
  flint_list_t link;             /* in ep->queue or replica->inflight */
  uint64_t id;                   /* unique in this flintd; the worker's request_id */
  flint_request_state_t state;
  uint8_t *payload;
  size_t len;
  bool streaming;
  bool chunks_sent;              /* a streamed request that produced output cannot be retried */
  uint64_t arrived_ns;
  uint64_t dispatched_ns;
  uint64_t deadline_ns;          /* absolute, flint_now_ns scale */
  uint64_t not_before_ns;        /* a retry waits in the queue until then (backoff) */
  uv_timer_t timer;              /* deadline; the request is freed from its close callback */
  uint32_t attempts;
  uint64_t served_version;       /* who answered (for the reply) */
  char served_replica[48];
  const flint_sink_ops_t *sink;
  void *sink_data;
};

/* ---- versions, replicas, endpoints ------------------------------------------------------- */

typedef enum flint_version_state_e {
  FLINT_VERSION_DEPLOYING,
  FLINT_VERSION_READY,
  FLINT_VERSION_FAILED,
} flint_version_state_t;

typedef enum flint_snapshot_state_e {
  FLINT_SNAPSHOT_NONE,      /* not taken (disabled, or not yet) */
  FLINT_SNAPSHOT_TAKING,
  FLINT_SNAPSHOT_READY,
  FLINT_SNAPSHOT_FAILED,
} flint_snapshot_state_t;

/* A version's snapshot: its image on the node and what restores from it have cost. */
typedef struct flint_snapshot_s {
  flint_snapshot_state_t state;
  char *image_dir;                /* RUN/images/<endpoint>-<version> */
  uint64_t size_bytes;
  double dump_ms;
  int64_t created_ms;
  char *meta;                     /* "key=value\n" lines: CRIU version, kernel, worker digest, ... */
  flint_snapshot_file_t *files;   /* with their digests, as recorded in the registry */
  size_t n_files;
  char error[512];                /* why there is none (FAILED), for status and deploy output */
  flint_hist_t restore_ms;        /* Restore request → replica ready, image tier */
  flint_hist_t unpark_ms;         /* parked → ready */
  uint64_t restores;
  uint32_t restore_failures;      /* consecutive: the image tier is skipped after 3 */
  flint_deploy_t *deploy;         /* the deploy waiting for the snapshot step (TAKING) */
  flint_replica_t *source;        /* the replica being checkpointed (TAKING) */
} flint_snapshot_t;

struct flint_version_s {
  flint_endpoint_t *ep;
  flint_list_t link;             /* in ep->versions, newest first */
  uint64_t number;
  flint_version_state_t state;
  char *manifest_text;
  char *manifest_path;
  flint_manifest_t *manifest;    /* parsed (NULL for versions that failed to parse) */
  char *bundle_sha256;
  char *bundle_dir;              /* STATE/bundles/<sha256> */
  char *weights_dir;             /* RUN/weights/versions/<endpoint>-<version>, or NULL */
  int64_t created_ms;
  char *error;
  flint_snapshot_t snap;
};

typedef enum flint_replica_state_e {
  FLINT_REPLICA_STARTING,   /* sandbox requested / worker connecting / function init, or
                               being restored / resumed (tier image or parked) */
  FLINT_REPLICA_PARKED,     /* restored (or checkpointed) and frozen: the parked tier */
  FLINT_REPLICA_READY,      /* takes traffic */
  FLINT_REPLICA_DRAINING,   /* finishes in-flight requests, takes no new ones */
  FLINT_REPLICA_STOPPING,   /* killed; waiting for the exit report */
  FLINT_REPLICA_DEAD,
} flint_replica_state_t;

typedef enum flint_tier_e {
  FLINT_TIER_COLD,
  FLINT_TIER_IMAGE,
  FLINT_TIER_PARKED,
} flint_tier_t;

struct flint_replica_s {
  flint_daemon_t *d;
  flint_endpoint_t *ep;
  flint_version_t *version;
  flint_list_t link;              /* in ep->replicas */
  char id[48];
  flint_replica_state_t state;
  flint_tier_t tier;
  flint_helper_t *owner;          /* the helper process that created it (spawner/snapshotter) */
  flint_channel_t *chan;
  flint_logpipe_t *log_out;       /* the worker's stdout and stderr */
  flint_logpipe_t *log_err;
  int pid;
  uint32_t inflight;
  flint_list_t requests;          /* in flight on this replica */
  uint64_t started_ns;
  uint64_t ready_ns;
  uint64_t last_active_ns;
  uint64_t startup_limit_ms;      /* the startup timer's current limit (startup_timeout, or the
                                     shorter one of a restore) */
  double phases_ms[12];           /* sandbox, init, ... (FLINT_RPHASE_*) */
  bool restore_phases_reported;   /* the worker's RestoredAck carried engine phases (llm) */
  uint64_t first_output_ns;       /* its first answer (chunk or result) to a request, 0 before */
  uint64_t completed;
  flint_hist_t latency;           /* of requests this replica answered */
  uv_timer_t *timer;              /* startup timeout / exit-report wait */
  bool channel_closed;
  bool exited;
  char exit_reason[256];
  bool oom_killed;
  flint_deploy_t *deploy;         /* the deploy waiting for this replica to become ready */
  bool counted_starting;          /* counted in ep->replicas_starting (see replica.c) */
  bool checkpointing;             /* its snapshot is being taken */
  bool parking;                   /* restored for the parked pool, not for a request */
  bool resuming;                  /* restored or unparked: waiting for RestoredAck, then the canary */
  uint64_t resume_ns;             /* when the Restored frame was sent */
  uint64_t canary_ns;             /* when the canary was sent */
  uint64_t canary_seq;            /* the canary Ping's seq */
  uint64_t canary_req;            /* the canary Invoke's request id (manifest `canary:`), or 0 */
  int canary_pending;             /* canary answers still expected */
  /* the sandbox's setup phases of a cold start (Spawned.phases_ms), for `flint status` */
  char sandbox_phase_names[8][12];
  double sandbox_phases_ms[8];
  uint32_t n_sandbox_phases;
  flint_engine_stats_t *engine_stats; /* llm: the engine's last report (engine_stats.c) */
};

/* Indexes of flint_replica_t.phases_ms (milliseconds of its start, by tier: see snapshot.c). */
enum {
  FLINT_RPHASE_SANDBOX,           /* cold: the spawner's sandbox; image: the snapshotter's work but CRIU */
  FLINT_RPHASE_CONNECT,           /* cold: Hello; image/parked: Restored sent → RestoredAck */
  FLINT_RPHASE_INIT,              /* cold: the function's init; image/parked: its after_restore hook */
  FLINT_RPHASE_TOTAL,             /* start → ready */
  FLINT_RPHASE_RESTORE,           /* image: CRIU's restore; parked: the thaw */
  FLINT_RPHASE_CANARY,            /* image/parked: canary sent → passed */
  FLINT_RPHASE_CUDA,              /* image: the CUDA driver's restore of the process (GPU workers) */
  FLINT_RPHASE_WEIGHTS,           /* image: weights mapped and copied back (llm, in the hook) */
  FLINT_RPHASE_KV,                /* image: KV caches re-created (llm, in the hook) */
  FLINT_RPHASE_FIRST_TOKEN,       /* start → the first output of its first request */
};

/* The autoscaler's view of one endpoint (autoscaler.c, docs/AUTOSCALING.md): observed
 * concurrency (in-flight + queued) integrated over time and kept as one average per tick, the
 * panic state, the last decision, and the startup backoff. */
#define FLINT_AS_TICK_MS 100
#define FLINT_AS_SAMPLES 600 /* 60 s of ticks: the longest stable window */

typedef struct flint_autoscale_s {
  uint64_t last_ns;               /* last integration step */
  uint64_t period_start_ns;       /* start of the tick period being integrated */
  double area;                    /* ∫ concurrency dt over that period (request·ns) */
  float samples[FLINT_AS_SAMPLES];/* average concurrency per tick period, ring */
  uint32_t nsamples, head;
  uint64_t last_busy_ns;          /* last moment concurrency was above zero */
  uint64_t panic_until_ns;        /* panicking while now < this */
  uint32_t desired;               /* last decision */
  double stable_conc, panic_conc; /* averages behind it */
  uint32_t start_failures;        /* consecutive startup failures (deploys excluded) */
  uint64_t next_start_ns;         /* backoff: no replica starts before this */
  char start_error[512];          /* the last startup failure */
} flint_autoscale_t;

struct flint_endpoint_s {
  flint_daemon_t *d;
  char *name;
  flint_version_t *current;       /* the ready version serving traffic, or NULL */
  flint_list_t versions;
  flint_list_t replicas;
  flint_list_t queue;             /* activator FIFO of FLINT_REQ_QUEUED requests */
  uint32_t queue_len;
  flint_scale_t scale;            /* live knobs */
  int64_t created_ms;
  bool deleting;
  uint32_t holds;                 /* > 0 while a caller walks the endpoint: it is not reaped */
  flint_deploy_t *deploying;      /* at most one deploy per endpoint at a time */
  flint_version_t *deploying_version; /* the version that deploy created, once it exists */
  char last_error[512];
  flint_logbook_t *logbook;
  /* counters since start */
  uint64_t requests_ok, requests_failed;
  uint64_t cold_starts;
  uint32_t replicas_starting;
  flint_ep_metrics_t metrics;
  flint_autoscale_t as;
};

/* ---- helper processes ---------------------------------------------------------------------- */

typedef void (*flint_helper_frame_cb) (flint_helper_t *h, const uint8_t *payload, size_t len);
typedef void (*flint_helper_lost_cb) (flint_helper_t *h);
struct Flint__Node__V1__HelperStatus;
typedef void (*flint_helper_status_cb) (flint_helper_t *h, const struct Flint__Node__V1__HelperStatus *st);

/* A supervised helper process (flint-spawner, flint-snapshotter) with its framed socket. */
struct flint_helper_s {
  flint_daemon_t *d;
  const char *name;
  char *argv[16];
  uv_process_t *proc;
  flint_channel_t *chan;
  bool up;
  bool ready;                     /* it sent an ok HelperStatus */
  char status[512];               /* its last HelperStatus message */
  unsigned restarts;
  bool stopped;                   /* flint__helper_stop'ed: not restarted when it exits */
  uint64_t last_start_ns;
  uv_timer_t *restart_timer;
  flint_helper_frame_cb frame_cb;
  flint_helper_lost_cb lost_cb;
  flint_helper_status_cb status_cb; /* optional: each HelperStatus, before `ready` is updated */
};

/* ---- the daemon ---------------------------------------------------------------------------- */

struct flint_daemon_s {
  uv_loop_t *loop;
  flint_daemon_config_t cfg;
  char *worker_path;
  flint_registry_t *reg;
  struct flint_grpc_server_s *grpc;
  flint_helper_t spawner;
  flint_helper_t snapshotter;
  char snapshots_off[512];        /* why snapshots are unavailable ("" when they are) */
  char criu_version[32];          /* from the snapshotter's status */
  char worker_sha[65];            /* digest of flint-worker: an image of another binary is stale */
  char fault[128];                /* FLINT_FAULT: failures to inject (tests), comma-separated */
  flint_map_t endpoints;          /* name → flint_endpoint_t */
  flint_map_t replicas;           /* id → flint_replica_t */
  uint64_t next_request_id;
  uint64_t next_replica_seq;
  bool shutting_down;
  uint64_t started_ns;
  uv_signal_t *sig_term, *sig_int;
  struct flint_rpc_s *health_watch[64];
  flint_list_t log_streams;       /* Logs RPCs in progress */
  flint_list_t deploys;           /* Deploy RPCs in progress (deploy.c) */
  uv_timer_t *tick;               /* autoscaler period */
  uv_timer_t *engine_tick;        /* pings llm replicas for engine statistics */
  struct flint_http_s *http;      /* the HTTP front door, or NULL */
};

/* ---- cross-file internals (flint__ prefix) ------------------------------------------------- */

/* daemon.c */
/* Finds helper program `name` (flint-worker, flint-spawner, ...); see daemon.c for the order. */
int flint__find_helper (const char *libexec_dir, const char *name, char *out, size_t len, flint_error_t *err);
int flint__daemon_path (const flint_daemon_t *d, char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* endpoint.c */
flint_endpoint_t *flint__endpoint_get (flint_daemon_t *d, const char *name);
flint_endpoint_t *flint__endpoint_create (flint_daemon_t *d, const char *name);
int flint__endpoints_load (flint_daemon_t *d, flint_error_t *err);
flint_version_t *flint__version_new (flint_endpoint_t *ep, uint64_t number, const char *manifest_text,
                                     const char *manifest_path, const char *bundle_sha256, flint_error_t *err);
void flint__version_free (flint_version_t *v);
/* Frees a version that is neither current nor being deployed once no replica uses it. */
void flint__version_maybe_free (flint_version_t *v);
/* Makes `v` the serving version; old versions' replicas drain. */
void flint__endpoint_switch (flint_endpoint_t *ep, flint_version_t *v);
/* Deletes the endpoint: new requests fail, in-flight ones finish, then everything is removed. */
int flint__endpoint_delete (flint_endpoint_t *ep, uint64_t *versions_out, flint_error_t *err);
/* Stops the endpoint's running replicas now (idle ones at once, busy ones after their requests):
 * the next request starts one by the fastest tier. Parked replicas stay. Returns how many. */
uint32_t flint__endpoint_drain (flint_endpoint_t *ep);
/* Frees the endpoint once it is deleting and has no replicas and no requests left. */
void flint__endpoint_maybe_reap (flint_endpoint_t *ep);
void flint__endpoints_free (flint_daemon_t *d);
/* Persists the endpoint's live knobs. */
int flint__endpoint_save_scale (flint_endpoint_t *ep, flint_error_t *err);

/* replica.c */
flint_replica_t *flint__replica_start (flint_endpoint_t *ep, flint_version_t *v, flint_error_t *err);
void flint__replica_stop (flint_replica_t *r, const char *why);
void flint__replica_on_helper_frame (flint_helper_t *h, const uint8_t *payload, size_t len);
void flint__replicas_helper_lost (flint_helper_t *h);
bool flint__replica_has_room (const flint_replica_t *r);
const char *flint__replica_state_name (flint_replica_state_t s);
const char *flint__tier_name (flint_tier_t t);

/* dispatch.c */
flint_request_t *flint__request_new (flint_daemon_t *d, const uint8_t *payload, size_t len, bool streaming,
                                     const flint_sink_ops_t *sink, void *sink_data);
/* Routes the request to endpoint `name`; on any failure completes it (sink->done) at once. */
void flint__dispatch (flint_request_t *req, const char *name, uint64_t client_deadline_ns);
/* The client went away: the request leaves the queue or is cancelled in its worker. */
void flint__request_cancel (flint_request_t *req);
/* A replica got room (became ready, finished a request): feed it from the endpoint's queue. */
void flint__dispatch_pump (flint_endpoint_t *ep);
/* Completes a request (exactly once) and frees it. */
void flint__request_complete (flint_request_t *req, flint_status_t code, const char *msg, const uint8_t *data,
                              size_t len);
/* A replica died: its in-flight requests fail (or are retried). */
void flint__dispatch_replica_lost (flint_replica_t *r, const char *reason, flint_status_t code);
/* Requests are waiting: lets the autoscaler start replicas for them now (flint__autoscale_up). */
void flint__dispatch_scale_for_queue (flint_endpoint_t *ep);

/* snapshot.c */
/* Starts the snapshotter helper, or records in d->snapshots_off why snapshots are unavailable
 * (disabled, no sandboxes, CRIU missing or too old, kernel without features): then every
 * endpoint starts cold. Then finds, verifies and keeps (or discards) the images of the loaded
 * endpoints' current versions. */
void flint__snapshots_start (flint_daemon_t *d);
void flint__snapshots_stop (flint_daemon_t *d);
/* After a deploy's first replica is ready: checkpoints it (before-checkpoint hook, CRIU dump,
 * after-restore hook in the original), or not and says why; then calls
 * flint__deploy_snapshot_done exactly once. */
void flint__snapshot_take (flint_deploy_t *dep, flint_replica_t *r);
/* Starts one more replica of the current version by the fastest tier available (parked, image,
 * cold), falling back down the tiers on failure with a logged reason. NULL with `err` when
 * none could start. */
flint_replica_t *flint__replica_scale_up (flint_endpoint_t *ep, flint_error_t *err);
/* Removes a version's image and its record (version retired or endpoint deleted). */
void flint__snapshot_discard (flint_daemon_t *d, flint_version_t *v, const char *why);
/* Frees what the snapshot record holds in memory (the version is being freed). */
void flint__snapshot_release (flint_snapshot_t *s);
/* Removes the image directories of every version of endpoint `name` (deleted endpoint). */
void flint__snapshot_remove_endpoint_images (flint_daemon_t *d, const char *name);
/* Keeps the parked pool of the current version at its target (scale.parked_replicas). */
void flint__snapshot_keep_parked (flint_endpoint_t *ep);
/* A replica of a faster tier (image, parked) failed before it became ready (`why`): counts it
 * and, when a request was waiting for it, starts a replacement one tier down. */
void flint__snapshot_start_failed (flint_replica_t *r, const char *why);
/* The replica being checkpointed died or was lost. */
void flint__snapshot_source_lost (flint_replica_t *r, const char *why);
/* Worker frames of the snapshot conversation (replica.c routes them here). */
void flint__snapshot_on_checkpoint_ready (flint_replica_t *r, bool ok, const char *error, double hook_ms);
void flint__snapshot_on_restored_ack (flint_replica_t *r, bool ok, const char *error, double hook_ms);
void flint__snapshot_on_pong (flint_replica_t *r, uint64_t seq);
/* A Result for the canary Invoke; true when `request_id` was the canary's. */
bool flint__snapshot_on_canary_result (flint_replica_t *r, uint64_t request_id, int code, const char *message);
/* Frames from the snapshotter helper (Dumped, Restored; Exited goes on to replica.c). */
void flint__snapshot_on_helper_frame (flint_helper_t *h, const uint8_t *payload, size_t len);
/* True when FLINT_FAULT names `point` (tests). */
bool flint__fault (const flint_daemon_t *d, const char *point);

/* replica.c, for snapshot.c */
/* A replica record for a worker some helper will create (STARTING, startup timer running,
 * counted in replicas_starting, listed in the endpoint and the daemon's map). */
flint_replica_t *flint__replica_alloc (flint_endpoint_t *ep, flint_version_t *v, flint_tier_t tier,
                                       flint_helper_t *owner);
/* Fills a SandboxSpec for a replica of `v` (pointing into `v` and the returned env, which the
 * caller frees with flint__sandbox_spec_clear). */
struct Flint__Node__V1__SandboxSpec;
int flint__sandbox_spec_fill (flint_replica_t *r, struct Flint__Node__V1__SandboxSpec *spec, char ***env_out,
                              size_t *nenv_out, char *hostname, size_t hostname_len, flint_error_t *err);
void flint__sandbox_spec_clear (char **env, size_t nenv);
/* Wires a replica to its worker: the channel and the two log pipes (fds owned after the call,
 * closed on failure). 0 or -errno. */
int flint__replica_attach (flint_replica_t *r, int channel, int out_fd, int err_fd);
/* The worker is up and passed its checks: the replica takes traffic. */
void flint__replica_ready (flint_replica_t *r, double init_ms);
/* A STARTING replica could not start (any tier): the reason is recorded (for faster tiers
 * snapshot.c falls back down the tiers), then its worker is stopped (`why` for the log). */
void flint__replica_fail_start (flint_replica_t *r, flint_status_t code, const char *msg, const char *why);
/* ep->replicas_starting bookkeeping for replicas leaving or re-entering STARTING (parking,
 * unparking): idempotent. */
void flint__replica_count_starting (flint_replica_t *r);
void flint__replica_uncount_starting (flint_replica_t *r);
/* (Re)arms the replica's startup timer: on expiry a STARTING replica fails to start. */
void flint__replica_arm_startup_timer (flint_replica_t *r, uint64_t ms);
/* Drops a replica whose worker never existed or is known gone (no Kill, no exit report). */
void flint__replica_discard (flint_replica_t *r, const char *why);
/* Sends the worker its Restored frame (fresh entropy, wall clock, its replica id). */
int flint__replica_send_restored (flint_replica_t *r);
/* Sends a frame to the replica's worker. 0 or -errno. */
struct Flint__Worker__V1__Frame;
int flint__replica_send (flint_replica_t *r, struct Flint__Worker__V1__Frame *f);

/* deploy.c */
/* Answers every deploy in progress (UNAVAILABLE) before the gRPC server goes away; their
 * thread-pool steps still finish and free them, without touching the call again. */
void flint__deploys_shutdown (flint_daemon_t *d);
/* The snapshot step of a deploy is over (snapshot_error "" when one was taken). With r NULL
 * the checkpointed replica was lost and the deploy fails with `snapshot_error`. */
void flint__deploy_snapshot_done (flint_deploy_t *dep, flint_replica_t *r, const char *snapshot_error);
void flint__deploy_replica_ready (flint_deploy_t *dep, flint_replica_t *r);
void flint__deploy_replica_failed (flint_deploy_t *dep, flint_replica_t *r, flint_status_t code, const char *msg);

/* autoscaler.c */
/* Runs one full decision for `ep` (scale up, scale down with draining, keep min): the periodic
 * tick does it, and knob changes call it at once. */
void flint__autoscale_now (flint_endpoint_t *ep);
/* Scale-up only, from the instantaneous concurrency: the activator calls it when requests queue
 * so a burst does not wait for the next tick. Never starts more than max_replicas. */
void flint__autoscale_up (flint_endpoint_t *ep);
/* Integrates the endpoint's concurrency up to now; call before in-flight or queue counts change. */
void flint__autoscale_account (flint_endpoint_t *ep);
/* A replica became ready: the startup backoff resets and the endpoint counts as active.
 * Every path to READY (cold, image, parked) calls it once (replica.c's became_ready). */
void flint__autoscale_replica_ready (flint_replica_t *r);
/* Forgets the endpoint's observed concurrency (both windows, the last busy moment, panic), as
 * if it had been idle for a whole window: `flint drain` scales to zero now, and a replica
 * should not come straight back from the history of the requests it just served. The startup
 * backoff is kept. */
void flint__autoscale_forget (flint_endpoint_t *ep);
/* A replica of the serving version failed to start (not a deploy's probe): backoff grows. */
void flint__autoscale_start_failed (flint_endpoint_t *ep, const char *reason);
/* When no replica can start before `deadline_ns` (startup backoff with nothing live), writes
 * why into `buf` and returns it; NULL when a request may wait in the queue. */
const char *flint__autoscale_blocked (flint_endpoint_t *ep, uint64_t deadline_ns, char *buf, size_t len);
/* Replicas of the current version that are starting or ready to serve (draining ones and ones
 * restored for the parked pool excluded): what max_replicas bounds. */
uint32_t flint__autoscale_live (const flint_endpoint_t *ep);
int flint__autoscaler_start (flint_daemon_t *d);
void flint__autoscaler_stop (flint_daemon_t *d);

/* secrets.c: the environment entries (KEY=VALUE, heap strings) of the secrets the manifest
 * lists; appended to *env (grown) and *n. */
int flint__secrets_env (flint_daemon_t *d, const flint_manifest_t *m, char ***env, size_t *n, flint_error_t *err);

/* engine_stats.c: model-engine statistics of llm replicas (from their Pong frames). */
struct Flint__Worker__V1__Pong;
void flint__engine_stats_update (flint_replica_t *r, const struct Flint__Worker__V1__Pong *pong);
/* Frees the replica's statistics (when it is finalized). */
void flint__engine_stats_forget (flint_replica_t *r);
/* Starts / stops the periodic pings that keep llm replicas' statistics fresh. */
void flint__engine_stats_start (flint_daemon_t *d);
void flint__engine_stats_stop (flint_daemon_t *d);
/* Appends the endpoint's engine metrics (Prometheus text) to `out`; nothing for other kinds. */
void flint__engine_metrics_render (flint_endpoint_t *ep, flint_buf_t *out);

/* api_view.c hooks filled by the snapshot and engine code */
struct Flint__V1__Endpoint;
struct Flint__V1__Snapshot;
void flint__api_fill_snapshot (flint_endpoint_t *ep, struct Flint__V1__Endpoint *m);
/* A flint.v1.Snapshot describing version `v`'s snapshot (heap tree; the caller frees it with
 * flint__v1__snapshot__free_unpacked). */
struct Flint__V1__Snapshot *flint__snapshot_proto (flint_endpoint_t *ep, flint_version_t *v);
void flint__api_fill_engine (flint_endpoint_t *ep, struct Flint__V1__Endpoint *m);

/* helper.c */
int flint__helper_start (flint_helper_t *h, flint_error_t *err);
/* Starts the helper and runs the loop until it reports ready (or fails: -1 with its reason). */
int flint__helper_start_wait (flint_helper_t *h, uint64_t timeout_ms, flint_error_t *err);
/* Handles a HelperStatus frame; true when the frame was one. */
bool flint__helper_status_frame (flint_helper_t *h, const uint8_t *payload, size_t len);
int flint__helper_send (flint_helper_t *h, const ProtobufCMessage *msg, const int *fds, size_t nfds);
void flint__helper_stop (flint_helper_t *h);

/* api_http.c: the HTTP front door on the same loop */
int flint__http_start (flint_daemon_t *d, flint_error_t *err);
/* Stops accepting and asks open connections to close once their answers are out. */
void flint__http_stop (flint_daemon_t *d);
/* Releases the front door once the loop has stopped (after flint__http_stop). */
void flint__http_free (flint_daemon_t *d);

/* metrics_render.c: the whole daemon in the Prometheus text format (GET /metrics). */
void flint__metrics_render (flint_daemon_t *d, flint_buf_t *out);

/* daemon.c (for flintd.c) */
int flint_daemon_new (const flint_daemon_config_t *cfg, flint_daemon_t **out, flint_error_t *err);
int flint_daemon_run (flint_daemon_t *d);
void flint_daemon_free (flint_daemon_t *d);

/* api_grpc.c */
int flint__api_grpc_register (flint_daemon_t *d, flint_error_t *err);

#endif
