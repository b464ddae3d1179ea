/* The autoscaler (minimal form): keeps `min_replicas` running for endpoints with a ready
 * version. Request-driven scale-up is in dispatch.c (replicas start for queued requests). */
#include "daemon.h"
#include "flint/log.h"
#include "flint/util.h"

#include <stdlib.h>

void
flint__autoscale_now (flint_endpoint_t *ep)
{
  uint32_t live = 0;
  flint_list_t *p;

  if (ep->current == NULL || ep->deleting || ep->d->shutting_down)
    return;
  for (p = ep->replicas.next; p != &ep->replicas; p = p->next)
    {
      flint_replica_t *r = flint_list_entry (p, flint_replica_t, link);
      if (r->version == ep->current && (r->state == FLINT_REPLICA_READY || r->state == FLINT_REPLICA_STARTING))
        live++;
    }
  while (live < ep->scale.min_replicas && live < ep->scale.max_replicas)
    {
      flint_error_t err = FLINT_ERROR_INIT;
      if (flint__replica_scale_up (ep, &err) == NULL)
        {
          snprintf (ep->last_error, sizeof ep->last_error, "%s", err.msg);
          break;
        }
      live++;
    }
  flint__dispatch_scale_for_queue (ep);
  flint__snapshot_keep_parked (ep);
}

static void
tick_cb (uv_timer_t *t)
{
  flint_daemon_t *d = t->data;
  const char *key;
  void *val;

  for (size_t it = 0; flint_map_next (&d->endpoints, &it, &key, &val);)
    flint__autoscale_now (val);
}

int
flint__autoscaler_start (flint_daemon_t *d)
{
  d->tick = calloc (1, sizeof *d->tick);
  if (d->tick == NULL)
    abort ();
  uv_timer_init (d->loop, d->tick);
  d->tick->data = d;
  return uv_timer_start (d->tick, tick_cb, 100, 1000);
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
