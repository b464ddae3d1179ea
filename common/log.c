/* Line-oriented logging to stderr with a timestamp, the role and the level.
 * A whole line is formatted first and written with one write(2), so lines from several
 * processes sharing stderr do not interleave. */
#include "flint/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static char log_role[32] = "flint";
static flint_log_level_t log_min = FLINT_LOG_INFO;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void
flint_log_init (const char *role, flint_log_level_t min_level)
{
  const char *env = getenv ("FLINT_LOG");

  snprintf (log_role, sizeof log_role, "%s", role);
  log_min = min_level;
  if (env)
    for (int i = 0; i < 4; i++)
      if (strcasecmp (env, level_names[i]) == 0)
        log_min = (flint_log_level_t) i;
}

void
flint_log (flint_log_level_t level, const char *fmt, ...)
{
  char line[2048];
  struct timespec ts;
  struct tm tm;
  size_t n;
  va_list ap;

  if (level < log_min)
    return;
  clock_gettime (CLOCK_REALTIME, &ts);
  gmtime_r (&ts.tv_sec, &tm);
  n = strftime (line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
  n += snprintf (line + n, sizeof line - n, ".%03ldZ %s[%d] %s: ", ts.tv_nsec / 1000000, log_role,
                 (int) getpid (), level_names[level]);
  va_start (ap, fmt);
  if (n < sizeof line)
    n += vsnprintf (line + n, sizeof line - n, fmt, ap);
  va_end (ap);
  if (n >= sizeof line - 1)
    n = sizeof line - 2;
  line[n++] = '\n';
  (void) !write (STDERR_FILENO, line, n);
}
