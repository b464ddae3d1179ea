/* Metrics kept by flintd: per endpoint request counts by status, latency and queue-wait
 * histograms, cold starts by tier with per-phase durations, scale events; rendered in the
 * Prometheus text format at GET /metrics and summarised by `flint status`.
 *
 * Histograms use fixed millisecond buckets (Prometheus needs cumulative buckets); quantiles
 * shown to people (p50/p99) come from a ring of the most recent samples, which is exact for
 * what it holds and cheap to keep. */
#ifndef FLINT_METRICS_H
#define FLINT_METRICS_H

#include "flint/buf.h"
#include "flint/error.h"

#include <stddef.h>
#include <stdint.h>

#define FLINT_HIST_BUCKETS 18
#define FLINT_RING_SAMPLES 256

typedef struct flint_hist_s {
  uint64_t buckets[FLINT_HIST_BUCKETS]; /* non-cumulative counts per bucket (last = +Inf) */
  uint64_t count;
  double sum_ms;
  double ring[FLINT_RING_SAMPLES];
  size_t ring_len, ring_head;
} flint_hist_t;

extern const double flint_hist_bounds_ms[FLINT_HIST_BUCKETS - 1];

void flint_hist_observe (flint_hist_t *h, double ms);
/* q in [0,1] over the recent samples; 0 when empty. */
double flint_hist_quantile (const flint_hist_t *h, double q);
/* Appends `name`_bucket/_sum/_count lines (seconds, as Prometheus wants) with `labels`
 * (e.g. `endpoint="echo"`, may be empty). */
void flint_hist_render (const flint_hist_t *h, flint_buf_t *out, const char *name, const char *labels);

/* Cold-start phases recorded per tier. */
enum {
  FLINT_PHASE_SANDBOX,
  FLINT_PHASE_RESTORE,
  FLINT_PHASE_RECONNECT,
  FLINT_PHASE_CANARY,
  FLINT_PHASE_INIT,
  FLINT_PHASE_TOTAL,
  /* GPU and llm restores (issue 7): the CUDA driver's restore, the weight copy and the KV
   * re-allocation of an llm's after_restore hook; and for every tier, start → first output */
  FLINT_PHASE_CUDA_RESTORE,
  FLINT_PHASE_WEIGHT_COPY,
  FLINT_PHASE_KV_ALLOC,
  FLINT_PHASE_FIRST_TOKEN,
  FLINT_PHASE_COUNT,
};
extern const char *const flint_phase_names[FLINT_PHASE_COUNT];

typedef struct flint_ep_metrics_s {
  uint64_t requests_by_code[17];
  flint_hist_t latency;       /* arrival → answer */
  flint_hist_t queue_wait;    /* arrival → dispatch, for requests that queued */
  uint64_t retries;
  uint64_t cold_starts[3];    /* by tier: cold, image, parked */
  flint_hist_t phases[3][FLINT_PHASE_COUNT];
  uint64_t scale_up, scale_down;
  uint64_t replica_failures;  /* replicas that died or failed to start */
  uint64_t tier_fallbacks;    /* a faster tier failed and a slower one served */
} flint_ep_metrics_t;

struct flint_endpoint_s;
void flint__metrics_request_done (struct flint_endpoint_s *ep, flint_status_t code, uint64_t arrived_ns,
                                  uint64_t dispatched_ns);
void flint__metrics_queue_wait (struct flint_endpoint_s *ep, uint64_t arrived_ns);
void flint__metrics_retry (struct flint_endpoint_s *ep);

#endif
