/* Daemon logging: one line per event on stderr, each carrying the process role.
 *
 * Library code does not log: it returns errors. Only front-ends and the daemons' top-level
 * handlers call these. Secrets are never passed here (see docs/SANDBOX.md, "Secrets"). */
#ifndef FLINT_LOG_H
#define FLINT_LOG_H

typedef enum flint_log_level_e {
  FLINT_LOG_DEBUG = 0,
  FLINT_LOG_INFO = 1,
  FLINT_LOG_WARN = 2,
  FLINT_LOG_ERROR = 3,
} flint_log_level_t;

/* Sets the role printed on every line ("runtime", "worker", "snapshotter", ...) and the minimum
 * level. The role string is copied. Level can also come from FLINT_LOG=debug|info|warn|error. */
void flint_log_init (const char *role, flint_log_level_t min_level);

void flint_log (flint_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define flint_debug(...) flint_log (FLINT_LOG_DEBUG, __VA_ARGS__)
#define flint_info(...) flint_log (FLINT_LOG_INFO, __VA_ARGS__)
#define flint_warn(...) flint_log (FLINT_LOG_WARN, __VA_ARGS__)
#define flint_err(...) flint_log (FLINT_LOG_ERROR, __VA_ARGS__)

#endif
