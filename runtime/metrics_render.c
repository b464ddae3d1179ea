/* GET /metrics: the whole daemon in the Prometheus text exposition format (version 0.0.4).
 *
 * The format wants every sample of a metric family together under its # HELP / # TYPE lines, so
 * each family is one pass over the endpoints (and their replicas). Endpoints being deleted are
 * left out. Label values are escaped although endpoint names and replica ids never need it. The
 * model engine's families (flint__engine_metrics_render) come last, per endpoint.
 * docs/HTTP.md lists the families. */
#include "daemon.h"
#include "flint/util.h"

#include <stdio.h>
#include <string.h>

typedef void (*family_fn) (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out);

static void
escape_label (flint_buf_t *out, const char *s)
{
  for (; *s; s++)
    {
      if (*s == '\\' || *s == '"')
        flint_buf_putc (out, '\\');
      if (*s == '\n')
        {
          flint_buf_puts (out, "\\n");
          continue;
        }
      flint_buf_putc (out, *s);
    }
}

static void
header (flint_buf_t *out, const char *name, const char *type, const char *help)
{
  flint_buf_printf (out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One family over every live endpoint; `lbl` is `endpoint="NAME"`. */
static void
each_endpoint (flint_daemon_t *d, flint_buf_t *out, family_fn fn)
{
  const char *key;
  void *val;

  for (size_t it = 0; flint_map_next (&d->endpoints, &it, &key, &val);)
    {
      flint_endpoint_t *ep = val;
      flint_buf_t lbl = FLINT_BUF_INIT;
      if (ep->deleting)
        continue;
      flint_buf_puts (&lbl, "endpoint=\"");
      escape_label (&lbl, ep->name);
      flint_buf_putc (&lbl, '"');
      fn (ep, lbl.data, out);
      flint_buf_free (&lbl);
    }
}

static void
f_requests (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  for (int c = 0; c < 17; c++)
    if (c == FLINT_OK || ep->metrics.requests_by_code[c])
      flint_buf_printf (out, "flint_requests_total{%s,code=\"%s\"} %llu\n", lbl, flint_status_name ((flint_status_t) c),
                        (unsigned long long) ep->metrics.requests_by_code[c]);
}

static void
f_latency (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  flint_hist_render (&ep->metrics.latency, out, "flint_request_duration_seconds", lbl);
}

static void
f_queue_len (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  flint_buf_printf (out, "flint_queue_length{%s} %u\n", lbl, ep->queue_len);
}

static void
f_queue_wait (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  flint_hist_render (&ep->metrics.queue_wait, out, "flint_queue_wait_seconds", lbl);
}

static void
f_replicas (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  static const flint_replica_state_t states[] = {
    FLINT_REPLICA_STARTING, FLINT_REPLICA_PARKED, FLINT_REPLICA_READY, FLINT_REPLICA_DRAINING, FLINT_REPLICA_STOPPING,
  };
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (states); i++)
    {
      unsigned n = 0;
      for (flint_list_t *p = ep->replicas.next; p != &ep->replicas; p = p->next)
        if (flint_list_entry (p, flint_replica_t, link)->state == states[i])
          n++;
      flint_buf_printf (out, "flint_replicas{%s,state=\"%s\"} %u\n", lbl, flint__replica_state_name (states[i]), n);
    }
}

static void
f_desired (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  flint_buf_printf (out, "flint_desired_replicas{%s} %u\n", lbl, ep->as.desired);
}

static void
f_panic (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  flint_buf_printf (out, "flint_autoscaler_panic{%s} %d\n", lbl, flint_now_ns () < ep->as.panic_until_ns);
}

static void
f_concurrency (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  flint_buf_printf (out, "flint_observed_concurrency{%s,window=\"stable\"} %.6g\n", lbl, ep->as.stable_conc);
  flint_buf_printf (out, "flint_observed_concurrency{%s,window=\"panic\"} %.6g\n", lbl, ep->as.panic_conc);
}

static void
f_cold_starts (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  for (int t = 0; t < 3; t++)
    flint_buf_printf (out, "flint_cold_starts_total{%s,tier=\"%s\"} %llu\n", lbl, flint__tier_name ((flint_tier_t) t),
                      (unsigned long long) ep->metrics.cold_starts[t]);
}

static void
f_phases (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  for (int t = 0; t < 3; t++)
    for (int ph = 0; ph < FLINT_PHASE_COUNT; ph++)
      {
        char l[256];
        if (ep->metrics.phases[t][ph].count == 0)
          continue;
        snprintf (l, sizeof l, "%s,tier=\"%s\",phase=\"%s\"", lbl, flint__tier_name ((flint_tier_t) t),
                  flint_phase_names[ph]);
        flint_hist_render (&ep->metrics.phases[t][ph], out, "flint_cold_start_phase_seconds", l);
      }
}

static void
f_scale_events (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  flint_buf_printf (out, "flint_scale_events_total{%s,direction=\"up\"} %llu\n", lbl,
                    (unsigned long long) ep->metrics.scale_up);
  flint_buf_printf (out, "flint_scale_events_total{%s,direction=\"down\"} %llu\n", lbl,
                    (unsigned long long) ep->metrics.scale_down);
}

static void
f_retries (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  flint_buf_printf (out, "flint_request_retries_total{%s} %llu\n", lbl, (unsigned long long) ep->metrics.retries);
}

static void
f_failures (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  flint_buf_printf (out, "flint_replica_failures_total{%s} %llu\n", lbl,
                    (unsigned long long) ep->metrics.replica_failures);
}

static void
f_fallbacks (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  flint_buf_printf (out, "flint_tier_fallbacks_total{%s} %llu\n", lbl, (unsigned long long) ep->metrics.tier_fallbacks);
}

static void
f_backoff (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  uint64_t now = flint_now_ns ();
  double left = ep->as.next_start_ns > now ? (double) (ep->as.next_start_ns - now) / 1e9 : 0;
  flint_buf_printf (out, "flint_startup_backoff_seconds{%s} %.3f\n", lbl, left);
}

/* Per replica: `lbl` extended with replica="ID",tier="T". */
typedef void (*replica_fn) (flint_replica_t *r, const char *lbl, flint_buf_t *out);

static void
each_replica (flint_endpoint_t *ep, const char *eplbl, flint_buf_t *out, replica_fn fn)
{
  for (flint_list_t *p = ep->replicas.next; p != &ep->replicas; p = p->next)
    {
      flint_replica_t *r = flint_list_entry (p, flint_replica_t, link);
      flint_buf_t lbl = FLINT_BUF_INIT;
      flint_buf_printf (&lbl, "%s,replica=\"", eplbl);
      escape_label (&lbl, r->id);
      flint_buf_printf (&lbl, "\",tier=\"%s\"", flint__tier_name (r->tier));
      fn (r, lbl.data, out);
      flint_buf_free (&lbl);
    }
}

static void
r_inflight (flint_replica_t *r, const char *lbl, flint_buf_t *out)
{
  flint_buf_printf (out, "flint_replica_in_flight{%s} %u\n", lbl, r->inflight);
}

static void
r_latency (flint_replica_t *r, const char *lbl, flint_buf_t *out)
{
  const flint_hist_t *h = &r->latency;
  flint_buf_printf (out, "flint_replica_latency_seconds{%s,quantile=\"0.5\"} %.9g\n", lbl,
                    flint_hist_quantile (h, 0.5) / 1000.0);
  flint_buf_printf (out, "flint_replica_latency_seconds{%s,quantile=\"0.99\"} %.9g\n", lbl,
                    flint_hist_quantile (h, 0.99) / 1000.0);
  flint_buf_printf (out, "flint_replica_latency_seconds_sum{%s} %.9g\n", lbl, h->sum_ms / 1000.0);
  flint_buf_printf (out, "flint_replica_latency_seconds_count{%s} %llu\n", lbl, (unsigned long long) h->count);
}

static void
f_replica_inflight (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  each_replica (ep, lbl, out, r_inflight);
}

static void
f_replica_latency (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  each_replica (ep, lbl, out, r_latency);
}

static void
f_engine (flint_endpoint_t *ep, const char *lbl, flint_buf_t *out)
{
  (void) lbl;
  flint__engine_metrics_render (ep, out);
}

void
flint__metrics_render (flint_daemon_t *d, flint_buf_t *out)
{
  static const struct {
    const char *name, *type, *help;
    family_fn fn;
  } families[] = {
    { "flint_requests_total", "counter", "Requests answered, by endpoint and status code.", f_requests },
    { "flint_request_duration_seconds", "histogram", "Time from a request's arrival to its answer.", f_latency },
    { "flint_queue_length", "gauge", "Requests waiting in the activator queue for a replica.", f_queue_len },
    { "flint_queue_wait_seconds", "histogram", "Time queued requests waited for a replica.", f_queue_wait },
    { "flint_replicas", "gauge", "Replicas by state.", f_replicas },
    { "flint_desired_replicas", "gauge", "The autoscaler's last decision.", f_desired },
    { "flint_autoscaler_panic", "gauge", "1 while the autoscaler is in panic mode (no scale-down).", f_panic },
    { "flint_observed_concurrency", "gauge", "Average in-flight plus queued requests over the stable and panic windows.",
      f_concurrency },
    { "flint_cold_starts_total", "counter", "Replicas started, by tier (cold, image, parked).", f_cold_starts },
    { "flint_cold_start_phase_seconds", "histogram", "Duration of each phase of a replica start, by tier.", f_phases },
    { "flint_scale_events_total", "counter", "Replicas added or removed by the autoscaler.", f_scale_events },
    { "flint_request_retries_total", "counter", "Requests retried after their replica died.", f_retries },
    { "flint_replica_failures_total", "counter", "Replicas that failed to start or died unasked.", f_failures },
    { "flint_tier_fallbacks_total", "counter", "Starts where a faster tier failed and a slower one served.",
      f_fallbacks },
    { "flint_startup_backoff_seconds", "gauge", "Time left before the next start attempt after startup failures.",
      f_backoff },
    { "flint_replica_in_flight", "gauge", "Requests in flight on each replica.", f_replica_inflight },
    { "flint_replica_latency_seconds", "summary", "Latency of the requests each replica answered (recent samples).",
      f_replica_latency },
  };

  flint_buf_puts (out, "# HELP flint_up 1 while flintd serves.\n# TYPE flint_up gauge\n");
  flint_buf_printf (out, "flint_up %d\n", d->shutting_down ? 0 : 1);
  flint_buf_puts (out, "# HELP flint_uptime_seconds Time since flintd started.\n# TYPE flint_uptime_seconds gauge\n");
  flint_buf_printf (out, "flint_uptime_seconds %.3f\n", (double) (flint_now_ns () - d->started_ns) / 1e9);
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (families); i++)
    {
      header (out, families[i].name, families[i].type, families[i].help);
      each_endpoint (d, out, families[i].fn);
    }
  each_endpoint (d, out, f_engine);
}
