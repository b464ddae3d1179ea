/* The flint_error_t helpers: formatting, context prefixes and status names. */
#include "flint/error.h"

#include <stdio.h>
#include <string.h>

static const char *const status_names[] = {
  [FLINT_OK] = "OK",
  [FLINT_ECANCELLED] = "CANCELLED",
  [FLINT_EUNKNOWN] = "UNKNOWN",
  [FLINT_EINVAL] = "INVALID_ARGUMENT",
  [FLINT_EDEADLINE] = "DEADLINE_EXCEEDED",
  [FLINT_ENOTFOUND] = "NOT_FOUND",
  [FLINT_EEXISTS] = "ALREADY_EXISTS",
  [FLINT_EPERM] = "PERMISSION_DENIED",
  [FLINT_EEXHAUSTED] = "RESOURCE_EXHAUSTED",
  [FLINT_EPRECONDITION] = "FAILED_PRECONDITION",
  [FLINT_EABORTED] = "ABORTED",
  [FLINT_ERANGE] = "OUT_OF_RANGE",
  [FLINT_EUNIMPLEMENTED] = "UNIMPLEMENTED",
  [FLINT_EINTERNAL] = "INTERNAL",
  [FLINT_EUNAVAILABLE] = "UNAVAILABLE",
  [FLINT_EDATALOSS] = "DATA_LOSS",
  [FLINT_EUNAUTHENTICATED] = "UNAUTHENTICATED",
};

int
flint_error_set (flint_error_t *err, flint_status_t code, const char *fmt, ...)
{
  va_list ap;

  if (err == NULL)
    return -1;
  err->code = code;
  va_start (ap, fmt);
  vsnprintf (err->msg, sizeof err->msg, fmt, ap);
  va_end (ap);
  return -1;
}

int
flint_error_set_errno (flint_error_t *err, flint_status_t code, int errnum, const char *fmt, ...)
{
  va_list ap;
  size_t len;

  if (err == NULL)
    return -1;
  if (errnum < 0)
    errnum = -errnum;
  err->code = code;
  va_start (ap, fmt);
  vsnprintf (err->msg, sizeof err->msg, fmt, ap);
  va_end (ap);
  len = strlen (err->msg);
  snprintf (err->msg + len, sizeof err->msg - len, ": %s", strerror (errnum));
  return -1;
}

int
flint_error_prefix (flint_error_t *err, const char *fmt, ...)
{
  char prefix[FLINT_ERROR_MSG_MAX];
  char old[FLINT_ERROR_MSG_MAX];
  va_list ap;

  if (err == NULL)
    return -1;
  va_start (ap, fmt);
  vsnprintf (prefix, sizeof prefix, fmt, ap);
  va_end (ap);
  memcpy (old, err->msg, sizeof old);
  snprintf (err->msg, sizeof err->msg, "%s: %s", prefix, old);
  if (err->code == FLINT_OK)
    err->code = FLINT_EUNKNOWN;
  return -1;
}

void
flint_error_clear (flint_error_t *err)
{
  if (err == NULL)
    return;
  err->code = FLINT_OK;
  err->msg[0] = '\0';
}

const char *
flint_status_name (flint_status_t code)
{
  if ((unsigned) code < sizeof status_names / sizeof status_names[0] && status_names[code])
    return status_names[code];
  return "UNKNOWN";
}

flint_status_t
flint_status_from_name (const char *name)
{
  for (size_t i = 0; i < sizeof status_names / sizeof status_names[0]; i++)
    if (status_names[i] && strcmp (status_names[i], name) == 0)
      return (flint_status_t) i;
  return FLINT_EUNKNOWN;
}
