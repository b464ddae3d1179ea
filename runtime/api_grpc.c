/* The gRPC API edge: flint.v1.Flint and grpc.health.v1.Health handlers. This is the only place
 * where flint_status_t becomes a gRPC status and where protobuf-c API messages are built from
 * the runtime's structs (endpoint_view.c shares the conversion with the HTTP mirror). */
#include "api.h"
#include "daemon.h"
#include "grpc_server.h"
#include "flint/log.h"
#include "flint/util.h"
#include "flint/v1/flint.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

#include <stdlib.h>
#include <string.h>

void flint__deploy_rpc (flint_rpc_t *rpc, void *method_data);

/* Packs `msg` and finishes a unary rpc with it. */
static void
finish_msg (flint_rpc_t *rpc, const ProtobufCMessage *msg)
{
  size_t len = protobuf_c_message_get_packed_size (msg);
  uint8_t *buf = malloc (len ? len : 1);
  if (buf == NULL)
    abort ();
  protobuf_c_message_pack (msg, buf);
  flint_rpc_finish (rpc, 0, NULL, buf, len);
  free (buf);
}

static void
finish_err (flint_rpc_t *rpc, flint_status_t code, const char *msg)
{
  flint_rpc_finish (rpc, (int) code, msg, NULL, 0);
}

#define UNPACK_OR_FAIL(type, fn, rpc, var)                                                   \
  size_t var##_len;                                                                          \
  const uint8_t *var##_buf = flint_rpc_request (rpc, &var##_len);                           \
  type *var = fn (NULL, var##_len, var##_buf);                                               \
  if (var == NULL)                                                                           \
    {                                                                                        \
      finish_err (rpc, FLINT_EINVAL, "malformed request message");                           \
      return;                                                                                \
    }

/* ---- Invoke / InvokeStream --------------------------------------------------------------- */

static void
invoke_done (flint_request_t *req, flint_status_t code, const char *msg, const uint8_t *data, size_t len)
{
  flint_rpc_t *rpc = req->sink_data;

  if (code != FLINT_OK)
    {
      finish_err (rpc, code, msg);
      return;
    }
  Flint__V1__InvokeResponse resp = FLINT__V1__INVOKE_RESPONSE__INIT;
  resp.payload.data = (uint8_t *) data;
  resp.payload.len = len;
  resp.version = req->served_version;
  resp.replica = req->served_replica;
  finish_msg (rpc, &resp.base);
}

static void
stream_chunk (flint_request_t *req, const uint8_t *data, size_t len)
{
  flint_rpc_t *rpc = req->sink_data;
  Flint__V1__InvokeChunk chunk = FLINT__V1__INVOKE_CHUNK__INIT;
  uint8_t stackbuf[4096];
  uint8_t *buf = stackbuf;
  size_t n;

  chunk.data.data = (uint8_t *) data;
  chunk.data.len = len;
  n = flint__v1__invoke_chunk__get_packed_size (&chunk);
  if (n > sizeof stackbuf)
    {
      buf = malloc (n);
      if (buf == NULL)
        abort ();
    }
  flint__v1__invoke_chunk__pack (&chunk, buf);
  flint_rpc_write (rpc, buf, n);
  if (buf != stackbuf)
    free (buf);
}

static void
stream_done (flint_request_t *req, flint_status_t code, const char *msg, const uint8_t *data, size_t len)
{
  flint_rpc_t *rpc = req->sink_data;
  /* a function that answers a streaming call with a whole result: deliver it as one chunk */
  if (code == FLINT_OK && len > 0)
    stream_chunk (req, data, len);
  flint_rpc_finish (rpc, (int) code, code == FLINT_OK ? NULL : msg, NULL, 0);
}

static const flint_sink_ops_t unary_sink = { .chunk = NULL, .done = invoke_done };
static const flint_sink_ops_t stream_sink = { .chunk = stream_chunk, .done = stream_done };

static void
unary_chunk_ignored (flint_request_t *req, const uint8_t *data, size_t len)
{
  (void) req, (void) data, (void) len;
}

static const flint_sink_ops_t unary_sink_safe = { .chunk = unary_chunk_ignored, .done = invoke_done };

static void
invoke_cancel_cb (flint_rpc_t *rpc, void *data)
{
  (void) rpc;
  flint__request_cancel (data);
}

static void
invoke_common (flint_rpc_t *rpc, flint_daemon_t *d, bool streaming)
{
  UNPACK_OR_FAIL (Flint__V1__InvokeRequest, flint__v1__invoke_request__unpack, rpc, in);
  flint_request_t *req = flint__request_new (d, in->payload.data, in->payload.len, streaming,
                                             streaming ? &stream_sink : &unary_sink_safe, rpc);
  char name[128];

  (void) unary_sink;
  snprintf (name, sizeof name, "%s", in->endpoint);
  flint__v1__invoke_request__free_unpacked (in, NULL);
  flint_rpc_on_cancel (rpc, invoke_cancel_cb, req);
  flint__dispatch (req, name, flint_rpc_deadline_ns (rpc));
}

static void
invoke_rpc (flint_rpc_t *rpc, void *data)
{
  invoke_common (rpc, data, false);
}

static void
invoke_stream_rpc (flint_rpc_t *rpc, void *data)
{
  invoke_common (rpc, data, true);
}

/* The endpoint called `name`, or NULL after answering NOT_FOUND (deleted ones included). */
static flint_endpoint_t *
find_endpoint (flint_daemon_t *d, flint_rpc_t *rpc, const char *name)
{
  flint_endpoint_t *ep = flint__endpoint_get (d, name);
  char msg[200];

  if (ep && !ep->deleting)
    return ep;
  snprintf (msg, sizeof msg, "endpoint `%.150s` not found", name);
  finish_err (rpc, FLINT_ENOTFOUND, msg);
  return NULL;
}

/* ---- endpoints ----------------------------------------------------------------------------- */

static void
list_rpc (flint_rpc_t *rpc, void *data)
{
  flint_daemon_t *d = data;
  Flint__V1__ListEndpointsResponse resp = FLINT__V1__LIST_ENDPOINTS_RESPONSE__INIT;

  flint__endpoints_list_fill (d, &resp);
  finish_msg (rpc, &resp.base);
  flint__endpoints_list_clear (&resp);
}

static void
get_rpc (flint_rpc_t *rpc, void *data)
{
  flint_daemon_t *d = data;
  UNPACK_OR_FAIL (Flint__V1__GetEndpointRequest, flint__v1__get_endpoint_request__unpack, rpc, in);
  flint_endpoint_t *ep = find_endpoint (d, rpc, in->name);

  if (ep != NULL)
    {
      Flint__V1__Endpoint *msg = flint__endpoint_proto (ep, true);
      finish_msg (rpc, &msg->base);
      flint__v1__endpoint__free_unpacked (msg, NULL);
    }
  flint__v1__get_endpoint_request__free_unpacked (in, NULL);
}

static void
delete_rpc (flint_rpc_t *rpc, void *data)
{
  flint_daemon_t *d = data;
  UNPACK_OR_FAIL (Flint__V1__DeleteEndpointRequest, flint__v1__delete_endpoint_request__unpack, rpc, in);
  flint_endpoint_t *ep = find_endpoint (d, rpc, in->name);
  flint_error_t err = FLINT_ERROR_INIT;
  uint64_t n = 0;

  if (ep == NULL)
    ; /* answered NOT_FOUND */
  else if (ep->deploying)
    {
      char msg[200];
      snprintf (msg, sizeof msg, "endpoint `%s` has a deploy in progress; delete it when the deploy ends", in->name);
      finish_err (rpc, FLINT_EPRECONDITION, msg);
    }
  else if (flint__endpoint_delete (ep, &n, &err) < 0)
    finish_err (rpc, err.code, err.msg);
  else
    {
      Flint__V1__DeleteEndpointResponse resp = FLINT__V1__DELETE_ENDPOINT_RESPONSE__INIT;
      resp.versions_removed = n;
      finish_msg (rpc, &resp.base);
    }
  flint__v1__delete_endpoint_request__free_unpacked (in, NULL);
}

static void
scale_rpc (flint_rpc_t *rpc, void *data)
{
  flint_daemon_t *d = data;
  UNPACK_OR_FAIL (Flint__V1__ScaleRequest, flint__v1__scale_request__unpack, rpc, in);
  flint_endpoint_t *ep = find_endpoint (d, rpc, in->name);
  flint_error_t err = FLINT_ERROR_INIT;

  if (ep == NULL)
    ; /* answered NOT_FOUND */
  else if (flint__api_apply_scale (ep, in, &err) < 0)
    finish_err (rpc, err.code, err.msg);
  else
    {
      Flint__V1__Endpoint *msg = flint__endpoint_proto (ep, true);
      finish_msg (rpc, &msg->base);
      flint__v1__endpoint__free_unpacked (msg, NULL);
    }
  flint__v1__scale_request__free_unpacked (in, NULL);
}

static void
drain_rpc (flint_rpc_t *rpc, void *data)
{
  flint_daemon_t *d = data;
  UNPACK_OR_FAIL (Flint__V1__DrainRequest, flint__v1__drain_request__unpack, rpc, in);
  flint_endpoint_t *ep = find_endpoint (d, rpc, in->name);

  if (ep != NULL)
    {
      Flint__V1__DrainResponse resp = FLINT__V1__DRAIN_RESPONSE__INIT;
      resp.stopped = flint__endpoint_drain (ep);
      finish_msg (rpc, &resp.base);
    }
  flint__v1__drain_request__free_unpacked (in, NULL);
}

/* ---- health ------------------------------------------------------------------------------ */

static void
health_check_rpc (flint_rpc_t *rpc, void *data)
{
  flint_daemon_t *d = data;
  UNPACK_OR_FAIL (Grpc__Health__V1__HealthCheckRequest, grpc__health__v1__health_check_request__unpack, rpc, in);
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;

  if (in->service[0] && strcmp (in->service, "flint.v1.Flint") != 0)
    finish_err (rpc, FLINT_ENOTFOUND, "unknown service");
  else
    {
      resp.status = d->shutting_down ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
                                     : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
      finish_msg (rpc, &resp.base);
    }
  grpc__health__v1__health_check_request__free_unpacked (in, NULL);
}

static void
health_watch_cancel_cb (flint_rpc_t *rpc, void *data)
{
  flint_daemon_t *d = data;
  flint__api_watch_remove (d, rpc);
  flint_rpc_finish (rpc, FLINT_ECANCELLED, "cancelled", NULL, 0);
}

static void
health_watch_rpc (flint_rpc_t *rpc, void *data)
{
  flint_daemon_t *d = data;
  UNPACK_OR_FAIL (Grpc__Health__V1__HealthCheckRequest, grpc__health__v1__health_check_request__unpack, rpc, in);
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  uint8_t buf[16];
  size_t n;

  resp.status = in->service[0] && strcmp (in->service, "flint.v1.Flint") != 0
                    ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN
                    : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  grpc__health__v1__health_check_request__free_unpacked (in, NULL);
  n = grpc__health__v1__health_check_response__pack (&resp, buf);
  flint_rpc_write (rpc, buf, n);
  /* The stream stays open: status changes (shutdown) are pushed; it ends when either side goes. */
  flint__api_watch_add (d, rpc);
  flint_rpc_on_cancel (rpc, health_watch_cancel_cb, d);
}

int
flint__api_grpc_register (flint_daemon_t *d, flint_error_t *err)
{
  static const struct {
    const char *path;
    flint_rpc_kind_t kind;
    flint_rpc_arrived_cb cb;
  } methods[] = {
    { "/flint.v1.Flint/Invoke", FLINT_RPC_UNARY, invoke_rpc },
    { "/flint.v1.Flint/InvokeStream", FLINT_RPC_SERVER_STREAM, invoke_stream_rpc },
    { "/flint.v1.Flint/Deploy", FLINT_RPC_CLIENT_STREAM, flint__deploy_rpc },
    { "/flint.v1.Flint/ListEndpoints", FLINT_RPC_UNARY, list_rpc },
    { "/flint.v1.Flint/GetEndpoint", FLINT_RPC_UNARY, get_rpc },
    { "/flint.v1.Flint/DeleteEndpoint", FLINT_RPC_UNARY, delete_rpc },
    { "/flint.v1.Flint/Scale", FLINT_RPC_UNARY, scale_rpc },
    { "/flint.v1.Flint/Drain", FLINT_RPC_UNARY, drain_rpc },
    { "/flint.v1.Flint/Logs", FLINT_RPC_SERVER_STREAM, flint__logs_rpc },
    { "/flint.v1.Flint/SetSecret", FLINT_RPC_UNARY, flint__secret_set_rpc },
    { "/flint.v1.Flint/ListSecrets", FLINT_RPC_UNARY, flint__secret_list_rpc },
    { "/flint.v1.Flint/DeleteSecret", FLINT_RPC_UNARY, flint__secret_delete_rpc },
    { "/grpc.health.v1.Health/Check", FLINT_RPC_UNARY, health_check_rpc },
    { "/grpc.health.v1.Health/Watch", FLINT_RPC_SERVER_STREAM, health_watch_rpc },
  };

  for (size_t i = 0; i < FLINT_ARRAY_SIZE (methods); i++)
    if (flint_grpc_server_add_method (d->grpc, methods[i].path, methods[i].kind, methods[i].cb, d, err) < 0)
      return -1;
  return 0;
}
