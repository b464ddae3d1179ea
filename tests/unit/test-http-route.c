/* Unit tests of runtime/http_route.c: the HTTP front door's routes, query parameters, refusals
 * and the gRPC-code → HTTP-status map (docs/HTTP.md). */
#include "tap.h"
#include "http_route.h"

static int
parse (const char *method, const char *target, flint_http_route_t *r, const char **allow, flint_error_t *err)
{
  return flint_http_route_parse (method, strlen (method), target, strlen (target), r, allow, err);
}

int
main (void)
{
  flint_http_route_t r;
  flint_error_t err = FLINT_ERROR_INIT;
  const char *allow;
  char longpath[9000];

  ok (parse ("POST", "/v1/endpoints/echo:invoke", &r, &allow, &err) == 0 && r.kind == FLINT_HTTP_INVOKE
          && strcmp (r.endpoint, "echo") == 0 && !r.stream && r.timeout_ms == 0,
      "invoke");
  ok (parse ("POST", "/v1/endpoints/my-model-2:invoke?stream=1&timeout=250ms", &r, &allow, &err) == 0 && r.stream
          && r.timeout_ms == 250 && strcmp (r.endpoint, "my-model-2") == 0,
      "invoke with stream and timeout");
  ok (parse ("POST", "/v1/endpoints/echo:invoke?stream", &r, &allow, &err) == 0 && r.stream, "bare stream flag");
  ok (parse ("POST", "/v1/endpoints/echo:invoke?stream=false&&", &r, &allow, &err) == 0 && !r.stream,
      "stream=false, empty pairs skipped");
  ok (parse ("POST", "/v1/endpoints/%65cho:invoke", &r, &allow, &err) == 0 && strcmp (r.endpoint, "echo") == 0,
      "percent-encoded name");
  ok (parse ("GET", "/v1/endpoints", &r, &allow, &err) == 0 && r.kind == FLINT_HTTP_LIST, "list");
  ok (parse ("HEAD", "/v1/endpoints/", &r, &allow, &err) == 0 && r.kind == FLINT_HTTP_LIST, "list, trailing slash");
  ok (parse ("GET", "/v1/endpoints/echo", &r, &allow, &err) == 0 && r.kind == FLINT_HTTP_GET, "get");
  ok (parse ("GET", "/healthz", &r, &allow, &err) == 0 && r.kind == FLINT_HTTP_HEALTHZ, "healthz");
  ok (parse ("GET", "/metrics", &r, &allow, &err) == 0 && r.kind == FLINT_HTTP_METRICS, "metrics");

  ok (parse ("GET", "/v1/endpoints/echo:invoke", &r, &allow, &err) == 405 && strcmp (allow, "POST") == 0
          && err.code == FLINT_EUNIMPLEMENTED,
      "GET on invoke: 405, Allow: POST");
  ok (parse ("POST", "/v1/endpoints/echo:drain", &r, &allow, &err) == 0 && r.kind == FLINT_HTTP_DRAIN
          && strcmp (r.endpoint, "echo") == 0,
      "drain");
  ok (parse ("GET", "/v1/endpoints/echo:drain", &r, &allow, &err) == 405 && strcmp (allow, "POST") == 0,
      "GET on drain: 405, Allow: POST");
  ok (parse ("POST", "/v1/endpoints/echo:dance", &r, &allow, &err) == 404, "unknown endpoint method: 404");
  ok (parse ("DELETE", "/v1/endpoints/echo", &r, &allow, &err) == 405 && strcmp (allow, "GET, HEAD") == 0,
      "DELETE: 405, Allow: GET, HEAD");
  ok (parse ("POST", "/v1/endpoints/Echo:invoke", &r, &allow, &err) == 400 && err.code == FLINT_EINVAL, "bad name");
  contains (err.msg, "`Echo` is not a valid endpoint name", "the message quotes it");
  ok (parse ("POST", "/v1/endpoints/ec%00ho:invoke", &r, &allow, &err) == 400, "encoded NUL refused");
  ok (parse ("POST", "/v1/endpoints/echo%4:invoke", &r, &allow, &err) == 400, "truncated escape refused");
  ok (parse ("POST", "/v1/endpoints/echo:run", &r, &allow, &err) == 404 && err.code == FLINT_ENOTFOUND,
      "unknown method");
  contains (err.msg, "`:run`", "names it");
  ok (parse ("GET", "/v1/endpoints/a/b", &r, &allow, &err) == 404, "deeper path");
  ok (parse ("GET", "/nothing", &r, &allow, &err) == 404, "unknown path");
  ok (parse ("GET", "healthz", &r, &allow, &err) == 400, "not absolute");
  ok (parse ("GET", "", &r, &allow, &err) == 400, "empty target");
  ok (parse ("GET", "/he lthz", &r, &allow, &err) == 400, "raw space in the path");
  ok (parse ("POST", "/v1/endpoints/echo:invoke?stream=2", &r, &allow, &err) == 400, "bad stream value");
  ok (parse ("POST", "/v1/endpoints/echo:invoke?timeout=0", &r, &allow, &err) == 400, "zero timeout");
  ok (parse ("POST", "/v1/endpoints/echo:invoke?timeout=1s&timeout=2s", &r, &allow, &err) == 400, "twice");
  ok (parse ("POST", "/v1/endpoints/echo:invoke?mode=fast", &r, &allow, &err) == 400, "unknown parameter");
  contains (err.msg, "`mode`", "named");
  ok (parse ("GET", "/metrics?x=1", &r, &allow, &err) == 400, "GET routes take no parameters");
  memset (longpath, 'a', sizeof longpath);
  longpath[0] = '/';
  ok (flint_http_route_parse ("GET", 3, longpath, sizeof longpath, &r, &allow, &err) == 414, "target too long");

  ok (flint_http_status_of (FLINT_OK) == 200 && flint_http_status_of (FLINT_ENOTFOUND) == 404
          && flint_http_status_of (FLINT_EEXHAUSTED) == 429 && flint_http_status_of (FLINT_EDEADLINE) == 504
          && flint_http_status_of (FLINT_EUNAVAILABLE) == 503 && flint_http_status_of (FLINT_EINVAL) == 400
          && flint_http_status_of (FLINT_EPRECONDITION) == 400 && flint_http_status_of (FLINT_EINTERNAL) == 500
          && flint_http_status_of (FLINT_ECANCELLED) == 499 && flint_http_status_of (FLINT_EUNIMPLEMENTED) == 501,
      "status map");
  is_str (flint_http_reason (429), "Too Many Requests", "reason phrase");
  return tap_done ();
}
