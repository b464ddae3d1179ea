/* Shared pieces of flintd's API edges (gRPC in api_grpc.c, HTTP in api_http.c): the
 * conversion of runtime state into flint.v1 messages, knob updates, and RPC handlers that live
 * next to their subsystem (logs, secrets). */
#ifndef FLINT_API_H
#define FLINT_API_H

#include "daemon.h"
#include "grpc_server.h"
#include "flint/v1/flint.pb-c.h"

/* Builds a flint.v1.Endpoint describing `ep`: a heap tree owned by the caller, freed with
 * flint__v1__endpoint__free_unpacked(msg, NULL). `detailed` adds replicas, versions, timings. */
Flint__V1__Endpoint *flint__endpoint_proto (flint_endpoint_t *ep, bool detailed);

/* Fills `resp` with every endpoint not being deleted (summaries, as ListEndpoints returns
 * them); the messages are owned by `resp` until flint__endpoints_list_clear. */
void flint__endpoints_list_fill (flint_daemon_t *d, Flint__V1__ListEndpointsResponse *resp);
void flint__endpoints_list_clear (Flint__V1__ListEndpointsResponse *resp);

/* Applies a ScaleRequest to `ep` (validated as a whole first; nothing changes on error),
 * persists it, and lets the autoscaler act on it at once. */
int flint__api_apply_scale (flint_endpoint_t *ep, const Flint__V1__ScaleRequest *req, flint_error_t *err);

/* Health watchers (grpc.health.v1.Health/Watch streams) told about shutdown. */
void flint__api_watch_add (flint_daemon_t *d, flint_rpc_t *rpc);
void flint__api_watch_remove (flint_daemon_t *d, flint_rpc_t *rpc);
void flint__api_watch_shutdown (flint_daemon_t *d);

/* Handlers that live with their subsystem. */
void flint__logs_rpc (flint_rpc_t *rpc, void *daemon);
void flint__logs_rpc_shutdown (flint_daemon_t *d);
void flint__secret_set_rpc (flint_rpc_t *rpc, void *daemon);
void flint__secret_list_rpc (flint_rpc_t *rpc, void *daemon);
void flint__secret_delete_rpc (flint_rpc_t *rpc, void *daemon);

#endif
