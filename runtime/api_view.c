/* Runtime state → flint.v1 messages, knob updates, health watchers.
 *
 * Messages are built as heap trees (every string, array and sub-message malloc'd) so that
 * protobuf-c's own free_unpacked releases them in one call. */
#include "api.h"
#include "flint/log.h"
#include "flint/util.h"

#include <stdlib.h>
#include <string.h>

static char *
dupstr (const char *s)
{
  char *r = strdup (s ? s : "");
  if (r == NULL)
    abort ();
  return r;
}

static void *
xcalloc (size_t n, size_t size)
{
  void *p = calloc (n ? n : 1, size);
  if (p == NULL)
    abort ();
  return p;
}

static Flint__V1__ScaleSettings *
scale_proto (const flint_scale_t *s)
{
  Flint__V1__ScaleSettings *m = xcalloc (1, sizeof *m);
  flint__v1__scale_settings__init (m);
  m->min_replicas = s->min_replicas;
  m->max_replicas = s->max_replicas;
  m->target_concurrency = s->target_concurrency;
  m->max_concurrency = s->max_concurrency;
  m->buffer_replicas = s->buffer_replicas;
  m->scaledown_window_ms = s->scaledown_window_ms;
  m->timeout_ms = s->timeout_ms;
  m->startup_timeout_ms = s->startup_timeout_ms;
  m->retries = s->retries;
  m->queue_size = s->queue_size;
  m->parked_replicas = s->parked_replicas;
  return m;
}

typedef struct vcollect_s {
  Flint__V1__VersionInfo **items;
  size_t n, cap;
} vcollect_t;

static int
version_cb (void *ud, const flint_version_rec_t *rec)
{
  vcollect_t *vc = ud;
  Flint__V1__VersionInfo *vi;

  if (vc->n == vc->cap)
    {
      vc->cap = vc->cap ? vc->cap * 2 : 8;
      vc->items = realloc (vc->items, vc->cap * sizeof *vc->items);
      if (vc->items == NULL)
        abort ();
    }
  vi = xcalloc (1, sizeof *vi);
  flint__v1__version_info__init (vi);
  vi->version = rec->version;
  vi->state = dupstr (rec->state);
  vi->bundle_sha256 = dupstr (rec->bundle_sha256);
  vi->created_ms = rec->created_ms;
  vi->error = dupstr (rec->error);
  vc->items[vc->n++] = vi;
  return 0;
}

static void
add_double_entry (Flint__V1__Endpoint *m, const char *key, double value)
{
  Flint__V1__Endpoint__ColdStartMsEntry *e = xcalloc (1, sizeof *e);
  flint__v1__endpoint__cold_start_ms_entry__init (e);
  e->key = dupstr (key);
  e->value = value;
  m->cold_start_ms = realloc (m->cold_start_ms, (m->n_cold_start_ms + 1) * sizeof *m->cold_start_ms);
  if (m->cold_start_ms == NULL)
    abort ();
  m->cold_start_ms[m->n_cold_start_ms++] = e;
}

static void
add_u64_entry (Flint__V1__EndpointStats__StartsEntry ***arr, size_t *n, const char *key, uint64_t value)
{
  Flint__V1__EndpointStats__StartsEntry *e = xcalloc (1, sizeof *e);
  flint__v1__endpoint_stats__starts_entry__init (e);
  e->key = dupstr (key);
  e->value = value;
  *arr = realloc (*arr, (*n + 1) * sizeof **arr);
  if (*arr == NULL)
    abort ();
  (*arr)[(*n)++] = e;
}

static void
add_code_entry (Flint__V1__EndpointStats *st, const char *key, uint64_t value)
{
  Flint__V1__EndpointStats__RequestsByCodeEntry *e = xcalloc (1, sizeof *e);
  flint__v1__endpoint_stats__requests_by_code_entry__init (e);
  e->key = dupstr (key);
  e->value = value;
  st->requests_by_code = realloc (st->requests_by_code, (st->n_requests_by_code + 1) * sizeof *st->requests_by_code);
  if (st->requests_by_code == NULL)
    abort ();
  st->requests_by_code[st->n_requests_by_code++] = e;
}

/* The autoscaler's state and the counters of metrics.h, for `flint status`. */
static Flint__V1__EndpointStats *
stats_proto (const flint_endpoint_t *ep)
{
  Flint__V1__EndpointStats *st = xcalloc (1, sizeof *st);
  const flint_ep_metrics_t *mt = &ep->metrics;
  const flint_autoscale_t *as = &ep->as;
  uint64_t now = flint_now_ns ();

  flint__v1__endpoint_stats__init (st);
  st->desired_replicas = as->desired;
  st->panic = now < as->panic_until_ns;
  st->stable_concurrency = as->stable_conc;
  st->panic_concurrency = as->panic_conc;
  st->queue_wait_p50_ms = flint_hist_quantile (&mt->queue_wait, 0.5);
  st->queue_wait_p99_ms = flint_hist_quantile (&mt->queue_wait, 0.99);
  for (int t = 0; t < 3; t++)
    add_u64_entry (&st->starts, &st->n_starts, flint__tier_name ((flint_tier_t) t), mt->cold_starts[t]);
  st->scale_ups = mt->scale_up;
  st->scale_downs = mt->scale_down;
  st->retries = mt->retries;
  st->replica_failures = mt->replica_failures;
  st->tier_fallbacks = mt->tier_fallbacks;
  for (int c = 0; c < 17; c++)
    if (mt->requests_by_code[c])
      add_code_entry (st, flint_status_name ((flint_status_t) c), mt->requests_by_code[c]);
  st->start_failures = as->start_failures;
  st->start_error = dupstr (as->start_error);
  if (as->next_start_ns > now)
    st->next_start_ms = flint_wall_ms () + (int64_t) ((as->next_start_ns - now) / 1000000);
  return st;
}

Flint__V1__Endpoint *
flint__endpoint_proto (flint_endpoint_t *ep, bool detailed)
{
  Flint__V1__Endpoint *m = xcalloc (1, sizeof *m);
  const flint_ep_metrics_t *mt = &ep->metrics;
  flint_list_t *p;
  size_t n;

  flint__v1__endpoint__init (m);
  m->name = dupstr (ep->name);
  m->version = ep->current ? ep->current->number : 0;
  m->kind = dupstr (ep->current ? flint_kind_name (ep->current->manifest->kind)
                                : (ep->deploying_version && ep->deploying_version->manifest
                                       ? flint_kind_name (ep->deploying_version->manifest->kind)
                                       : ""));
  m->state = dupstr (ep->deleting ? "deleting"
                     : ep->current ? "ready"
                     : ep->deploying ? "deploying"
                                     : "failed");
  m->scale = scale_proto (&ep->scale);
  m->requests_ok = ep->requests_ok;
  m->requests_failed = ep->requests_failed;
  m->queue_length = ep->queue_len;
  m->latency_p50_ms = flint_hist_quantile (&mt->latency, 0.5);
  m->latency_p99_ms = flint_hist_quantile (&mt->latency, 0.99);
  m->last_error = dupstr (ep->last_error);
  m->created_ms = ep->created_ms;
  if (ep->current)
    {
      const flint_manifest_t *man = ep->current->manifest;
      m->secrets = xcalloc (man->n_secrets, sizeof *m->secrets);
      for (size_t i = 0; i < man->n_secrets; i++)
        m->secrets[i] = dupstr (man->secrets[i]);
      m->n_secrets = man->n_secrets;
    }

  /* replicas are always listed (flint ls counts them); details only when asked */
  n = flint_list_length (&ep->replicas);
  m->replicas = xcalloc (n, sizeof *m->replicas);
  for (p = ep->replicas.next; p != &ep->replicas; p = p->next)
    {
      flint_replica_t *r = flint_list_entry (p, flint_replica_t, link);
      Flint__V1__Replica *rm = xcalloc (1, sizeof *rm);
      flint__v1__replica__init (rm);
      rm->id = dupstr (r->id);
      rm->state = dupstr (flint__replica_state_name (r->state));
      rm->in_flight = r->inflight;
      rm->tier = dupstr (flint__tier_name (r->tier));
      rm->start_ms = r->phases_ms[3];
      rm->requests = r->completed;
      rm->p50_ms = flint_hist_quantile (&r->latency, 0.5);
      rm->p99_ms = flint_hist_quantile (&r->latency, 0.99);
      rm->pid = r->pid;
      rm->version = r->version->number;
      rm->sandbox_ms = xcalloc (r->n_sandbox_phases, sizeof *rm->sandbox_ms);
      for (uint32_t k = 0; k < r->n_sandbox_phases; k++)
        {
          Flint__V1__Replica__SandboxMsEntry *e = xcalloc (1, sizeof *e);
          flint__v1__replica__sandbox_ms_entry__init (e);
          e->key = dupstr (r->sandbox_phase_names[k]);
          e->value = r->sandbox_phases_ms[k];
          rm->sandbox_ms[rm->n_sandbox_ms++] = e;
        }
      m->replicas[m->n_replicas++] = rm;
    }

  for (int tier = 0; tier < 3; tier++)
    {
      static const char *const tiers[3] = { "cold", "image", "parked" };
      for (int ph = 0; ph < FLINT_PHASE_COUNT; ph++)
        {
          const flint_hist_t *h = &mt->phases[tier][ph];
          char key[64];
          if (h->count == 0)
            continue;
          snprintf (key, sizeof key, "%s.%s.p50", tiers[tier], flint_phase_names[ph]);
          add_double_entry (m, key, flint_hist_quantile (h, 0.5));
          if (detailed)
            {
              snprintf (key, sizeof key, "%s.%s.p99", tiers[tier], flint_phase_names[ph]);
              add_double_entry (m, key, flint_hist_quantile (h, 0.99));
            }
        }
    }

  if (detailed)
    {
      vcollect_t vc = { 0 };
      flint_error_t err = FLINT_ERROR_INIT;
      if (flint_registry_list_versions (ep->d->reg, ep->name, version_cb, &vc, &err) < 0)
        flint_warn ("%s", err.msg);
      m->versions = vc.items;
      m->n_versions = vc.n;
    }
  m->stats = stats_proto (ep);
  flint__api_fill_snapshot (ep, m);
  flint__api_fill_engine (ep, m);
  return m;
}

int
flint__api_apply_scale (flint_endpoint_t *ep, const Flint__V1__ScaleRequest *req, flint_error_t *err)
{
  flint_scale_t s = ep->scale;
  const Flint__V1__ScaleSettings *in = req->settings;
  static const Flint__V1__ScaleSettings empty = FLINT__V1__SCALE_SETTINGS__INIT;

  if (in == NULL)
    in = &empty;
  if (req->n_set == 0)
    return flint_error_set (err, FLINT_EINVAL, "nothing to change: name the knobs to set");
  for (size_t i = 0; i < req->n_set; i++)
    {
      const char *k = req->set[i];
      if (strcmp (k, "min_replicas") == 0)
        s.min_replicas = in->min_replicas;
      else if (strcmp (k, "max_replicas") == 0)
        s.max_replicas = in->max_replicas;
      else if (strcmp (k, "target_concurrency") == 0)
        s.target_concurrency = in->target_concurrency;
      else if (strcmp (k, "max_concurrency") == 0)
        s.max_concurrency = in->max_concurrency;
      else if (strcmp (k, "buffer_replicas") == 0)
        s.buffer_replicas = in->buffer_replicas;
      else if (strcmp (k, "scaledown_window") == 0 || strcmp (k, "scaledown_window_ms") == 0)
        s.scaledown_window_ms = in->scaledown_window_ms;
      else if (strcmp (k, "timeout") == 0 || strcmp (k, "timeout_ms") == 0)
        s.timeout_ms = in->timeout_ms;
      else if (strcmp (k, "startup_timeout") == 0 || strcmp (k, "startup_timeout_ms") == 0)
        s.startup_timeout_ms = in->startup_timeout_ms;
      else if (strcmp (k, "retries") == 0)
        s.retries = in->retries;
      else if (strcmp (k, "queue_size") == 0)
        s.queue_size = in->queue_size;
      else if (strcmp (k, "parked_replicas") == 0)
        s.parked_replicas = in->parked_replicas;
      else
        return flint_error_set (err, FLINT_EINVAL, "unknown knob `%s`", k);
    }
  if (s.max_concurrency != ep->scale.max_concurrency && ep->current && ep->current->manifest->kind != FLINT_KIND_LLM)
    {
      /* a running worker sized its executor pool at load time */
      bool set_target = false;
      for (size_t i = 0; i < req->n_set; i++)
        if (strcmp (req->set[i], "target_concurrency") == 0)
          set_target = true;
      if (!set_target && s.target_concurrency > s.max_concurrency)
        s.target_concurrency = s.max_concurrency;
    }
  if (flint_scale_validate (&s, err) < 0)
    return flint_error_prefix (err, "endpoint `%s`", ep->name);
  ep->scale = s;
  if (flint__endpoint_save_scale (ep, err) < 0)
    return -1;
  flint_info ("endpoint `%s`: knobs updated (min %u, max %u, target %u, max_concurrency %u)", ep->name,
              s.min_replicas, s.max_replicas, s.target_concurrency, s.max_concurrency);
  flint__autoscale_now (ep);
  return 0;
}

/* ---- health watchers --------------------------------------------------------------------- */

void
flint__api_watch_add (flint_daemon_t *d, flint_rpc_t *rpc)
{
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (d->health_watch); i++)
    if (d->health_watch[i] == NULL)
      {
        d->health_watch[i] = rpc;
        return;
      }
  /* too many watchers: end this one (the client reconnects) */
  flint_rpc_finish (rpc, FLINT_EEXHAUSTED, "too many health watchers", NULL, 0);
}

void
flint__api_watch_remove (flint_daemon_t *d, flint_rpc_t *rpc)
{
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (d->health_watch); i++)
    if (d->health_watch[i] == rpc)
      d->health_watch[i] = NULL;
}

void
flint__api_watch_shutdown (flint_daemon_t *d)
{
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (d->health_watch); i++)
    {
      flint_rpc_t *rpc = d->health_watch[i];
      uint8_t buf[8];
      size_t n;

      if (rpc == NULL)
        continue;
      /* NOT_SERVING (2): field 1, varint */
      buf[0] = 0x08;
      buf[1] = 0x02;
      n = 2;
      flint_rpc_write (rpc, buf, n);
      flint_rpc_finish (rpc, FLINT_EUNAVAILABLE, "flintd is shutting down", NULL, 0);
      d->health_watch[i] = NULL;
    }
}

void
flint__endpoints_list_fill (flint_daemon_t *d, Flint__V1__ListEndpointsResponse *resp)
{
  Flint__V1__Endpoint **eps = calloc (d->endpoints.len + 1, sizeof *eps);
  const char *key;
  void *val;
  size_t n = 0;

  if (eps == NULL)
    abort ();
  for (size_t it = 0; flint_map_next (&d->endpoints, &it, &key, &val);)
    if (!((flint_endpoint_t *) val)->deleting)
      eps[n++] = flint__endpoint_proto (val, false);
  resp->n_endpoints = n;
  resp->endpoints = eps;
}

void
flint__endpoints_list_clear (Flint__V1__ListEndpointsResponse *resp)
{
  for (size_t i = 0; i < resp->n_endpoints; i++)
    flint__v1__endpoint__free_unpacked (resp->endpoints[i], NULL);
  free (resp->endpoints);
  resp->endpoints = NULL;
  resp->n_endpoints = 0;
}
