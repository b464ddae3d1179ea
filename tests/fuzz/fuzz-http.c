/* libFuzzer target: the HTTP front door's request-target parser (runtime/http_route.c), which
 * reads the method, path and query of every HTTP request before anything else does.
 *
 * Input: "METHOD TARGET" (split at the first space; without one, the whole input is the target
 * of a GET). Checked on every input: the parser never reads outside its input (the fuzzer copies
 * it to an exact-size buffer), a success names a valid endpoint where the route has one, and a
 * failure is one of the statuses it documents with a message, Allow only with 405. */
#include "http_route.h"
#include "manifest.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  const char *in = (const char *) data;
  const char *sp = memchr (in, ' ', size);
  const char *method = "GET", *target = in;
  size_t mlen = 3, tlen = size;
  flint_http_route_t route;
  flint_error_t err = FLINT_ERROR_INIT;
  const char *allow = NULL;
  char *m = NULL, *t = NULL;
  int st;

  if (sp)
    {
      method = in;
      mlen = (size_t) (sp - in);
      target = sp + 1;
      tlen = size - mlen - 1;
    }
  /* exact-size copies so ASan sees any read past either part */
  m = malloc (mlen ? mlen : 1);
  t = malloc (tlen ? tlen : 1);
  if (m == NULL || t == NULL)
    abort ();
  memcpy (m, method, mlen);
  if (tlen)
    memcpy (t, target, tlen);

  st = flint_http_route_parse (m, mlen, t, tlen, &route, &allow, &err);
  if (st == 0)
    {
      if (route.kind < FLINT_HTTP_INVOKE || route.kind > FLINT_HTTP_METRICS)
        abort ();
      if ((route.kind == FLINT_HTTP_INVOKE || route.kind == FLINT_HTTP_GET) && !flint_name_valid (route.endpoint))
        abort ();
      if (route.kind != FLINT_HTTP_INVOKE && (route.stream || route.timeout_ms))
        abort ();
    }
  else
    {
      if (st != 400 && st != 404 && st != 405 && st != 414)
        abort ();
      if (err.msg[0] == '\0' || err.code == FLINT_OK)
        abort ();
      if ((st == 405) != (allow != NULL))
        abort ();
      if (flint_http_status_of (err.code) < 400)
        abort ();
      if (strlen (flint_http_reason (st)) == 0)
        abort ();
    }
  free (m);
  free (t);
  return 0;
}
