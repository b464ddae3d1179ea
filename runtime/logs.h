/* Worker log capture: each worker's stdout and stderr arrive on pipes read by flintd's loop,
 * are split into lines tagged with endpoint, version and replica, and kept in a bounded ring per
 * endpoint (for `flint logs`) and in rotated files under STATE/logs/<endpoint>/.
 *
 * Bounded everywhere: lines longer than FLINT_LOG_LINE_MAX are cut (and marked), the ring keeps
 * the last FLINT_LOG_RING records, files rotate at FLINT_LOG_FILE_MAX bytes keeping
 * FLINT_LOG_FILES generations. A worker writing faster than the disk only costs itself. */
#ifndef FLINT_LOGS_H
#define FLINT_LOGS_H

#include "flint/list.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define FLINT_LOG_LINE_MAX 4096
#define FLINT_LOG_RING 4096
#define FLINT_LOG_FILE_MAX (16u << 20)
#define FLINT_LOG_FILES 4

typedef struct flint_log_record_s {
  int64_t time_ms;
  uint64_t version;
  char replica[48];
  char stream[8];     /* "stdout", "stderr", "flint" */
  char *line;         /* owned, NUL-terminated, no newline */
} flint_log_record_t;

typedef struct flint_logbook_s flint_logbook_t;

/* A follower of an endpoint's log (`flint logs -f`): called for each new record, and once with
 * rec == NULL when the logbook goes away (the follower is already unlinked then). */
typedef struct flint_log_follower_s {
  flint_list_t link;
  void (*cb) (struct flint_log_follower_s *f, const flint_log_record_t *rec);
  void *data;
} flint_log_follower_t;

/* Creates the logbook of endpoint `name`, its files under `dir` (created 0700). */
flint_logbook_t *flint_logbook_new (const char *dir, const char *name);
void flint_logbook_free (flint_logbook_t *lb);
/* Removes the endpoint's files (endpoint deleted). */
void flint_logbook_remove_files (flint_logbook_t *lb);

/* Appends one line (copied; cut at FLINT_LOG_LINE_MAX). */
void flint_logbook_append (flint_logbook_t *lb, uint64_t version, const char *replica, const char *stream,
                           const char *line, size_t len);

/* Calls `cb` for the kept records newer than `since_ms`, the last `tail` of them (0 = all),
 * oldest first. */
void flint_logbook_each (flint_logbook_t *lb, int64_t since_ms, uint32_t tail,
                         void (*cb) (const flint_log_record_t *rec, void *data), void *data);

void flint_logbook_follow (flint_logbook_t *lb, flint_log_follower_t *f);
void flint_logbook_unfollow (flint_log_follower_t *f);

/* One captured pipe of one worker. */
typedef struct flint_logpipe_s flint_logpipe_t;

/* Starts reading `fd` (takes ownership) on `loop`; lines go to `lb` tagged as given. `lb` must
 * outlive the pipe. Returns NULL on failure (fd closed). */
flint_logpipe_t *flint_logpipe_open (uv_loop_t *loop, int fd, flint_logbook_t *lb, uint64_t version,
                                     const char *replica, const char *stream);
/* Reads what is left (non-blocking), flushes a partial line, closes and frees. Accepts NULL. */
void flint_logpipe_close (flint_logpipe_t *p);

#endif
