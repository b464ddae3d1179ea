/* The HTTP front door's request-target parser: method + path + query → one route of the API
 * (docs/HTTP.md), and the gRPC-code → HTTP-status map. Pure functions over untrusted bytes,
 * separate from libh2o so the fuzzer (tests/fuzz/fuzz-http.c) drives them directly. */
#ifndef FLINT_HTTP_ROUTE_H
#define FLINT_HTTP_ROUTE_H

#include "flint/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FLINT_HTTP_TARGET_MAX 8192

typedef enum flint_http_route_kind_e {
  FLINT_HTTP_INVOKE = 1,  /* POST /v1/endpoints/{name}:invoke[?stream=1][&timeout=D] */
  FLINT_HTTP_LIST,        /* GET /v1/endpoints */
  FLINT_HTTP_GET,         /* GET /v1/endpoints/{name} */
  FLINT_HTTP_HEALTHZ,     /* GET /healthz */
  FLINT_HTTP_METRICS,     /* GET /metrics */
  FLINT_HTTP_DRAIN,       /* POST /v1/endpoints/{name}:drain */
} flint_http_route_kind_t;

typedef struct flint_http_route_s {
  flint_http_route_kind_t kind;
  char endpoint[64];      /* a valid endpoint name (INVOKE, GET, DRAIN) */
  bool stream;            /* INVOKE: answer with the function's chunks as they come */
  uint64_t timeout_ms;    /* INVOKE: the client's deadline, 0 = none */
} flint_http_route_t;

/* Parses `method` and the raw request target (`path?query`, as sent). On success returns 0 and
 * fills `out`. On failure returns the HTTP status to answer (400, 404, 405, 414) with the
 * status code and a message naming the problem in `err`; for 405 `*allow_out` is the value of
 * the Allow header. Never reads past the given lengths; inputs need no NUL. */
int flint_http_route_parse (const char *method, size_t method_len, const char *target, size_t target_len,
                            flint_http_route_t *out, const char **allow_out, flint_error_t *err);

/* The HTTP status for a flint (gRPC) status code, e.g. NOT_FOUND → 404, RESOURCE_EXHAUSTED →
 * 429, DEADLINE_EXCEEDED → 504, UNAVAILABLE → 503. */
int flint_http_status_of (flint_status_t code);

/* The reason phrase of an HTTP status this front door uses ("Not Found"). */
const char *flint_http_reason (int status);

#endif
