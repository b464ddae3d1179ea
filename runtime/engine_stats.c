/* Model-engine statistics of `kind: llm` replicas: collected from the workers' Pong frames and
 * shown by `flint status`, GET /v1/endpoints/{name} and /metrics (issue 6 fills this in). */
#include "api.h"
#include "flint/worker/v1/worker.pb-c.h"

void
flint__engine_stats_update (flint_replica_t *r, const Flint__Worker__V1__Pong *pong)
{
  (void) r;
  (void) pong;
}

void
flint__api_fill_engine (flint_endpoint_t *ep, Flint__V1__Endpoint *m)
{
  (void) ep;
  (void) m;
}

void
flint__engine_metrics_render (flint_endpoint_t *ep, flint_buf_t *out)
{
  (void) ep;
  (void) out;
}
