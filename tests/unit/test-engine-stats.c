/* Unit tests of runtime/engine_stats.c: a worker's Pong statistics kept per replica (names
 * checked), aggregated into Endpoint.engine for `flint status`, rendered for /metrics. */
#include "tap.h"
#include "api.h"
#include "flint/worker/v1/worker.pb-c.h"

#include <math.h>

static void
pong_with (Flint__Worker__V1__Pong *p, Flint__Worker__V1__Pong__StatsEntry *e, Flint__Worker__V1__Pong__StatsEntry **pp,
           const char *const *k, const double *v, size_t n)
{
  flint__worker__v1__pong__init (p);
  for (size_t i = 0; i < n; i++)
    {
      flint__worker__v1__pong__stats_entry__init (&e[i]);
      e[i].key = (char *) k[i];
      e[i].value = v[i];
      pp[i] = &e[i];
    }
  p->n_stats = n;
  p->stats = pp;
}

static const char *
engine_value (const Flint__V1__Endpoint *m, const char *key)
{
  for (size_t i = 0; i < m->n_engine; i++)
    if (strcmp (m->engine[i]->key, key) == 0)
      return m->engine[i]->value;
  return NULL;
}

int
main (void)
{
  flint_endpoint_t ep = { 0 };
  flint_replica_t r1 = { 0 }, r2 = { 0 }, r3 = { 0 };
  Flint__Worker__V1__Pong pong;
  Flint__Worker__V1__Pong__StatsEntry e[16];
  Flint__Worker__V1__Pong__StatsEntry *pp[16];
  Flint__V1__Endpoint m = FLINT__V1__ENDPOINT__INIT;
  flint_buf_t out = FLINT_BUF_INIT;
  static const char *const k1[] = { "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "tokens_per_s",
                                    "kv_used", "kv_capacity_tokens", "requests_running", "requests_waiting",
                                    "requests_total", "tokens_total", "spec_acceptance_length", "Bad Name", "x" };
  double v1[] = { 10, 40, 5, 9, 100, 0.5, 1000, 2, 1, 7, 500, 2.5, 1, NAN };
  double v2[] = { 20, 30, 6, 8, 50, 0.25, 3000, 1, 0, 3, 200, 3.5, 0, 0 };

  ep.name = (char *) "chat";
  flint_list_init (&ep.replicas);
  snprintf (r1.id, sizeof r1.id, "chat-1-r1");
  snprintf (r2.id, sizeof r2.id, "chat-1-r2");
  snprintf (r3.id, sizeof r3.id, "chat-1-r3");
  r1.state = r2.state = FLINT_REPLICA_READY;
  r3.state = FLINT_REPLICA_STARTING;
  flint_list_insert_tail (&ep.replicas, &r1.link);
  flint_list_insert_tail (&ep.replicas, &r2.link);
  flint_list_insert_tail (&ep.replicas, &r3.link);

  flint__api_fill_engine (&ep, &m);
  ok (m.n_engine == 0, "no report, no engine section");

  pong_with (&pong, e, pp, k1, v1, 14);
  flint__engine_stats_update (&r1, &pong);
  pong_with (&pong, e, pp, k1, v2, 12);
  flint__engine_stats_update (&r2, &pong);
  flint__engine_stats_update (&r3, &pong); /* not ready: not counted */

  flint__api_fill_engine (&ep, &m);
  is_str (engine_value (&m, "replicas_reporting"), "2", "two ready replicas report");
  is_str (engine_value (&m, "ttft_p50_ms"), "20.00", "latency quantiles: the worst replica's");
  is_str (engine_value (&m, "ttft_p99_ms"), "40.00", "p99 too");
  is_str (engine_value (&m, "tokens_per_s"), "150.0", "rates add up");
  is_str (engine_value (&m, "kv_capacity_tokens"), "4000", "capacities add up");
  is_str (engine_value (&m, "kv_used"), "0.3125", "KV use over the total capacity: (500 + 750) / 4000");
  is_str (engine_value (&m, "spec_acceptance_length"), "3.00", "acceptance length: the mean");
  is_str (engine_value (&m, "tokens_total"), "700", "counters add up");
  ok (engine_value (&m, "Bad Name") == NULL && engine_value (&m, "x") == NULL, "bad names and NaN dropped");
  for (size_t i = 0; i < m.n_engine; i++)
    {
      free (m.engine[i]->key);
      free (m.engine[i]->value);
      free (m.engine[i]);
    }
  free (m.engine);

  flint__engine_metrics_render (&ep, &out);
  contains (out.data, "flint_engine_time_to_first_token_seconds{endpoint=\"chat\",replica=\"chat-1-r1\",quantile=\"0.5\"} 0.01\n",
            "TTFT quantile in seconds");
  contains (out.data, "flint_engine_tokens_per_second{endpoint=\"chat\",replica=\"chat-1-r2\"} 50\n", "tokens/s per replica");
  contains (out.data, "flint_engine_speculative_acceptance_length{endpoint=\"chat\",replica=\"chat-1-r1\"} 2.5\n",
            "acceptance length");
  ok (strstr (out.data, "chat-1-r3") == NULL, "a starting replica is not rendered");
  ok (strstr (out.data, "# TYPE") == NULL, "untyped samples (families span endpoints)");

  flint__engine_stats_forget (&r1);
  flint__engine_stats_forget (&r2);
  flint__engine_stats_forget (&r3);
  ok (r1.engine_stats == NULL, "forget frees");
  flint_buf_free (&out);
  return tap_done ();
}
