/* The autoscaler: how many replicas each endpoint should run, from the concurrency it observes.
 *
 * Shaped like Knative's KPA (docs/AUTOSCALING.md has the algorithm, the knobs and their
 * defaults). Concurrency (requests in flight on replicas + requests queued in the activator) is
 * integrated over time by flint__autoscale_account, which dispatch calls before every change,
 * and kept as one average per tick (FLINT_AS_TICK_MS). Each tick compares:
 *
 *   stable  = average over the stable window (scaledown_window, within [200 ms, 60 s])
 *   panic   = average over the panic window (a tenth of it), or the concurrency right now
 *
 * divided by target_concurrency. A panic demand of at least twice the ready replicas (any demand
 * at zero) starts panic mode for one stable window: the count follows the panic demand and never
 * goes down. Otherwise it follows the stable demand. buffer_replicas are added while the
 * endpoint is active, min/max bound the result, and the last replica goes only after a full
 * scaledown_window without any request. Scale-down prefers idle replicas; a busy one drains.
 *
 * Replicas start through flint__replica_scale_up (the fastest tier available). A replica that
 * fails to start puts the endpoint in an exponential backoff (1 s doubling to 60 s) so a broken
 * function is not restarted in a tight loop; `flint status` shows the reason and the next try. */
#include "daemon.h"
#include "flint/log.h"
#include "flint/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STABLE_MIN_MS (2 * FLINT_AS_TICK_MS)
#define STABLE_MAX_MS ((uint64_t) FLINT_AS_SAMPLES * FLINT_AS_TICK_MS)
#define BACKOFF_BASE_MS 1000
#define BACKOFF_MAX_MS 60000
#define NS_PER_MS 1000000ull

static uint32_t
concurrency (const flint_endpoint_t *ep)
{
  uint32_t n = ep->queue_len;
  for (const flint_list_t *p = ep->replicas.next; p != &ep->replicas; p = p->next)
    n += flint_list_entry (p, flint_replica_t, link)->inflight;
  return n;
}

void
flint__autoscale_account (flint_endpoint_t *ep)
{
  flint_autoscale_t *as = &ep->as;
  uint64_t now = flint_now_ns ();
  uint32_t c = concurrency (ep);

  if (as->last_ns == 0)
    as->last_ns = as->period_start_ns = now;
  as->area += (double) c * (double) (now - as->last_ns);
  as->last_ns = now;
  if (c > 0)
    as->last_busy_ns = now;
}

/* Closes the current tick period: its average concurrency becomes a sample. */
static void
sample (flint_endpoint_t *ep, uint64_t now)
{
  flint_autoscale_t *as = &ep->as;
  uint64_t dt;

  flint__autoscale_account (ep);
  dt = now > as->period_start_ns ? now - as->period_start_ns : 0;
  if (dt == 0)
    return;
  as->samples[as->head] = (float) (as->area / (double) dt);
  as->head = (as->head + 1) % FLINT_AS_SAMPLES;
  if (as->nsamples < FLINT_AS_SAMPLES)
    as->nsamples++;
  as->area = 0;
  as->period_start_ns = now;
}

/* Average of the newest samples covering `window_ms` (fewer when the endpoint is younger). */
static double
window_avg (const flint_autoscale_t *as, uint64_t window_ms)
{
  uint32_t n = (uint32_t) ((window_ms + FLINT_AS_TICK_MS - 1) / FLINT_AS_TICK_MS);
  double sum = 0;

  if (n > as->nsamples)
    n = as->nsamples;
  if (n == 0)
    return 0;
  for (uint32_t i = 0; i < n; i++)
    sum += as->samples[(as->head + FLINT_AS_SAMPLES - 1 - i) % FLINT_AS_SAMPLES];
  return sum / n;
}

static uint64_t
stable_window_ms (const flint_scale_t *s)
{
  return FLINT_MIN (FLINT_MAX (s->scaledown_window_ms, (uint64_t) STABLE_MIN_MS), STABLE_MAX_MS);
}

static uint64_t
panic_window_ms (uint64_t stable_ms)
{
  return FLINT_MAX (stable_ms / 10, (uint64_t) FLINT_AS_TICK_MS);
}

/* Replicas needed for `conc` concurrent requests at `target` each. */
static uint32_t
replicas_for (double conc, uint32_t target)
{
  double r = ceil (conc / (double) (target ? target : 1) - 1e-6);
  return r <= 0 ? 0 : r >= 1e6 ? 1000000u : (uint32_t) r;
}

uint32_t
flint__autoscale_live (const flint_endpoint_t *ep)
{
  uint32_t n = 0;
  for (const flint_list_t *p = ep->replicas.next; p != &ep->replicas; p = p->next)
    {
      const flint_replica_t *r = flint_list_entry (p, flint_replica_t, link);
      /* a replica restored for the parked pool will not serve: it is not capacity */
      if (r->version == ep->current && !r->parking
          && (r->state == FLINT_REPLICA_READY || r->state == FLINT_REPLICA_STARTING))
        n++;
    }
  return n;
}

static uint32_t
ready_count (const flint_endpoint_t *ep)
{
  uint32_t n = 0;
  for (const flint_list_t *p = ep->replicas.next; p != &ep->replicas; p = p->next)
    {
      const flint_replica_t *r = flint_list_entry (p, flint_replica_t, link);
      if (r->version == ep->current && r->state == FLINT_REPLICA_READY)
        n++;
    }
  return n;
}

static bool
can_scale (const flint_endpoint_t *ep)
{
  return ep->current != NULL && ep->current->manifest != NULL && !ep->deleting && !ep->d->shutting_down;
}

/* Fails what waits in the queue when no replica is coming for it. */
static void
fail_queue_if_stranded (flint_endpoint_t *ep, flint_status_t code, const char *why)
{
  char msg[900];

  if (flint__autoscale_live (ep) > 0)
    return;
  snprintf (msg, sizeof msg, "endpoint `%s`: cannot start a replica: %s", ep->name, why);
  while (!flint_list_empty (&ep->queue))
    flint__request_complete (flint_list_entry (ep->queue.next, flint_request_t, link), code, msg, NULL, 0);
}

/* Starts up to `n` replicas (fewer during a startup backoff). Returns how many started. */
static uint32_t
start_replicas (flint_endpoint_t *ep, uint32_t n, uint64_t now)
{
  uint32_t started = 0;

  while (started < n && can_scale (ep))
    {
      flint_error_t err = FLINT_ERROR_INIT;

      if (now < ep->as.next_start_ns)
        break;
      if (flint__replica_scale_up (ep, &err) == NULL)
        {
          snprintf (ep->last_error, sizeof ep->last_error, "%s", err.msg);
          ep->metrics.replica_failures++;
          flint__autoscale_start_failed (ep, err.msg);
          fail_queue_if_stranded (ep, err.code, err.msg);
          break;
        }
      started++;
      ep->metrics.scale_up++;
    }
  return started;
}

/* Removes `n` ready replicas: idle ones first (longest idle first), else the least busy, which
 * drains (takes no new requests, stops when its last one is answered). */
static uint32_t
stop_replicas (flint_endpoint_t *ep, uint32_t n)
{
  uint32_t stopped = 0;

  while (stopped < n)
    {
      flint_replica_t *victim = NULL;
      for (flint_list_t *p = ep->replicas.next; p != &ep->replicas; p = p->next)
        {
          flint_replica_t *r = flint_list_entry (p, flint_replica_t, link);
          if (r->version != ep->current || r->state != FLINT_REPLICA_READY || r->checkpointing)
            continue;
          if (victim == NULL || r->inflight < victim->inflight
              || (r->inflight == victim->inflight && r->last_active_ns < victim->last_active_ns))
            victim = r;
        }
      if (victim == NULL)
        break;
      stopped++;
      ep->metrics.scale_down++;
      if (victim->inflight == 0)
        flint__replica_stop (victim, "scaled down");
      else
        {
          victim->state = FLINT_REPLICA_DRAINING;
          flint_debug ("replica %s drains (%u in flight)", victim->id, victim->inflight);
        }
    }
  return stopped;
}

/* The decision: the replica count `ep` should run now. */
static uint32_t
decide (flint_endpoint_t *ep, uint64_t now, uint32_t live, bool *panicking_out)
{
  const flint_scale_t *s = &ep->scale;
  flint_autoscale_t *as = &ep->as;
  uint64_t sw = stable_window_ms (s), pw = panic_window_ms (sw);
  double inst = concurrency (ep), recent = window_avg (as, pw);
  uint32_t ready = ready_count (ep);
  uint32_t want_stable, want_panic, desired;
  bool panicking, active;

  as->stable_conc = window_avg (as, sw);
  as->panic_conc = FLINT_MAX (recent, inst);
  want_stable = replicas_for (as->stable_conc, s->target_concurrency);
  want_panic = replicas_for (as->panic_conc, s->target_concurrency);
  if (want_panic > 0 && want_panic >= 2 * ready)
    as->panic_until_ns = now + sw * NS_PER_MS;
  panicking = now < as->panic_until_ns;
  desired = want_stable;
  if (panicking)
    desired = FLINT_MAX (desired, FLINT_MAX (want_panic, live));
  active = inst > 0 || (as->last_busy_ns && now - as->last_busy_ns < sw * NS_PER_MS);
  if (active)
    desired += s->buffer_replicas;
  /* the last replica stays until the endpoint has been idle for a whole scaledown_window
   * (which may be longer than the longest stable window) */
  if (desired == 0 && live > 0 && as->last_busy_ns && now - as->last_busy_ns < s->scaledown_window_ms * NS_PER_MS)
    desired = 1;
  desired = FLINT_MAX (desired, s->min_replicas);
  desired = FLINT_MIN (desired, s->max_replicas);
  as->desired = desired;
  *panicking_out = panicking;
  return desired;
}

void
flint__autoscale_now (flint_endpoint_t *ep)
{
  uint64_t now = flint_now_ns ();
  uint32_t live, desired;
  bool panicking;

  if (!can_scale (ep))
    return;
  live = flint__autoscale_live (ep);
  desired = decide (ep, now, live, &panicking);
  if (desired > live)
    {
      uint32_t n = start_replicas (ep, desired - live, now);
      if (n)
        flint_info ("endpoint `%s`: scaling up %u -> %u (concurrency %.2f stable, %.2f panic%s)", ep->name, live,
                    live + n, ep->as.stable_conc, ep->as.panic_conc, panicking ? ", panicking" : "");
    }
  else if (desired < live && (!panicking || live > ep->scale.max_replicas))
    {
      uint32_t n = stop_replicas (ep, live - desired);
      if (n)
        flint_info ("endpoint `%s`: scaling down %u -> %u (concurrency %.2f over the stable window)", ep->name, live,
                    live - n, ep->as.stable_conc);
    }
  flint__snapshot_keep_parked (ep);
}

void
flint__autoscale_up (flint_endpoint_t *ep)
{
  const flint_scale_t *s = &ep->scale;
  uint64_t now = flint_now_ns ();
  uint32_t live, want, n;

  if (!can_scale (ep))
    return;
  live = flint__autoscale_live (ep);
  want = replicas_for (concurrency (ep), s->target_concurrency);
  if (want == 0)
    return;
  want = FLINT_MIN (FLINT_MAX (want + s->buffer_replicas, s->min_replicas), s->max_replicas);
  if (want <= live)
    return;
  /* a burst: no scale-down for a stable window, as if the panic window had seen it */
  ep->as.panic_until_ns = FLINT_MAX (ep->as.panic_until_ns, now + stable_window_ms (s) * NS_PER_MS);
  n = start_replicas (ep, want - live, now);
  if (n)
    flint_info ("endpoint `%s`: scaling up %u -> %u for %u waiting request(s)", ep->name, live, live + n,
                ep->queue_len);
}

void
flint__autoscale_replica_ready (flint_replica_t *r)
{
  flint_endpoint_t *ep = r->ep;

  ep->as.start_failures = 0;
  ep->as.next_start_ns = 0;
  ep->as.start_error[0] = '\0';
  /* a new replica counts as activity: it stays at least a scaledown_window (a deploy's first
   * replica serves the first requests instead of being stopped at once) */
  ep->as.last_busy_ns = flint_now_ns ();
}

void
flint__autoscale_forget (flint_endpoint_t *ep)
{
  flint_autoscale_t *as = &ep->as;

  flint__autoscale_account (ep);
  memset (as->samples, 0, sizeof as->samples);
  as->nsamples = as->head = 0;
  as->area = 0;
  as->period_start_ns = as->last_ns = flint_now_ns ();
  as->last_busy_ns = 0;
  as->panic_until_ns = 0;
  as->desired = 0;
  as->stable_conc = as->panic_conc = 0;
}

void
flint__autoscale_start_failed (flint_endpoint_t *ep, const char *reason)
{
  flint_autoscale_t *as = &ep->as;
  uint64_t delay_ms;
  unsigned shift;

  as->start_failures++;
  shift = FLINT_MIN (as->start_failures - 1, 16u);
  delay_ms = FLINT_MIN ((uint64_t) BACKOFF_BASE_MS << shift, (uint64_t) BACKOFF_MAX_MS);
  as->next_start_ns = flint_now_ns () + delay_ms * NS_PER_MS;
  snprintf (as->start_error, sizeof as->start_error, "%s", reason);
  flint_warn ("endpoint `%s`: start failure %u (%s); next start attempt in %.1f s", ep->name, as->start_failures,
              reason, (double) delay_ms / 1000.0);
}

const char *
flint__autoscale_blocked (flint_endpoint_t *ep, uint64_t deadline_ns, char *buf, size_t len)
{
  const flint_autoscale_t *as = &ep->as;
  uint64_t now = flint_now_ns ();

  if (as->next_start_ns <= now || deadline_ns > as->next_start_ns || flint__autoscale_live (ep) > 0)
    return NULL;
  snprintf (buf, len,
            "endpoint `%s`: no replica can start before the request's deadline: %u start(s) failed in a row "
            "(last: %s); next attempt in %.1f s",
            ep->name, as->start_failures, as->start_error, (double) (as->next_start_ns - now) / 1e9);
  return buf;
}

static void
tick_cb (uv_timer_t *t)
{
  flint_daemon_t *d = t->data;
  uint64_t now = flint_now_ns ();
  const char *key;
  void *val;

  for (size_t it = 0; flint_map_next (&d->endpoints, &it, &key, &val);)
    {
      flint_endpoint_t *ep = val;
      sample (ep, now);
      flint__autoscale_now (ep);
    }
}

int
flint__autoscaler_start (flint_daemon_t *d)
{
  d->tick = calloc (1, sizeof *d->tick);
  if (d->tick == NULL)
    abort ();
  uv_timer_init (d->loop, d->tick);
  d->tick->data = d;
  return uv_timer_start (d->tick, tick_cb, FLINT_AS_TICK_MS, FLINT_AS_TICK_MS);
}

static void
free_cb (uv_handle_t *h)
{
  free (h);
}

void
flint__autoscaler_stop (flint_daemon_t *d)
{
  if (d->tick)
    {
      uv_timer_stop (d->tick);
      uv_close ((uv_handle_t *) d->tick, free_cb);
      d->tick = NULL;
    }
}
