/* Histograms and the per-endpoint recording hooks. The Prometheus rendering of the whole
 * daemon lives in metrics_render.c. */
#include "metrics.h"
#include "daemon.h"
#include "flint/util.h"

#include <stdlib.h>
#include <string.h>

const double flint_hist_bounds_ms[FLINT_HIST_BUCKETS - 1] = {
  0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
};

const char *const flint_phase_names[FLINT_PHASE_COUNT] = {
  "sandbox", "restore", "reconnect", "canary", "init", "total", "cuda_restore", "weight_copy", "kv_alloc", "first_token",
};

void
flint_hist_observe (flint_hist_t *h, double ms)
{
  size_t i = 0;
  while (i < FLINT_HIST_BUCKETS - 1 && ms > flint_hist_bounds_ms[i])
    i++;
  h->buckets[i]++;
  h->count++;
  h->sum_ms += ms;
  h->ring[h->ring_head] = ms;
  h->ring_head = (h->ring_head + 1) % FLINT_RING_SAMPLES;
  if (h->ring_len < FLINT_RING_SAMPLES)
    h->ring_len++;
}

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

double
flint_hist_quantile (const flint_hist_t *h, double q)
{
  double tmp[FLINT_RING_SAMPLES];
  size_t idx;

  if (h->ring_len == 0)
    return 0;
  memcpy (tmp, h->ring, h->ring_len * sizeof (double));
  qsort (tmp, h->ring_len, sizeof (double), cmp_double);
  idx = (size_t) (q * (double) (h->ring_len - 1) + 0.5);
  return tmp[idx];
}

void
flint_hist_render (const flint_hist_t *h, flint_buf_t *out, const char *name, const char *labels)
{
  uint64_t cum = 0;
  const char *sep = labels && *labels ? "," : "";

  for (size_t i = 0; i < FLINT_HIST_BUCKETS; i++)
    {
      cum += h->buckets[i];
      if (i < FLINT_HIST_BUCKETS - 1)
        flint_buf_printf (out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels ? labels : "", sep,
                          flint_hist_bounds_ms[i] / 1000.0, (unsigned long long) cum);
      else
        flint_buf_printf (out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels ? labels : "", sep,
                          (unsigned long long) cum);
    }
  flint_buf_printf (out, "%s_sum{%s} %.9g\n", name, labels ? labels : "", h->sum_ms / 1000.0);
  flint_buf_printf (out, "%s_count{%s} %llu\n", name, labels ? labels : "", (unsigned long long) h->count);
}

void
flint__metrics_request_done (struct flint_endpoint_s *ep, flint_status_t code, uint64_t arrived_ns,
                             uint64_t dispatched_ns)
{
  (void) dispatched_ns;
  if ((unsigned) code < 17)
    ep->metrics.requests_by_code[code]++;
  flint_hist_observe (&ep->metrics.latency, (double) (flint_now_ns () - arrived_ns) / 1e6);
}

void
flint__metrics_queue_wait (struct flint_endpoint_s *ep, uint64_t arrived_ns)
{
  flint_hist_observe (&ep->metrics.queue_wait, (double) (flint_now_ns () - arrived_ns) / 1e6);
}

void
flint__metrics_retry (struct flint_endpoint_s *ep)
{
  ep->metrics.retries++;
}
