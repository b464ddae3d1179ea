/* Request dispatch: routing to replicas, the activator queue, deadlines, retries.
 *
 * A request is dispatched at once to the least-loaded ready replica of the endpoint's current
 * version that has room (inflight < max_concurrency). Otherwise it waits in the endpoint's
 * bounded FIFO (the activator) while replicas come up, and is sent the moment one has room.
 * Every request has one deadline (the client's, capped by the endpoint's `timeout`) and ends
 * exactly once: answered, failed with a message naming the endpoint and the cause, or expired.
 *
 * A request abandoned while in a worker (client cancel, deadline with max_concurrency > 1)
 * keeps its slot on the replica until the worker answers or dies, so concurrency accounting
 * always matches what the worker is really doing; a function that ignores the cancel for
 * CANCEL_GRACE_MS gets its replica replaced (it would hold the slot forever).
 *
 * A request whose replica died is retried up to `retries` times (when it streamed nothing yet):
 * it goes back to the head of the queue, due after a backoff (RETRY_BASE_MS doubling), and the
 * autoscaler replaces the replica. Every change of the queue or of in-flight counts is first
 * accounted to the autoscaler (flint__autoscale_account), which averages concurrency over time. */
#include "daemon.h"
#include "metrics.h"
#include "flint/log.h"
#include "flint/util.h"
#include "flint/worker/v1/worker.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_BASE_MS 25
#define RETRY_MAX_MS 1000

static void
request_free_cb (uv_handle_t *h)
{
  flint_request_t *req = h->data;
  free (req->payload);
  free (req);
}

static void
request_free (flint_request_t *req)
{
  uv_timer_stop (&req->timer);
  uv_close ((uv_handle_t *) &req->timer, request_free_cb);
}

flint_request_t *
flint__request_new (flint_daemon_t *d, const uint8_t *payload, size_t len, bool streaming,
                    const flint_sink_ops_t *sink, void *sink_data)
{
  flint_request_t *req = calloc (1, sizeof *req);

  if (req == NULL)
    abort ();
  req->payload = malloc (len ? len : 1);
  if (req->payload == NULL)
    abort ();
  if (len)
    memcpy (req->payload, payload, len);
  req->len = len;
  req->d = d;
  req->id = ++d->next_request_id;
  req->streaming = streaming;
  req->sink = sink;
  req->sink_data = sink_data;
  req->arrived_ns = flint_now_ns ();
  req->state = FLINT_REQ_NEW;
  flint_list_init (&req->link);
  uv_timer_init (d->loop, &req->timer);
  req->timer.data = req;
  return req;
}

static void
detach (flint_request_t *req)
{
  if (req->ep && (req->state == FLINT_REQ_QUEUED || req->state == FLINT_REQ_DISPATCHED))
    flint__autoscale_account (req->ep);
  if (req->state == FLINT_REQ_QUEUED)
    {
      flint_list_remove (&req->link);
      req->ep->queue_len--;
    }
  else if (req->state == FLINT_REQ_DISPATCHED && req->replica)
    {
      flint_list_remove (&req->link);
      req->replica->inflight--;
      req->replica = NULL;
    }
}

/* Answers the client (once) without freeing: used when the request must stay on a replica. */
static void
answer (flint_request_t *req, flint_status_t code, const char *msg, const uint8_t *data, size_t len)
{
  const flint_sink_ops_t *sink = req->sink;

  if (sink == NULL)
    return;
  req->sink = NULL;
  if (req->ep)
    {
      if (code == FLINT_OK)
        req->ep->requests_ok++;
      else
        req->ep->requests_failed++;
      flint__metrics_request_done (req->ep, code, req->arrived_ns, req->dispatched_ns);
    }
  sink->done (req, code, msg, data, len);
}

void
flint__request_complete (flint_request_t *req, flint_status_t code, const char *msg, const uint8_t *data,
                         size_t len)
{
  flint_replica_t *r = req->replica;
  flint_endpoint_t *ep = req->ep;

  if (req->state == FLINT_REQ_DONE)
    return;
  if (r && req->state == FLINT_REQ_DISPATCHED)
    flint_hist_observe (&r->latency, (double) (flint_now_ns () - req->dispatched_ns) / 1e6);
  detach (req);
  req->state = FLINT_REQ_DONE;
  answer (req, code, msg, data, len);
  request_free (req);
  if (r && ep)
    {
      flint__dispatch_pump (ep);
      if (r->state == FLINT_REPLICA_DRAINING && r->inflight == 0)
        flint__replica_stop (r, "drained");
    }
  if (ep)
    flint__endpoint_maybe_reap (ep);
}

static flint_replica_t *
pick_replica (flint_endpoint_t *ep)
{
  flint_replica_t *best = NULL;
  flint_list_t *p;

  for (p = ep->replicas.next; p != &ep->replicas; p = p->next)
    {
      flint_replica_t *r = flint_list_entry (p, flint_replica_t, link);
      if (r->version != ep->current || !flint__replica_has_room (r))
        continue;
      if (best == NULL || r->inflight < best->inflight)
        best = r;
    }
  return best;
}

static void
send_to (flint_request_t *req, flint_replica_t *r)
{
  Flint__Worker__V1__Invoke inv = FLINT__WORKER__V1__INVOKE__INIT;
  Flint__Worker__V1__Frame f = FLINT__WORKER__V1__FRAME__INIT;
  uint64_t now = flint_now_ns ();

  flint__autoscale_account (r->ep);
  req->state = FLINT_REQ_DISPATCHED;
  req->replica = r;
  req->dispatched_ns = now;
  req->attempts++;
  req->served_version = r->version->number;
  snprintf (req->served_replica, sizeof req->served_replica, "%s", r->id);
  r->inflight++;
  r->last_active_ns = now;
  flint_list_insert_tail (&r->requests, &req->link);
  inv.request_id = req->id;
  inv.payload.data = req->payload;
  inv.payload.len = req->len;
  inv.streaming = req->streaming;
  inv.deadline_ms = req->deadline_ns > now ? (req->deadline_ns - now + 999999) / 1000000 : 1;
  f.msg_case = FLINT__WORKER__V1__FRAME__MSG_INVOKE;
  f.invoke = &inv;
  /* Sent with the other frames this loop iteration produces for the worker (one write, one
   * wake-up there). A failed send means the worker is gone: its channel close arrives next and
   * fails or retries this request with the cause. */
  (void) flint_channel_send_soon (r->chan, &f.base);
}

static void deadline_cb (uv_timer_t *t);

void
flint__dispatch_pump (flint_endpoint_t *ep)
{
  uint64_t now = 0;
  flint_list_t *p = ep->queue.next;

  while (p != &ep->queue)
    {
      flint_request_t *req = flint_list_entry (p, flint_request_t, link);
      flint_replica_t *r;

      p = p->next;
      if (req->not_before_ns)
        {
          /* a retry waiting out its backoff keeps its place; the ones behind it may go */
          if (now == 0)
            now = flint_now_ns ();
          if (now < req->not_before_ns)
            continue;
          /* due: its timer goes back to the deadline (it was the backoff's) */
          req->not_before_ns = 0;
          uv_timer_start (&req->timer, deadline_cb,
                          now < req->deadline_ns ? (req->deadline_ns - now + 999999) / 1000000 : 0, 0);
        }
      r = pick_replica (ep);
      if (r == NULL)
        break;
      flint__autoscale_account (ep);
      flint_list_remove (&req->link);
      ep->queue_len--;
      flint__metrics_queue_wait (ep, req->arrived_ns);
      send_to (req, r);
    }
}

void
flint__dispatch_scale_for_queue (flint_endpoint_t *ep)
{
  if (ep->queue_len > 0)
    flint__autoscale_up (ep);
}

/* How long a worker may keep running a request after it was told to stop (Cancel): past it,
 * the function ignores cancellation and holds a slot nobody can use, so the replica goes. */
#define CANCEL_GRACE_MS 2000

static void deadline_cb (uv_timer_t *t);

/* The client is answered now (cancelled or expired), but the worker is still running the
 * request: tell it to stop, and keep the request's slot on the replica until the worker's
 * Result (concurrency accounting stays true) or the grace period runs out. */
static void
cancel_in_worker (flint_request_t *req, flint_status_t code, const char *msg)
{
  Flint__Worker__V1__Cancel c = FLINT__WORKER__V1__CANCEL__INIT;
  Flint__Worker__V1__Frame f = FLINT__WORKER__V1__FRAME__INIT;

  c.request_id = req->id;
  f.msg_case = FLINT__WORKER__V1__FRAME__MSG_CANCEL;
  f.cancel = &c;
  if (req->replica && req->replica->chan)
    flint_channel_send (req->replica->chan, &f.base, NULL, 0);
  answer (req, code, msg, NULL, 0);
  uv_timer_start (&req->timer, deadline_cb, CANCEL_GRACE_MS, 0);
}

static void
deadline_cb (uv_timer_t *t)
{
  flint_request_t *req = t->data;
  flint_endpoint_t *ep = req->ep;
  uint64_t now = flint_now_ns ();
  char msg[900];

  if (req->state == FLINT_REQ_QUEUED && now < req->deadline_ns)
    {
      /* a retry's backoff is over: back to the deadline, and off it goes if a replica has room */
      req->not_before_ns = 0;
      uv_timer_start (&req->timer, deadline_cb, (req->deadline_ns - now + 999999) / 1000000, 0);
      flint__dispatch_pump (ep);
      flint__dispatch_scale_for_queue (ep);
      return;
    }
  if (req->state == FLINT_REQ_QUEUED)
    {
      int n = snprintf (msg, sizeof msg, "endpoint `%s`: no replica became available before the deadline (queued %.0f ms)",
                        ep->name, (double) (now - req->arrived_ns) / 1e6);
      if (ep->as.start_failures && n > 0 && (size_t) n < sizeof msg)
        snprintf (msg + n, sizeof msg - (size_t) n, "; replicas fail to start: %s", ep->as.start_error);
      flint__request_complete (req, FLINT_EDEADLINE, msg, NULL, 0);
    }
  else if (req->state == FLINT_REQ_DISPATCHED && req->sink == NULL)
    {
      /* answered already (cancel, deadline) and the worker still runs it: the grace is over */
      flint_replica_t *r = req->replica;
      if (r && r->state != FLINT_REPLICA_STOPPING && r->state != FLINT_REPLICA_DEAD)
        {
          snprintf (msg, sizeof msg, "replica %s: a request ran on %d ms after it was cancelled: replacing the replica",
                    r->id, CANCEL_GRACE_MS);
          flint_warn ("endpoint `%s`: %s", ep->name, msg);
          flint_logbook_append (ep->logbook, r->version->number, r->id, "flint", msg, strlen (msg));
          snprintf (r->exit_reason, sizeof r->exit_reason, "stopped by flintd (a cancelled request did not stop)");
          flint__replica_stop (r, "a cancelled request did not stop");
        }
    }
  else if (req->state == FLINT_REQ_DISPATCHED)
    {
      flint_replica_t *r = req->replica;
      snprintf (msg, sizeof msg, "endpoint `%s`: the function did not answer within the deadline (%.0f ms)",
                ep->name, (double) (now - req->arrived_ns) / 1e6);
      if (ep->scale.max_concurrency <= 1 || (r && r->version->manifest->threads == 1))
        {
          /* A worker stuck in the only request it can run at a time (one at a time, or one
           * invoke thread with the others queued behind it) serves nobody: replace it. Out of
           * rotation first, or completing the request would hand it the next queued one. */
          if (r)
            {
              snprintf (r->exit_reason, sizeof r->exit_reason, "stopped by flintd (a request timed out)");
              if (r->state == FLINT_REPLICA_READY)
                r->state = FLINT_REPLICA_DRAINING;
            }
          flint__request_complete (req, FLINT_EDEADLINE, msg, NULL, 0);
          if (r)
            flint__replica_stop (r, "a request timed out");
        }
      else
        cancel_in_worker (req, FLINT_EDEADLINE, msg);
    }
}

void
flint__dispatch (flint_request_t *req, const char *name, uint64_t client_deadline_ns)
{
  flint_daemon_t *d = req->d;
  flint_endpoint_t *ep = flint__endpoint_get (d, name);
  flint_replica_t *r;
  char msg[600];
  uint64_t now = flint_now_ns ();

  if (d->shutting_down)
    {
      flint__request_complete (req, FLINT_EUNAVAILABLE, "flintd is shutting down", NULL, 0);
      return;
    }
  if (ep == NULL || ep->deleting)
    {
      snprintf (msg, sizeof msg, "endpoint `%s` not found", name);
      flint__request_complete (req, FLINT_ENOTFOUND, msg, NULL, 0);
      return;
    }
  req->ep = ep;
  if (ep->current == NULL)
    {
      if (ep->deploying)
        snprintf (msg, sizeof msg, "endpoint `%s` has no ready version yet: its first deploy is in progress", name);
      else
        snprintf (msg, sizeof msg, "endpoint `%s` has no ready version%s%s", name,
                  ep->last_error[0] ? ": " : "", ep->last_error);
      flint__request_complete (req, ep->deploying ? FLINT_EUNAVAILABLE : FLINT_EPRECONDITION, msg, NULL, 0);
      return;
    }
  if (req->len > ep->current->manifest->max_payload)
    {
      snprintf (msg, sizeof msg, "endpoint `%s`: payload of %zu bytes exceeds max_payload (%llu bytes)", name,
                req->len, (unsigned long long) ep->current->manifest->max_payload);
      flint__request_complete (req, FLINT_EEXHAUSTED, msg, NULL, 0);
      return;
    }
  req->deadline_ns = now + ep->scale.timeout_ms * 1000000ull;
  if (client_deadline_ns && client_deadline_ns < req->deadline_ns)
    req->deadline_ns = client_deadline_ns;
  /* a client deadline already past (or reached while it travelled) fires at once */
  uv_timer_start (&req->timer, deadline_cb, req->deadline_ns > now ? (req->deadline_ns - now + 999999) / 1000000 : 0,
                  0);

  r = flint_list_empty (&ep->queue) ? pick_replica (ep) : NULL;
  if (r)
    {
      send_to (req, r);
      return;
    }
  if (ep->queue_len >= ep->scale.queue_size)
    {
      snprintf (msg, sizeof msg, "endpoint `%s`: %u requests are already waiting (queue_size); retry later", name,
                ep->queue_len);
      flint__request_complete (req, FLINT_EEXHAUSTED, msg, NULL, 0);
      return;
    }
  if (flint__autoscale_blocked (ep, req->deadline_ns, msg, sizeof msg) != NULL)
    {
      flint__request_complete (req, FLINT_EUNAVAILABLE, msg, NULL, 0);
      return;
    }
  flint__autoscale_account (ep);
  req->state = FLINT_REQ_QUEUED;
  flint_list_insert_tail (&ep->queue, &req->link);
  ep->queue_len++;
  flint__dispatch_pump (ep);
  flint__dispatch_scale_for_queue (ep);
}

void
flint__request_cancel (flint_request_t *req)
{
  if (req->state == FLINT_REQ_QUEUED || req->state == FLINT_REQ_NEW)
    {
      flint__request_complete (req, FLINT_ECANCELLED, "cancelled by the client", NULL, 0);
      return;
    }
  if (req->state == FLINT_REQ_DISPATCHED && req->sink)
    cancel_in_worker (req, FLINT_ECANCELLED, "cancelled by the client");
}

void
flint__dispatch_replica_lost (flint_replica_t *r, const char *reason, flint_status_t code)
{
  flint_endpoint_t *ep = r->ep;

  while (!flint_list_empty (&r->requests))
    {
      flint_request_t *req = flint_list_entry (r->requests.next, flint_request_t, link);
      bool retry = req->sink && !req->chunks_sent && !ep->d->shutting_down && req->attempts <= ep->scale.retries
                   && flint_now_ns () < req->deadline_ns && !ep->deleting && ep->current;
      char msg[600];

      if (retry)
        {
          uint64_t now = flint_now_ns ();
          uint64_t delay_ms = FLINT_MIN ((uint64_t) RETRY_BASE_MS << FLINT_MIN (req->attempts - 1, 10u),
                                         (uint64_t) RETRY_MAX_MS);
          retry = now + delay_ms * 1000000ull < req->deadline_ns;
          if (retry)
            {
              detach (req);
              flint__autoscale_account (ep);
              req->state = FLINT_REQ_QUEUED;
              req->not_before_ns = now + delay_ms * 1000000ull;
              flint_list_insert_head (&ep->queue, &req->link); /* it already waited: first in line */
              ep->queue_len++;
              uv_timer_start (&req->timer, deadline_cb, delay_ms, 0);
              flint__metrics_retry (ep);
              continue;
            }
        }
      snprintf (msg, sizeof msg, "endpoint `%s`: %s while handling the request", ep->name, reason);
      flint__request_complete (req, code, msg, NULL, 0);
    }
}
