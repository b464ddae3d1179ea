/* Request-target parsing for the HTTP front door. See http_route.h; the accepted grammar is in
 * docs/HTTP.md. Everything here reads untrusted bytes with explicit lengths and writes only into
 * fixed buffers; a fuzzer (tests/fuzz/fuzz-http.c) holds it to that. */
#include "http_route.h"
#include "manifest.h"
#include "flint/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define PREFIX "/v1/endpoints"

/* Copies `len` bytes of user data into `buf` for an error message: cut at 64 bytes, bytes
 * outside printable ASCII shown as '?'. */
static const char *
shown (char *buf, size_t size, const char *s, size_t len)
{
  size_t n = 0;
  for (size_t i = 0; i < len && n + 4 < size && n < 64; i++)
    buf[n++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
  if (len > 64 && n + 4 < size)
    {
      memcpy (buf + n, "...", 3);
      n += 3;
    }
  buf[n] = '\0';
  return buf;
}

static int
hexval (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Percent-decodes `s` (and '+' as a space when `plus`) into `out` (NUL-terminated). Returns the
 * decoded length, or -1 on a bad escape, an encoded NUL, or when it does not fit. */
static int
pct_decode (const char *s, size_t len, bool plus, char *out, size_t size)
{
  size_t n = 0;

  for (size_t i = 0; i < len; i++)
    {
      char c = s[i];
      if (c == '%')
        {
          int hi, lo;
          if (i + 2 >= len)
            return -1;
          hi = hexval (s[i + 1]);
          lo = hexval (s[i + 2]);
          if (hi < 0 || lo < 0)
            return -1;
          c = (char) (hi << 4 | lo);
          i += 2;
        }
      else if (c == '+' && plus)
        c = ' ';
      if (c == '\0' || n + 1 >= size)
        return -1;
      out[n++] = c;
    }
  out[n] = '\0';
  return (int) n;
}

static bool
span_is (const char *s, size_t len, const char *lit)
{
  return strlen (lit) == len && memcmp (s, lit, len) == 0;
}

static int bad (flint_error_t *err, int status, flint_status_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Fills `err` and returns the HTTP status to answer. */
static int
bad (flint_error_t *err, int status, flint_status_t code, const char *fmt, ...)
{
  char msg[FLINT_ERROR_MSG_MAX];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  flint_error_set (err, code, "%s", msg);
  return status;
}

static int
parse_query (const char *q, size_t len, flint_http_route_t *out, flint_error_t *err)
{
  bool seen_stream = false, seen_timeout = false;
  size_t i = 0;
  char tmp[128];

  while (i < len)
    {
      size_t end = i, eq;
      char key[32], val[64];
      int kl, vl;

      while (end < len && q[end] != '&')
        end++;
      if (end == i)
        {
          i++;
          continue;
        }
      for (eq = i; eq < end && q[eq] != '='; eq++)
        ;
      kl = pct_decode (q + i, eq - i, true, key, sizeof key);
      if (kl < 0)
        return bad (err, 400, FLINT_EINVAL, "malformed query parameter `%s`", shown (tmp, sizeof tmp, q + i, end - i));
      vl = eq < end ? pct_decode (q + eq + 1, end - eq - 1, true, val, sizeof val) : (val[0] = '\0', 0);
      if (vl < 0)
        return bad (err, 400, FLINT_EINVAL, "malformed value of query parameter `%s`", key);
      if (out->kind == FLINT_HTTP_INVOKE && strcmp (key, "stream") == 0)
        {
          if (seen_stream)
            return bad (err, 400, FLINT_EINVAL, "query parameter `%s` is given twice", key);
          seen_stream = true;
          if (vl == 0 || strcmp (val, "1") == 0 || strcmp (val, "true") == 0)
            out->stream = true;
          else if (strcmp (val, "0") == 0 || strcmp (val, "false") == 0)
            out->stream = false;
          else
            return bad (err, 400, FLINT_EINVAL, "query parameter `stream`: expected 1, 0, true or false, got `%s`",
                        shown (tmp, sizeof tmp, val, (size_t) vl));
        }
      else if (out->kind == FLINT_HTTP_INVOKE && strcmp (key, "timeout") == 0)
        {
          if (seen_timeout)
            return bad (err, 400, FLINT_EINVAL, "query parameter `%s` is given twice", key);
          seen_timeout = true;
          if (flint_parse_duration_ms (val, &out->timeout_ms) < 0 || out->timeout_ms == 0)
            return bad (err, 400, FLINT_EINVAL,
                        "query parameter `timeout`: expected a positive duration such as 500ms or 30s, got `%s`",
                        shown (tmp, sizeof tmp, val, (size_t) vl));
        }
      else
        return bad (err, 400, FLINT_EINVAL, "unknown query parameter `%s` (%s)", shown (tmp, sizeof tmp, key, (size_t) kl),
                    out->kind == FLINT_HTTP_INVOKE ? "known: stream, timeout" : "this path takes none");
      i = end + 1;
    }
  return 0;
}

int
flint_http_route_parse (const char *method, size_t method_len, const char *target, size_t target_len,
                        flint_http_route_t *out, const char **allow_out, flint_error_t *err)
{
  const char *q;
  size_t plen;
  bool get_like = span_is (method, method_len, "GET") || span_is (method, method_len, "HEAD");
  char tmp[128];

  memset (out, 0, sizeof *out);
  *allow_out = NULL;
  if (target_len > FLINT_HTTP_TARGET_MAX)
    return bad (err, 414, FLINT_EINVAL, "the request target is longer than %d bytes", FLINT_HTTP_TARGET_MAX);
  if (target_len == 0 || target[0] != '/')
    return bad (err, 400, FLINT_EINVAL, "the request target `%s` is not an absolute path",
                shown (tmp, sizeof tmp, target, target_len));
  q = memchr (target, '?', target_len);
  plen = q ? (size_t) (q - target) : target_len;
  for (size_t i = 0; i < plen; i++)
    if ((unsigned char) target[i] <= 0x20 || (unsigned char) target[i] >= 0x7f || target[i] == '#')
      return bad (err, 400, FLINT_EINVAL, "the path `%s` holds a character that must be percent-encoded",
                  shown (tmp, sizeof tmp, target, plen));

  if (span_is (target, plen, "/healthz"))
    out->kind = FLINT_HTTP_HEALTHZ;
  else if (span_is (target, plen, "/metrics"))
    out->kind = FLINT_HTTP_METRICS;
  else if (span_is (target, plen, PREFIX) || span_is (target, plen, PREFIX "/"))
    out->kind = FLINT_HTTP_LIST;
  else if (plen > strlen (PREFIX "/") && memcmp (target, PREFIX "/", strlen (PREFIX "/")) == 0)
    {
      const char *rest = target + strlen (PREFIX "/");
      size_t rlen = plen - strlen (PREFIX "/");
      const char *colon = memchr (rest, ':', rlen);
      size_t nlen = colon ? (size_t) (colon - rest) : rlen;

      if (memchr (rest, '/', rlen) != NULL)
        return bad (err, 404, FLINT_ENOTFOUND, "no such path `%s` (see docs/HTTP.md)",
                    shown (tmp, sizeof tmp, target, plen));
      if (colon)
        {
          const char *verb = colon + 1;
          size_t vlen = rlen - nlen - 1;
          if (span_is (verb, vlen, "invoke"))
            out->kind = FLINT_HTTP_INVOKE;
          else if (span_is (verb, vlen, "drain"))
            out->kind = FLINT_HTTP_DRAIN;
          else
            return bad (err, 404, FLINT_ENOTFOUND, "unknown method `:%s` (endpoints have `:invoke` and `:drain`)",
                        shown (tmp, sizeof tmp, verb, vlen));
        }
      else
        out->kind = FLINT_HTTP_GET;
      if (pct_decode (rest, nlen, false, out->endpoint, sizeof out->endpoint) < 0 || !flint_name_valid (out->endpoint))
        return bad (err, 400, FLINT_EINVAL,
                    "`%s` is not a valid endpoint name (1-63 of a-z, 0-9 and '-', not starting or ending with '-')",
                    shown (tmp, sizeof tmp, rest, nlen));
    }
  else
    return bad (err, 404, FLINT_ENOTFOUND, "no such path `%s` (see docs/HTTP.md)", shown (tmp, sizeof tmp, target, plen));

  bool post = out->kind == FLINT_HTTP_INVOKE || out->kind == FLINT_HTTP_DRAIN;
  if (post ? !span_is (method, method_len, "POST") : !get_like)
    {
      *allow_out = post ? "POST" : "GET, HEAD";
      return bad (err, 405, FLINT_EUNIMPLEMENTED, "method `%s` is not allowed here",
                  shown (tmp, sizeof tmp, method, method_len));
    }
  if (q)
    {
      int st = parse_query (q + 1, target_len - plen - 1, out, err);
      if (st)
        return st;
    }
  return 0;
}

int
flint_http_status_of (flint_status_t code)
{
  switch (code)
    {
    case FLINT_OK: return 200;
    case FLINT_ECANCELLED: return 499;
    case FLINT_EINVAL:
    case FLINT_EPRECONDITION:
    case FLINT_ERANGE: return 400;
    case FLINT_EDEADLINE: return 504;
    case FLINT_ENOTFOUND: return 404;
    case FLINT_EEXISTS:
    case FLINT_EABORTED: return 409;
    case FLINT_EPERM: return 403;
    case FLINT_EUNAUTHENTICATED: return 401;
    case FLINT_EEXHAUSTED: return 429;
    case FLINT_EUNIMPLEMENTED: return 501;
    case FLINT_EUNAVAILABLE: return 503;
    case FLINT_EUNKNOWN:
    case FLINT_EINTERNAL:
    case FLINT_EDATALOSS:
    default: return 500;
    }
}

const char *
flint_http_reason (int status)
{
  switch (status)
    {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 499: return "Client Closed Request";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Internal Server Error";
    }
}
