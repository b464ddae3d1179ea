/* Small system helpers shared by every flint process: clocks, fds, files, digests.
 * Functions return 0 / a count on success and -errno on failure unless stated otherwise. */
#ifndef FLINT_UTIL_H
#define FLINT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FLINT_ARRAY_SIZE(a) (sizeof (a) / sizeof ((a)[0]))
#define FLINT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FLINT_MAX(a, b) ((a) > (b) ? (a) : (b))

/* CLOCK_MONOTONIC in nanoseconds / microseconds. */
uint64_t flint_now_ns (void);
static inline uint64_t flint_now_us (void) { return flint_now_ns () / 1000; }
/* CLOCK_REALTIME in milliseconds since the epoch (for records shown to users). */
int64_t flint_wall_ms (void);

/* Writes/reads exactly `len` bytes, retrying on EINTR and short transfers.
 * flint_read_all returns the bytes read (less than len only at EOF) or -errno. */
int flint_write_all (int fd, const void *buf, size_t len);
ssize_t flint_read_all (int fd, void *buf, size_t len);

int flint_set_cloexec (int fd, bool on);
int flint_set_nonblock (int fd, bool on);

/* Closes every fd >= `lowfd` that is not in `keep` (close_range where possible).
 * Used in children just before execve. Async-signal-safe. */
void flint_close_fds_except (int lowfd, const int *keep, size_t nkeep);

/* mkdir -p with `mode` for the directories it creates. */
int flint_mkdir_p (const char *path, mode_t mode);

/* rm -rf of `path` without following symlinks and without crossing mount points.
 * A missing path is not an error. */
int flint_rm_rf (const char *path);

/* Reads a whole file into a NUL-terminated heap buffer (owned by the caller) of at most `max`
 * bytes; -EFBIG when larger. */
int flint_read_file (const char *path, size_t max, char **data_out, size_t *len_out);

/* Writes `data` to `path` atomically (temp file in the same directory, fsync, rename) with
 * `mode`. */
int flint_write_file_atomic (const char *path, const void *data, size_t len, mode_t mode);

/* SHA-256 as 64 lowercase hex characters + NUL. */
#define FLINT_SHA256_HEX_LEN 65
typedef struct flint_sha256_s flint_sha256_t;
flint_sha256_t *flint_sha256_new (void);
void flint_sha256_update (flint_sha256_t *h, const void *data, size_t len);
/* Finishes and frees `h`. */
void flint_sha256_final (flint_sha256_t *h, char hex_out[FLINT_SHA256_HEX_LEN]);
void flint_sha256_buf (const void *data, size_t len, char hex_out[FLINT_SHA256_HEX_LEN]);
/* Digest of a whole file, streamed; -errno on I/O errors. */
int flint_sha256_file (const char *path, char hex_out[FLINT_SHA256_HEX_LEN], uint64_t *size_out);
/* True for a string of exactly 64 lowercase hex digits. */
bool flint_is_sha256_hex (const char *s);

/* Fault injection (tests, CRIU's CRIU_FAULT habit): true when `point` is one of the
 * comma-separated names in `list` (the value of FLINT_FAULT; NULL or "" = none). Pure string
 * work, safe between clone() and execve(). */
bool flint_fault_listed (const char *list, const char *point);

/* Parses "256Mi", "1G", "512k", "1024" into bytes (binary and decimal suffixes).
 * Returns 0 or -EINVAL. */
int flint_parse_size (const char *s, uint64_t *bytes_out);
/* Parses "500ms", "30s", "5m", "1h", "2.5s" into milliseconds. Returns 0 or -EINVAL. */
int flint_parse_duration_ms (const char *s, uint64_t *ms_out);
/* Formats a byte count for people: "256 MiB", "1.5 GiB", "980 B". */
void flint_format_size (uint64_t bytes, char *buf, size_t len);

#endif
