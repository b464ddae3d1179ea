/* Endpoints and their versions: creation, loading from the registry after a (re)start, version
 * switches and deletion. */
#include "daemon.h"
#include "store.h"
#include "flint/log.h"
#include "flint/util.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *
xstrdup (const char *s)
{
  char *r = strdup (s ? s : "");
  if (r == NULL)
    abort ();
  return r;
}

flint_endpoint_t *
flint__endpoint_get (flint_daemon_t *d, const char *name)
{
  return flint_map_get (&d->endpoints, name);
}

flint_endpoint_t *
flint__endpoint_create (flint_daemon_t *d, const char *name)
{
  flint_endpoint_t *ep = calloc (1, sizeof *ep);
  char dir[PATH_MAX];

  if (ep == NULL)
    abort ();
  ep->d = d;
  ep->name = xstrdup (name);
  flint_list_init (&ep->versions);
  flint_list_init (&ep->replicas);
  flint_list_init (&ep->queue);
  ep->created_ms = flint_wall_ms ();
  snprintf (dir, sizeof dir, "%s/logs", d->cfg.state_dir);
  ep->logbook = flint_logbook_new (dir, name);
  flint_map_put (&d->endpoints, name, ep);
  return ep;
}

flint_version_t *
flint__version_new (flint_endpoint_t *ep, uint64_t number, const char *manifest_text, const char *manifest_path,
                    const char *bundle_sha256, flint_error_t *err)
{
  flint_version_t *v = calloc (1, sizeof *v);
  char dir[PATH_MAX];

  if (v == NULL)
    abort ();
  v->ep = ep;
  v->number = number;
  v->manifest_text = xstrdup (manifest_text);
  v->manifest_path = xstrdup (manifest_path);
  v->bundle_sha256 = xstrdup (bundle_sha256);
  v->error = xstrdup ("");
  snprintf (dir, sizeof dir, "%s/bundles/%s", ep->d->cfg.state_dir, bundle_sha256);
  v->bundle_dir = xstrdup (dir);
  v->created_ms = flint_wall_ms ();
  if (flint_manifest_parse (manifest_text, strlen (manifest_text), manifest_path, &v->manifest, err) < 0)
    {
      flint__version_free (v);
      return NULL;
    }
  return v;
}

void
flint__version_free (flint_version_t *v)
{
  if (v == NULL)
    return;
  free (v->manifest_text);
  free (v->manifest_path);
  flint_manifest_free (v->manifest);
  free (v->bundle_sha256);
  free (v->bundle_dir);
  free (v->weights_dir);
  free (v->error);
  flint__snapshot_release (&v->snap);
  free (v);
}

void
flint__version_maybe_free (flint_version_t *v)
{
  flint_endpoint_t *ep = v->ep;

  if (v == ep->current || (ep->deploying && ep->deploying_version == v))
    return;
  for (flint_list_t *p = ep->replicas.next; p != &ep->replicas; p = p->next)
    if (flint_list_entry (p, flint_replica_t, link)->version == v)
      return;
  flint_list_remove (&v->link);
  flint__snapshot_discard (ep->d, v, "its version was retired");
  flint__store_unlink_weights (v->weights_dir, &ep->d->cfg);
  flint__version_free (v);
}

/* Knobs are stored in the registry as "key=value" lines. */
static void
scale_format (const flint_scale_t *s, char *buf, size_t len)
{
  snprintf (buf, len,
            "min_replicas=%u\nmax_replicas=%u\ntarget_concurrency=%u\nmax_concurrency=%u\n"
            "buffer_replicas=%u\nscaledown_window=%llums\ntimeout=%llums\nstartup_timeout=%llums\n"
            "retries=%u\nqueue_size=%u\nparked_replicas=%u\n",
            s->min_replicas, s->max_replicas, s->target_concurrency, s->max_concurrency, s->buffer_replicas,
            (unsigned long long) s->scaledown_window_ms, (unsigned long long) s->timeout_ms,
            (unsigned long long) s->startup_timeout_ms, s->retries, s->queue_size, s->parked_replicas);
}

static void
scale_parse (flint_scale_t *s, const char *text)
{
  char line[256];
  const char *p = text;

  while (*p)
    {
      const char *nl = strchr (p, '\n');
      size_t n = nl ? (size_t) (nl - p) : strlen (p);
      char *eq;
      if (n < sizeof line)
        {
          memcpy (line, p, n);
          line[n] = '\0';
          eq = strchr (line, '=');
          if (eq)
            {
              *eq = '\0';
              flint_scale_set (s, line, eq + 1, NULL);
            }
        }
      p += n;
      if (*p == '\n')
        p++;
    }
}

int
flint__endpoint_save_scale (flint_endpoint_t *ep, flint_error_t *err)
{
  char buf[1024];
  scale_format (&ep->scale, buf, sizeof buf);
  return flint_registry_put_endpoint (ep->d->reg, ep->name, buf, err);
}

typedef struct load_ctx_s {
  flint_daemon_t *d;
  flint_endpoint_t *ep;
  uint64_t current;
} load_ctx_t;

static int
load_version_cb (void *ud, const flint_version_rec_t *rec)
{
  load_ctx_t *lc = ud;
  flint_error_t err = FLINT_ERROR_INIT;
  flint_version_t *v;

  /* Only versions that can still serve matter at runtime: the current one. Older versions stay
   * in the registry (for `flint status`), their bundles on disk. */
  if (rec->version != lc->current)
    return 0;
  v = flint__version_new (lc->ep, rec->version, rec->manifest, rec->manifest_path, rec->bundle_sha256, &err);
  if (v == NULL)
    {
      flint_err ("endpoint `%s` version %llu: %s", lc->ep->name, (unsigned long long) rec->version, err.msg);
      snprintf (lc->ep->last_error, sizeof lc->ep->last_error, "%s", err.msg);
      return 0;
    }
  v->state = FLINT_VERSION_READY;
  v->created_ms = rec->created_ms;
  if (flint__store_link_weights (&lc->d->cfg, lc->ep->name, v->number, v->manifest, v->bundle_dir, &v->weights_dir,
                                 NULL, &err)
      < 0)
    {
      flint_err ("endpoint `%s` version %llu: %s", lc->ep->name, (unsigned long long) rec->version, err.msg);
      snprintf (lc->ep->last_error, sizeof lc->ep->last_error, "%s", err.msg);
      flint__version_free (v);
      return 0;
    }
  flint_list_insert_tail (&lc->ep->versions, &v->link);
  lc->ep->current = v;
  return 0;
}

static int
load_endpoint_cb (void *ud, const flint_endpoint_rec_t *rec)
{
  load_ctx_t *lc = ud;
  flint_error_t err = FLINT_ERROR_INIT;
  flint_endpoint_t *ep = flint__endpoint_create (lc->d, rec->name);

  ep->created_ms = rec->created_ms;
  lc->ep = ep;
  lc->current = rec->current_version;
  if (flint_registry_list_versions (lc->d->reg, rec->name, load_version_cb, lc, &err) < 0)
    flint_err ("endpoint `%s`: %s", rec->name, err.msg);
  if (ep->current)
    {
      ep->scale = ep->current->manifest->scale;
      scale_parse (&ep->scale, rec->scale);
    }
  return 0;
}

int
flint__endpoints_load (flint_daemon_t *d, flint_error_t *err)
{
  load_ctx_t lc = { .d = d };
  int n = flint_registry_fail_deploying (d->reg, "flintd restarted while the deploy was in progress", err);

  if (n < 0)
    return -1;
  if (n > 0)
    flint_warn ("%d deploy(s) were interrupted by a restart and are marked failed", n);
  if (flint_registry_list_endpoints (d->reg, load_endpoint_cb, &lc, err) < 0)
    return -1;
  flint_info ("loaded %zu endpoint(s) from the registry", d->endpoints.len);
  return 0;
}

void
flint__endpoint_switch (flint_endpoint_t *ep, flint_version_t *v)
{
  flint_list_t *p, *t;
  flint_version_t *old = ep->current;

  ep->current = v;
  v->state = FLINT_VERSION_READY;
  /* the redeploy's manifest defines the knobs again */
  ep->scale = v->manifest->scale;
  /* the previous version leaves memory once its last replica is gone: now if it has none (a
   * stop below may finalize its last replica at once, which frees it then) */
  if (old && old != v)
    flint__version_maybe_free (old);
  flint_list_foreach_safe (p, t, &ep->replicas)
    {
      flint_replica_t *r = flint_list_entry (p, flint_replica_t, link);
      if (r->version == v || r->state == FLINT_REPLICA_STOPPING || r->state == FLINT_REPLICA_DEAD)
        continue;
      if (r->inflight == 0)
        flint__replica_stop (r, "a new version is serving");
      else
        r->state = FLINT_REPLICA_DRAINING;
    }
  flint__dispatch_pump (ep);
  flint__dispatch_scale_for_queue (ep);
}

static int
count_version_cb (void *ud, const flint_version_rec_t *v)
{
  uint64_t *n = ud;
  (void) v;
  (*n)++;
  return 0;
}

int
flint__endpoint_delete (flint_endpoint_t *ep, uint64_t *versions_out, flint_error_t *err)
{
  flint_list_t *p, *t;
  uint64_t count = 0;

  if (flint_registry_list_versions (ep->d->reg, ep->name, count_version_cb, &count, err) < 0)
    return -1;
  ep->deleting = true;
  /* stopping the last replica or failing the last queued request would reap the endpoint under
   * our feet: hold it until the walk is over */
  ep->holds++;
  flint_list_foreach_safe (p, t, &ep->replicas)
    {
      flint_replica_t *r = flint_list_entry (p, flint_replica_t, link);
      if (r->inflight == 0)
        flint__replica_stop (r, "the endpoint was deleted");
      else if (r->state == FLINT_REPLICA_READY)
        r->state = FLINT_REPLICA_DRAINING;
    }
  /* requests still waiting for a replica will never get one */
  while (!flint_list_empty (&ep->queue))
    {
      char msg[300];
      snprintf (msg, sizeof msg, "endpoint `%s` was deleted", ep->name);
      flint__request_complete (flint_list_entry (ep->queue.next, flint_request_t, link), FLINT_ENOTFOUND, msg,
                               NULL, 0);
    }
  if (versions_out)
    *versions_out = count;
  ep->holds--;
  flint__endpoint_maybe_reap (ep); /* may free ep: the last use */
  return 0;
}

static int
gc_bundle_cb (void *ud, const flint_version_rec_t *v)
{
  flint_daemon_t *d = ud;
  uint64_t refs = 0;
  flint_error_t err = FLINT_ERROR_INIT;

  /* called after the rows are gone: a bundle with no references left is removed */
  if (flint_registry_bundle_refs (d->reg, v->bundle_sha256, &refs, &err) == 0 && refs == 0)
    flint__store_remove_bundle (&d->cfg, v->bundle_sha256);
  return 0;
}

/* Collects the endpoint's version records (for the bundle GC after the delete). */
typedef struct vlist_s {
  flint_version_rec_t *items;
  size_t n, cap;
} vlist_t;

static int
collect_version_cb (void *ud, const flint_version_rec_t *v)
{
  vlist_t *l = ud;
  if (l->n == l->cap)
    {
      l->cap = l->cap ? l->cap * 2 : 8;
      l->items = realloc (l->items, l->cap * sizeof *l->items);
      if (l->items == NULL)
        abort ();
    }
  memset (&l->items[l->n], 0, sizeof l->items[l->n]);
  l->items[l->n].bundle_sha256 = xstrdup (v->bundle_sha256);
  l->items[l->n].version = v->version;
  l->n++;
  return 0;
}

uint32_t
flint__endpoint_drain (flint_endpoint_t *ep)
{
  flint_list_t *p, *t;
  uint32_t n = 0;

  flint__autoscale_forget (ep);
  flint_list_foreach_safe (p, t, &ep->replicas)
    {
      flint_replica_t *r = flint_list_entry (p, flint_replica_t, link);
      if (r->state != FLINT_REPLICA_READY || r->checkpointing)
        continue;
      n++;
      if (r->inflight == 0)
        flint__replica_stop (r, "drained on request");
      else
        r->state = FLINT_REPLICA_DRAINING;
    }
  return n;
}

void
flint__endpoint_maybe_reap (flint_endpoint_t *ep)
{
  flint_daemon_t *d = ep->d;
  flint_error_t err = FLINT_ERROR_INIT;
  vlist_t vl = { 0 };
  char dir[PATH_MAX];

  if (!ep->deleting || ep->holds || !flint_list_empty (&ep->replicas) || !flint_list_empty (&ep->queue)
      || ep->deploying)
    return;
  flint_registry_list_versions (d->reg, ep->name, collect_version_cb, &vl, &err);
  if (flint_registry_delete_endpoint (d->reg, ep->name, &err) < 0)
    flint_err ("delete endpoint `%s`: %s", ep->name, err.msg);
  for (size_t i = 0; i < vl.n; i++)
    {
      gc_bundle_cb (d, &vl.items[i]);
      snprintf (dir, sizeof dir, "%s/weights/versions/%s-%llu", d->cfg.run_dir, ep->name,
                (unsigned long long) vl.items[i].version);
      flint__store_unlink_weights (dir, &d->cfg);
      free (vl.items[i].bundle_sha256);
    }
  free (vl.items);
  flint__snapshot_remove_endpoint_images (d, ep->name);
  while (!flint_list_empty (&ep->versions))
    {
      flint_version_t *v = flint_list_entry (ep->versions.next, flint_version_t, link);
      flint_list_remove (&v->link);
      flint__version_free (v);
    }
  flint_logbook_remove_files (ep->logbook);
  flint_logbook_free (ep->logbook);
  flint_map_del (&d->endpoints, ep->name);
  flint_info ("endpoint `%s` deleted", ep->name);
  free (ep->name);
  free (ep);
}

void
flint__endpoints_free (flint_daemon_t *d)
{
  const char *key;
  void *val;

  for (size_t it = 0; flint_map_next (&d->endpoints, &it, &key, &val);)
    {
      flint_endpoint_t *ep = val;
      while (!flint_list_empty (&ep->versions))
        {
          flint_version_t *v = flint_list_entry (ep->versions.next, flint_version_t, link);
          flint_list_remove (&v->link);
          flint__version_free (v);
        }
      flint_logbook_free (ep->logbook);
      free (ep->name);
      free (ep);
    }
  flint_map_free (&d->endpoints);
}

