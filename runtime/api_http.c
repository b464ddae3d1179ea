/* The HTTP/JSON front door: libh2o (its libuv flavour) on flintd's own loop, so HTTP requests
 * reach dispatch through the same sink interface as gRPC calls, with no thread hop.
 *
 *   POST /v1/endpoints/{name}:invoke[?stream=1][&timeout=30s]   body in, body out
 *   GET  /v1/endpoints, GET /v1/endpoints/{name}                 JSON (flint.v1 messages)
 *   GET  /healthz, GET /metrics                                  health, Prometheus text
 *
 * Routing and query parsing are in http_route.c (fuzzed). h2o reads the whole request body
 * before calling us (bounded by FLINT_HTTP_MAX_BODY, then by the endpoint's max_payload).
 * Errors are JSON, {"error": {"code": "NOT_FOUND", "message": "..."}}, with the HTTP status of
 * the gRPC code (http_route.c). docs/HTTP.md is the user-facing description.
 *
 * Lifetimes: a call's state lives in the h2o request's memory pool, with a dispose callback.
 * When h2o drops the request before we answered (HTTP/2 stream reset, connection closed), the
 * callback cancels the flint request; sinks called after that find sink_data NULL. h2o cannot
 * close connections on demand, so at shutdown their read side is shut down: each closes as soon
 * as its answers are out, and the context is released once the loop has stopped. */
#include "api.h"
#include "http_route.h"
#include "flint/log.h"
#include "flint/pbjson.h"
#include "flint/util.h"
#include "flint-config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#if FLINT_HAVE_HTTP

#include <h2o.h>

#define FLINT_HTTP_MAX_BODY ((size_t) 1 << 30) /* the largest max_payload a manifest may set */

typedef struct flint_http_s {
  flint_daemon_t *d;
  h2o_globalconf_t config;
  h2o_context_t ctx;
  h2o_accept_ctx_t accept;
  uv_tcp_t *listener;
  flint_list_t conns;
  bool ctx_ready;
} flint_http_t;

typedef struct http_handler_s {
  h2o_handler_t super;
  flint_http_t *http;
} http_handler_t;

/* One accepted connection: the uv handle h2o's socket wraps (first member: h2o's close
 * callback receives the handle) and our list of open connections. */
typedef struct http_conn_s {
  uv_tcp_t tcp;
  flint_list_t link;
} http_conn_t;

/* One invoke, in the h2o request's pool. */
typedef struct http_call_s {
  h2o_generator_t gen;         /* first member: h2o passes it back to proceed/stop */
  h2o_req_t *req;              /* NULL once h2o disposed the request */
  flint_request_t *freq;       /* NULL once answered */
  bool streaming;
  bool started;                /* streaming: headers sent */
  bool sending;                /* streaming: h2o holds `inflight` until proceed */
  bool final;                  /* streaming: the function finished */
  flint_status_t end_code;
  flint_buf_t pending;         /* chunks received while a send was in flight */
  flint_buf_t inflight;
} http_call_t;

/* ---- responses ---------------------------------------------------------------------------- */

static void
add_header (h2o_req_t *req, const h2o_token_t *token, const char *value)
{
  h2o_iovec_t v = h2o_strdup (&req->pool, value, strlen (value));
  h2o_add_header (&req->pool, &req->res.headers, token, NULL, v.base, v.len);
}

static void
add_header_str (h2o_req_t *req, const char *name, const char *value)
{
  h2o_iovec_t v = h2o_strdup (&req->pool, value, strlen (value));
  h2o_add_header_by_str (&req->pool, &req->res.headers, name, strlen (name), 0, NULL, v.base, v.len);
}

static void
send_body (h2o_req_t *req, int status, const char *content_type, const void *data, size_t len)
{
  req->res.status = status;
  req->res.reason = flint_http_reason (status);
  req->res.content_length = len;
  add_header (req, H2O_TOKEN_CONTENT_TYPE, content_type);
  h2o_send_inline (req, data ? data : "", len);
}

static void
send_error (h2o_req_t *req, int status, flint_status_t code, const char *msg, const char *allow)
{
  flint_buf_t b = FLINT_BUF_INIT;

  flint_buf_printf (&b, "{\"error\": {\"code\": \"%s\", \"message\": ", flint_status_name (code));
  flint_buf_json_string (&b, msg ? msg : "", msg ? strlen (msg) : 0);
  flint_buf_puts (&b, "}}\n");
  if (allow)
    add_header (req, H2O_TOKEN_ALLOW, allow);
  if (status == 429 || status == 503)
    add_header (req, H2O_TOKEN_RETRY_AFTER, "1");
  send_body (req, status, "application/json", b.data, b.len);
  flint_buf_free (&b);
}

static void
send_message_json (h2o_req_t *req, const ProtobufCMessage *msg)
{
  flint_buf_t b = FLINT_BUF_INIT;
  flint_pbjson_render (msg, &b);
  flint_buf_putc (&b, '\n');
  send_body (req, 200, "application/json", b.data, b.len);
  flint_buf_free (&b);
}

static void
served_headers (h2o_req_t *req, const flint_request_t *fr)
{
  char v[32];
  snprintf (v, sizeof v, "%llu", (unsigned long long) fr->served_version);
  add_header_str (req, "x-flint-version", v);
  add_header_str (req, "x-flint-replica", fr->served_replica);
}

/* ---- invoke: the dispatch sink ------------------------------------------------------------- */

/* Streaming: hands what has accumulated to h2o (one send in flight at a time). */
static void
flush (http_call_t *c)
{
  h2o_iovec_t buf;
  flint_buf_t t;
  h2o_send_state_t state = H2O_SEND_STATE_IN_PROGRESS;

  if (c->req == NULL || c->sending || (c->pending.len == 0 && !c->final))
    return;
  t = c->inflight;
  c->inflight = c->pending;
  c->pending = t;
  flint_buf_reset (&c->pending);
  buf = h2o_iovec_init (c->inflight.data, c->inflight.len);
  if (c->final)
    /* a stream that fails after its output began cannot change its status: it is cut short
     * (HTTP/1.1 without the last chunk, HTTP/2 with RST_STREAM), which clients see as an error */
    state = c->end_code == FLINT_OK ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_ERROR;
  c->sending = state == H2O_SEND_STATE_IN_PROGRESS;
  h2o_send (c->req, &buf, buf.len ? 1 : 0, state);
}

static void
proceed_cb (h2o_generator_t *gen, h2o_req_t *req)
{
  http_call_t *c = (http_call_t *) gen;
  (void) req;
  c->sending = false;
  flint_buf_reset (&c->inflight);
  flush (c);
}

static void
stop_cb (h2o_generator_t *gen, h2o_req_t *req)
{
  /* the pool's dispose callback (call_dispose) does the cancelling */
  (void) gen;
  (void) req;
}

static void
start_stream (http_call_t *c, const flint_request_t *fr)
{
  h2o_req_t *req = c->req;
  req->res.status = 200;
  req->res.reason = "OK";
  add_header (req, H2O_TOKEN_CONTENT_TYPE, "application/octet-stream");
  served_headers (req, fr);
  c->gen.proceed = proceed_cb;
  c->gen.stop = stop_cb;
  h2o_start_response (req, &c->gen);
  c->started = true;
}

static void
sink_chunk (flint_request_t *fr, const uint8_t *data, size_t len)
{
  http_call_t *c = fr->sink_data;

  if (c == NULL || c->req == NULL || !c->streaming)
    return;
  if (!c->started)
    start_stream (c, fr);
  flint_buf_append (&c->pending, data, len);
  flush (c);
}

static void
sink_done (flint_request_t *fr, flint_status_t code, const char *msg, const uint8_t *data, size_t len)
{
  http_call_t *c = fr->sink_data;

  if (c == NULL)
    return;
  c->freq = NULL;
  fr->sink_data = NULL;
  if (c->req == NULL)
    return;
  if (c->started)
    {
      if (code == FLINT_OK && len)
        flint_buf_append (&c->pending, data, len);
      c->final = true;
      c->end_code = code;
      flush (c);
      return;
    }
  if (code != FLINT_OK)
    {
      send_error (c->req, flint_http_status_of (code), code, msg, NULL);
      return;
    }
  served_headers (c->req, fr);
  send_body (c->req, 200, "application/octet-stream", data, len);
}

static const flint_sink_ops_t http_sink = { .chunk = sink_chunk, .done = sink_done };

static void
call_dispose (void *p)
{
  http_call_t *c = p;
  flint_request_t *fr = c->freq;

  c->req = NULL;
  c->freq = NULL;
  flint_buf_free (&c->pending);
  flint_buf_free (&c->inflight);
  if (fr)
    {
      /* the client went away before the answer */
      fr->sink_data = NULL;
      flint__request_cancel (fr);
    }
}

static void
handle_invoke (flint_http_t *http, h2o_req_t *req, const flint_http_route_t *route)
{
  flint_endpoint_t *ep = flint__endpoint_get (http->d, route->endpoint);
  http_call_t *c;
  flint_request_t *fr;

  if (ep && !ep->deleting && ep->current && ep->current->manifest && req->entity.len > ep->current->manifest->max_payload)
    {
      char msg[300];
      snprintf (msg, sizeof msg, "endpoint `%s`: payload of %zu bytes exceeds max_payload (%llu bytes)", ep->name,
                req->entity.len, (unsigned long long) ep->current->manifest->max_payload);
      send_error (req, 413, FLINT_EEXHAUSTED, msg, NULL);
      return;
    }
  c = h2o_mem_alloc_shared (&req->pool, sizeof *c, call_dispose);
  memset (c, 0, sizeof *c);
  c->req = req;
  c->streaming = route->stream;
  fr = flint__request_new (http->d, (const uint8_t *) req->entity.base, req->entity.base ? req->entity.len : 0,
                           route->stream, &http_sink, c);
  c->freq = fr;
  /* a client deadline only ever shortens the endpoint's `timeout`: one too far away to add to
   * the clock (`timeout=18446744073708ms`) is no deadline, never a wrapped one in the past */
  flint__dispatch (fr, route->endpoint,
                   route->timeout_ms && route->timeout_ms < (UINT64_MAX - flint_now_ns ()) / 1000000ull
                     ? flint_now_ns () + route->timeout_ms * 1000000ull
                     : 0);
}

/* ---- the other routes ------------------------------------------------------------------------ */

static void
handle_list (flint_http_t *http, h2o_req_t *req)
{
  flint_daemon_t *d = http->d;
  Flint__V1__ListEndpointsResponse resp = FLINT__V1__LIST_ENDPOINTS_RESPONSE__INIT;

  flint__endpoints_list_fill (d, &resp);
  send_message_json (req, &resp.base);
  flint__endpoints_list_clear (&resp);
}

/* The endpoint called `name`, or NULL after answering 404 (deleted ones included). */
static flint_endpoint_t *
find_endpoint (flint_http_t *http, h2o_req_t *req, const char *name)
{
  flint_endpoint_t *ep = flint__endpoint_get (http->d, name);
  char msg[200];

  if (ep && !ep->deleting)
    return ep;
  snprintf (msg, sizeof msg, "endpoint `%.150s` not found", name);
  send_error (req, 404, FLINT_ENOTFOUND, msg, NULL);
  return NULL;
}

static void
handle_get (flint_http_t *http, h2o_req_t *req, const char *name)
{
  flint_endpoint_t *ep = find_endpoint (http, req, name);
  Flint__V1__Endpoint *m;

  if (ep == NULL)
    return;
  m = flint__endpoint_proto (ep, true);
  send_message_json (req, &m->base);
  flint__v1__endpoint__free_unpacked (m, NULL);
}

/* POST :drain, as `flint drain`: running replicas stop now, the next request scales from zero. */
static void
handle_drain (flint_http_t *http, h2o_req_t *req, const char *name)
{
  flint_endpoint_t *ep = find_endpoint (http, req, name);
  Flint__V1__DrainResponse resp = FLINT__V1__DRAIN_RESPONSE__INIT;

  if (ep == NULL)
    return;
  resp.stopped = flint__endpoint_drain (ep);
  send_message_json (req, &resp.base);
}

static void
handle_metrics (flint_http_t *http, h2o_req_t *req)
{
  flint_buf_t b = FLINT_BUF_INIT;
  flint__metrics_render (http->d, &b);
  send_body (req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
  flint_buf_free (&b);
}

static int
on_req (h2o_handler_t *self, h2o_req_t *req)
{
  flint_http_t *http = ((http_handler_t *) self)->http;
  flint_http_route_t route;
  flint_error_t err = FLINT_ERROR_INIT;
  const char *allow = NULL;
  int status;

  status = flint_http_route_parse (req->input.method.base, req->input.method.len, req->input.path.base,
                                   req->input.path.len, &route, &allow, &err);
  if (status)
    {
      send_error (req, status, err.code, err.msg, allow);
      return 0;
    }
  switch (route.kind)
    {
    case FLINT_HTTP_INVOKE: handle_invoke (http, req, &route); break;
    case FLINT_HTTP_LIST: handle_list (http, req); break;
    case FLINT_HTTP_GET: handle_get (http, req, route.endpoint); break;
    case FLINT_HTTP_DRAIN: handle_drain (http, req, route.endpoint); break;
    case FLINT_HTTP_METRICS: handle_metrics (http, req); break;
    case FLINT_HTTP_HEALTHZ:
      if (http->d->shutting_down)
        send_error (req, 503, FLINT_EUNAVAILABLE, "flintd is shutting down", NULL);
      else
        send_body (req, 200, "application/json", "{\"status\": \"SERVING\"}\n", 22);
      break;
    }
  return 0;
}

/* ---- connections ------------------------------------------------------------------------------ */

static void
conn_closed_cb (uv_handle_t *h)
{
  http_conn_t *c = (http_conn_t *) h;
  flint_list_remove (&c->link);
  free (c);
}

static void
on_accept (uv_stream_t *listener, int status)
{
  flint_http_t *http = listener->data;
  http_conn_t *c;
  h2o_socket_t *sock;

  if (status != 0 || http->d->shutting_down)
    return;
  c = calloc (1, sizeof *c);
  if (c == NULL)
    abort ();
  flint_list_init (&c->link);
  uv_tcp_init (listener->loop, &c->tcp);
  if (uv_accept (listener, (uv_stream_t *) &c->tcp) != 0)
    {
      uv_close ((uv_handle_t *) &c->tcp, conn_closed_cb);
      return;
    }
  uv_tcp_nodelay (&c->tcp, 1);
  flint_list_insert_tail (&http->conns, &c->link);
  sock = h2o_uv_socket_create ((uv_stream_t *) &c->tcp, conn_closed_cb);
  h2o_accept (&http->accept, sock);
}

/* Parses "host:port" or "[v6]:port". */
static int
parse_addr (const char *addr, struct sockaddr_storage *ss)
{
  char host[256];
  const char *colon = strrchr (addr, ':');
  char *end;
  long port;
  size_t hl;

  if (colon == NULL)
    return -EINVAL;
  port = strtol (colon + 1, &end, 10);
  if (*end || end == colon + 1 || port < 0 || port > 65535)
    return -EINVAL;
  hl = (size_t) (colon - addr);
  if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']')
    {
      if (hl - 2 >= sizeof host)
        return -EINVAL;
      memcpy (host, addr + 1, hl - 2);
      host[hl - 2] = '\0';
      return uv_ip6_addr (host, (int) port, (struct sockaddr_in6 *) ss);
    }
  if (hl >= sizeof host)
    return -EINVAL;
  memcpy (host, addr, hl);
  host[hl] = '\0';
  return uv_ip4_addr (host, (int) port, (struct sockaddr_in *) ss);
}

typedef struct handle_set_s {
  uv_handle_t **items;
  size_t n, cap;
} handle_set_t;

static void
collect_cb (uv_handle_t *h, void *arg)
{
  handle_set_t *s = arg;
  if (s->n == s->cap)
    {
      s->cap = s->cap ? s->cap * 2 : 64;
      s->items = realloc (s->items, s->cap * sizeof *s->items);
      if (s->items == NULL)
        abort ();
    }
  s->items[s->n++] = h;
}

/* h2o's context owns handles of its own (a uv_async for its cross-thread queue, timers) that
 * would keep the loop alive at shutdown: they must not, connections do. */
static void
unref_new_handles (uv_loop_t *loop, const handle_set_t *before)
{
  handle_set_t after = { 0 };
  uv_walk (loop, collect_cb, &after);
  for (size_t i = 0; i < after.n; i++)
    {
      bool old = false;
      for (size_t j = 0; j < before->n && !old; j++)
        old = before->items[j] == after.items[i];
      if (!old)
        uv_unref (after.items[i]);
    }
  free (after.items);
}

static void
listener_free_cb (uv_handle_t *h)
{
  free (h);
}

int
flint__http_start (flint_daemon_t *d, flint_error_t *err)
{
  const char *addr = d->cfg.http_addr;
  flint_http_t *http;
  h2o_hostconf_t *host;
  h2o_pathconf_t *path;
  http_handler_t *handler;
  struct sockaddr_storage ss;
  handle_set_t before = { 0 };
  int r;

  if (addr == NULL || *addr == '\0')
    return 0;
  if (parse_addr (addr, &ss) < 0)
    return flint_error_set (err, FLINT_EINVAL, "--http: `%s` is not an address such as 127.0.0.1:7471", addr);
  http = calloc (1, sizeof *http);
  if (http == NULL)
    abort ();
  http->d = d;
  flint_list_init (&http->conns);
  d->http = http;

  h2o_config_init (&http->config);
  http->config.max_request_entity_size = FLINT_HTTP_MAX_BODY;
  http->config.server_name = h2o_iovec_init (H2O_STRLIT ("flintd"));
  host = h2o_config_register_host (&http->config, h2o_iovec_init (H2O_STRLIT ("default")), 65535);
  path = h2o_config_register_path (host, "/", 0);
  handler = (http_handler_t *) h2o_create_handler (path, sizeof *handler);
  handler->super.on_req = on_req;
  handler->http = http;

  uv_walk (d->loop, collect_cb, &before);
  h2o_context_init (&http->ctx, d->loop, &http->config);
  http->ctx_ready = true;
  unref_new_handles (d->loop, &before);
  free (before.items);
  http->accept.ctx = &http->ctx;
  http->accept.hosts = http->config.hosts;

  http->listener = calloc (1, sizeof *http->listener);
  if (http->listener == NULL)
    abort ();
  uv_tcp_init (d->loop, http->listener);
  http->listener->data = http;
  if ((r = uv_tcp_bind (http->listener, (struct sockaddr *) &ss, 0)) < 0
      || (r = uv_listen ((uv_stream_t *) http->listener, 128, on_accept)) < 0)
    return flint_error_set (err, FLINT_EPRECONDITION, "HTTP front door: cannot listen on `%s`: %s%s", addr,
                            uv_strerror (r), r == UV_EADDRINUSE ? " (another flintd? pick one with --http, or --http none)" : "");
  flint_info ("HTTP front door on http://%s", addr);
  return 0;
}

void
flint__http_stop (flint_daemon_t *d)
{
  flint_http_t *http = d->http;

  if (http == NULL)
    return;
  if (http->listener)
    {
      uv_close ((uv_handle_t *) http->listener, listener_free_cb);
      http->listener = NULL;
    }
  if (!http->ctx_ready)
    return;
  h2o_context_request_shutdown (&http->ctx);
  for (flint_list_t *p = http->conns.next; p != &http->conns; p = p->next)
    {
      http_conn_t *c = flint_list_entry (p, http_conn_t, link);
      uv_os_fd_t fd;
      /* the connection reads EOF and closes once its answers are out (h2o has no other way) */
      if (uv_fileno ((uv_handle_t *) &c->tcp, &fd) == 0)
        shutdown (fd, SHUT_RD);
    }
}

void
flint__http_free (flint_daemon_t *d)
{
  flint_http_t *http = d->http;
  size_t open;

  if (http == NULL)
    return;
  open = flint_list_length (&http->conns);
  if (open)
    {
      /* h2o frees a connection only when it closes it: leave the context to the process exit */
      flint_warn ("HTTP front door: %zu connection(s) still open at exit", open);
      return;
    }
  d->http = NULL;
  /* h2o 2.2's HTTP/2 graceful shutdown (h2o_context_request_shutdown in flint__http_stop) links
   * a one-second timer that our loop, with h2o's handles unreferenced, never waits for; the
   * dispose asserts its timeout lists are empty (an abort at every exit) */
  if (http->ctx_ready && h2o_timeout_is_linked (&http->ctx.http2._graceful_shutdown_timeout))
    h2o_timeout_unlink (&http->ctx.http2._graceful_shutdown_timeout);
  if (http->ctx_ready)
    h2o_context_dispose (&http->ctx);
  h2o_config_dispose (&http->config);
  free (http);
}

#else /* !FLINT_HAVE_HTTP */

int
flint__http_start (flint_daemon_t *d, flint_error_t *err)
{
  if (d->cfg.http_addr && *d->cfg.http_addr)
    flint_warn ("this flintd was built without the HTTP front door (meson -Dhttp=enabled with libh2o-dev): "
                "--http `%s` ignored", d->cfg.http_addr);
  (void) err;
  return 0;
}

void
flint__http_stop (flint_daemon_t *d)
{
  (void) d;
}

void
flint__http_free (flint_daemon_t *d)
{
  (void) d;
}

#endif
