/* flint error type for control-plane operations.
 *
 * Two error shapes are used across flint (docs/ERRORS.md):
 *  - leaf, syscall and event-loop code returns -errno (libuv's habit);
 *  - operations that need context take a trailing `flint_error_t *err`, fill it and return < 0.
 *    Each layer adds context on the way up ("deploy `echo`: bundle: ..."), crun-style.
 *
 * The status codes have the numeric values of gRPC's status codes so that the API edge can map
 * them one to one; library code never includes gRPC headers. */
#ifndef FLINT_ERROR_H
#define FLINT_ERROR_H

#include <stdarg.h>
#include <stddef.h>

typedef enum flint_status_e {
  FLINT_OK = 0,
  FLINT_ECANCELLED = 1,
  FLINT_EUNKNOWN = 2,
  FLINT_EINVAL = 3,            /* INVALID_ARGUMENT: bad manifest, bad payload, bad name */
  FLINT_EDEADLINE = 4,         /* DEADLINE_EXCEEDED */
  FLINT_ENOTFOUND = 5,         /* NOT_FOUND */
  FLINT_EEXISTS = 6,           /* ALREADY_EXISTS */
  FLINT_EPERM = 7,             /* PERMISSION_DENIED */
  FLINT_EEXHAUSTED = 8,        /* RESOURCE_EXHAUSTED: queue full, payload too large */
  FLINT_EPRECONDITION = 9,     /* FAILED_PRECONDITION: bundle lacks entry points, ... */
  FLINT_EABORTED = 10,
  FLINT_ERANGE = 11,
  FLINT_EUNIMPLEMENTED = 12,
  FLINT_EINTERNAL = 13,        /* a bug or an environment failure in flint itself */
  FLINT_EUNAVAILABLE = 14,     /* worker crashed, daemon shutting down */
  FLINT_EDATALOSS = 15,        /* bundle digest mismatch, corrupted image */
  FLINT_EUNAUTHENTICATED = 16,
} flint_status_t;

#define FLINT_ERROR_MSG_MAX 1024

typedef struct flint_error_s {
  flint_status_t code;
  char msg[FLINT_ERROR_MSG_MAX];
} flint_error_t;

#define FLINT_ERROR_INIT { FLINT_OK, { 0 } }

/* Sets `err` (when not NULL) to `code` and the formatted message, replacing what it held.
 * Returns -1 so that call sites can write `return flint_error_set(err, ...)`. */
int flint_error_set(flint_error_t *err, flint_status_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like flint_error_set() and appends ": strerror(errnum)". `errnum` may be given negated. */
int flint_error_set_errno(flint_error_t *err, flint_status_t code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prepends context to the message already in `err`: "ctx: old message". Keeps the code.
 * Returns -1. Truncates (never overflows) when the result is longer than FLINT_ERROR_MSG_MAX. */
int flint_error_prefix(flint_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Resets `err` to FLINT_OK with an empty message. */
void flint_error_clear(flint_error_t *err);

/* The gRPC-style canonical name of a status code, e.g. "NOT_FOUND". Never NULL. */
const char *flint_status_name(flint_status_t code);

/* Parses a canonical name back; returns FLINT_EUNKNOWN for anything unrecognised. */
flint_status_t flint_status_from_name(const char *name);

#endif
