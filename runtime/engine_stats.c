/* Model-engine statistics of `kind: llm` replicas: collected from the workers' Pong frames and
 * shown by `flint status`, GET /v1/endpoints/{name} (the Endpoint.engine map) and /metrics.
 *
 * Workers report their engine's metrics (time to first token and inter-token latency quantiles,
 * tokens/s, KV-cache use, speculative acceptance length: worker/engine/engine.h) in every Pong.
 * To keep them fresh flintd pings each ready llm replica every ENGINE_PING_MS; a Ping costs the
 * worker's main thread a few microseconds and never waits on generation. These pings carry
 * sequence numbers with the top bit set, which the snapshot canary's numbering never uses.
 *
 * The worker is sandboxed but not trusted: names are kept only when short and made of
 * [a-z0-9_], values only when finite, at most MAX_STATS of them. */
#include "api.h"
#include "flint/log.h"
#include "flint/util.h"
#include "flint/worker/v1/worker.pb-c.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENGINE_PING_MS 2000
#define ENGINE_PING_SEQ_BIT (1ull << 63)
#define MAX_STATS 32
#define MAX_NAME 48

struct flint_engine_stats_s {
  uint64_t updated_ns;
  size_t n;
  char names[MAX_STATS][MAX_NAME];
  double values[MAX_STATS];
};

static bool
name_ok (const char *s)
{
  size_t n = strlen (s);
  if (n == 0 || n >= MAX_NAME)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
      return false;
  return true;
}

void
flint__engine_stats_update (flint_replica_t *r, const Flint__Worker__V1__Pong *pong)
{
  flint_engine_stats_t *s;

  if (pong->n_stats == 0)
    return;
  if (r->engine_stats == NULL && (r->engine_stats = calloc (1, sizeof *r->engine_stats)) == NULL)
    return;
  s = r->engine_stats;
  s->n = 0;
  for (size_t i = 0; i < pong->n_stats && s->n < MAX_STATS; i++)
    {
      const Flint__Worker__V1__Pong__StatsEntry *e = pong->stats[i];
      if (e->key == NULL || !name_ok (e->key) || !isfinite (e->value))
        continue;
      snprintf (s->names[s->n], MAX_NAME, "%s", e->key);
      s->values[s->n++] = e->value;
    }
  s->updated_ns = flint_now_ns ();
}

void
flint__engine_stats_forget (flint_replica_t *r)
{
  free (r->engine_stats);
  r->engine_stats = NULL;
}

static bool
get (const flint_engine_stats_t *s, const char *name, double *out)
{
  for (size_t i = 0; s && i < s->n; i++)
    if (strcmp (s->names[i], name) == 0)
      {
        *out = s->values[i];
        return true;
      }
  return false;
}

/* Replicas whose numbers count: ready (or draining) with a report. */
static bool
reporting (const flint_replica_t *r)
{
  return r->engine_stats && (r->state == FLINT_REPLICA_READY || r->state == FLINT_REPLICA_DRAINING);
}

static void
add_entry (Flint__V1__Endpoint *m, const char *key, int decimals, double v)
{
  Flint__V1__Endpoint__EngineEntry *e = calloc (1, sizeof *e);
  char buf[64];
  Flint__V1__Endpoint__EngineEntry **grown;

  if (e == NULL)
    abort ();
  flint__v1__endpoint__engine_entry__init (e);
  snprintf (buf, sizeof buf, "%.*f", decimals, v);
  e->key = strdup (key);
  e->value = strdup (buf);
  grown = realloc (m->engine, (m->n_engine + 1) * sizeof *m->engine);
  if (e->key == NULL || e->value == NULL || grown == NULL)
    abort ();
  m->engine = grown;
  m->engine[m->n_engine++] = e;
}

/* The endpoint's view: sums of rates and counts, the worst replica's latency quantiles, the
 * KV cache as used / capacity over all replicas, the mean acceptance length. */
void
flint__api_fill_engine (flint_endpoint_t *ep, Flint__V1__Endpoint *m)
{
  static const char *const worst[] = { "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms" };
  static const char *const summed[] = { "tokens_per_s", "requests_running", "requests_waiting", "requests_total",
                                        "tokens_total", "kv_capacity_tokens" };
  double w[4] = { 0 }, sums[6] = { 0 }, kv_used = 0, accept = 0;
  unsigned n = 0, n_accept = 0;

  for (flint_list_t *p = ep->replicas.next; p != &ep->replicas; p = p->next)
    {
      flint_replica_t *r = flint_list_entry (p, flint_replica_t, link);
      double v, cap;
      if (!reporting (r))
        continue;
      n++;
      for (size_t i = 0; i < 4; i++)
        if (get (r->engine_stats, worst[i], &v) && v > w[i])
          w[i] = v;
      for (size_t i = 0; i < 6; i++)
        if (get (r->engine_stats, summed[i], &v))
          sums[i] += v;
      if (get (r->engine_stats, "kv_used", &v) && get (r->engine_stats, "kv_capacity_tokens", &cap))
        kv_used += v * cap;
      if (get (r->engine_stats, "spec_acceptance_length", &v))
        {
          accept += v;
          n_accept++;
        }
    }
  if (n == 0)
    return;
  add_entry (m, "replicas_reporting", 0, n);
  for (size_t i = 0; i < 4; i++)
    add_entry (m, worst[i], 2, w[i]);
  add_entry (m, "tokens_per_s", 1, sums[0]);
  add_entry (m, "requests_running", 0, sums[1]);
  add_entry (m, "requests_waiting", 0, sums[2]);
  add_entry (m, "requests_total", 0, sums[3]);
  add_entry (m, "tokens_total", 0, sums[4]);
  add_entry (m, "kv_capacity_tokens", 0, sums[5]);
  add_entry (m, "kv_used", 4, sums[5] > 0 ? kv_used / sums[5] : 0);
  if (n_accept)
    add_entry (m, "spec_acceptance_length", 2, accept / n_accept);
}

/* Prometheus text, one sample per replica and metric. The samples are left untyped: several
 * endpoints contribute to one family, and TYPE lines may not repeat. */
void
flint__engine_metrics_render (flint_endpoint_t *ep, flint_buf_t *out)
{
  static const struct {
    const char *stat, *metric, *quantile;
    double scale;
  } map[] = {
    { "ttft_p50_ms", "flint_engine_time_to_first_token_seconds", "0.5", 1e-3 },
    { "ttft_p99_ms", "flint_engine_time_to_first_token_seconds", "0.99", 1e-3 },
    { "itl_p50_ms", "flint_engine_inter_token_latency_seconds", "0.5", 1e-3 },
    { "itl_p99_ms", "flint_engine_inter_token_latency_seconds", "0.99", 1e-3 },
    { "tokens_per_s", "flint_engine_tokens_per_second", NULL, 1 },
    { "kv_used", "flint_engine_kv_cache_used_ratio", NULL, 1 },
    { "kv_capacity_tokens", "flint_engine_kv_cache_capacity_tokens", NULL, 1 },
    { "requests_running", "flint_engine_requests_running", NULL, 1 },
    { "requests_waiting", "flint_engine_requests_waiting", NULL, 1 },
    { "requests_total", "flint_engine_requests_total", NULL, 1 },
    { "tokens_total", "flint_engine_tokens_total", NULL, 1 },
    { "spec_acceptance_length", "flint_engine_speculative_acceptance_length", NULL, 1 },
  };

  for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
    for (flint_list_t *p = ep->replicas.next; p != &ep->replicas; p = p->next)
      {
        flint_replica_t *r = flint_list_entry (p, flint_replica_t, link);
        double v;
        if (!reporting (r) || !get (r->engine_stats, map[k].stat, &v))
          continue;
        flint_buf_printf (out, "%s{endpoint=\"%s\",replica=\"%s\"", map[k].metric, ep->name, r->id);
        if (map[k].quantile)
          flint_buf_printf (out, ",quantile=\"%s\"", map[k].quantile);
        flint_buf_printf (out, "} %.9g\n", v * map[k].scale);
      }
}

/* ---- periodic pings ------------------------------------------------------------------------ */

static void
ping_cb (uv_timer_t *t)
{
  flint_daemon_t *d = t->data;
  static uint64_t seq;
  const char *key;
  void *val;

  for (size_t it = 0; flint_map_next (&d->replicas, &it, &key, &val);)
    {
      flint_replica_t *r = val;
      Flint__Worker__V1__Ping ping = FLINT__WORKER__V1__PING__INIT;
      Flint__Worker__V1__Frame f = FLINT__WORKER__V1__FRAME__INIT;
      if (r->state != FLINT_REPLICA_READY || r->chan == NULL || r->checkpointing || r->resuming
          || r->version->manifest == NULL || r->version->manifest->kind != FLINT_KIND_LLM)
        continue;
      ping.seq = ENGINE_PING_SEQ_BIT | ++seq;
      f.msg_case = FLINT__WORKER__V1__FRAME__MSG_PING;
      f.ping = &ping;
      if (flint_channel_send (r->chan, &f.base, NULL, 0) < 0)
        flint_debug ("replica %s: engine ping not sent", r->id);
    }
}

void
flint__engine_stats_start (flint_daemon_t *d)
{
  d->engine_tick = calloc (1, sizeof *d->engine_tick);
  if (d->engine_tick == NULL)
    abort ();
  uv_timer_init (d->loop, d->engine_tick);
  d->engine_tick->data = d;
  uv_timer_start (d->engine_tick, ping_cb, ENGINE_PING_MS, ENGINE_PING_MS);
}

static void
free_cb (uv_handle_t *h)
{
  free (h);
}

void
flint__engine_stats_stop (flint_daemon_t *d)
{
  if (d->engine_tick)
    {
      uv_timer_stop (d->engine_tick);
      uv_close ((uv_handle_t *) d->engine_tick, free_cb);
      d->engine_tick = NULL;
    }
}
