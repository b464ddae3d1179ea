/* A growable byte buffer: the string builder behind JSON output, metrics text and frames.
 * Allocation failure aborts the process (these buffers are small and a half-written reply is
 * worse than a restart under supervision). */
#ifndef FLINT_BUF_H
#define FLINT_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct flint_buf_s {
  char *data;  /* always NUL-terminated when cap > 0 */
  size_t len;
  size_t cap;
} flint_buf_t;

#define FLINT_BUF_INIT { NULL, 0, 0 }

void flint_buf_reserve (flint_buf_t *b, size_t extra);
void flint_buf_append (flint_buf_t *b, const void *data, size_t len);
void flint_buf_puts (flint_buf_t *b, const char *s);
void flint_buf_putc (flint_buf_t *b, char c);
void flint_buf_printf (flint_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void flint_buf_vprintf (flint_buf_t *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Appends `s` as a JSON string literal, quotes included, escaping as RFC 8259 requires.
 * Invalid UTF-8 bytes are replaced by U+FFFD so the output is always valid JSON. */
void flint_buf_json_string (flint_buf_t *b, const char *s, size_t len);
void flint_buf_reset (flint_buf_t *b);
/* Frees the storage; the buffer is empty and reusable afterwards. */
void flint_buf_free (flint_buf_t *b);
/* Hands the storage to the caller (who frees it); the buffer is empty afterwards. */
char *flint_buf_steal (flint_buf_t *b, size_t *len_out);

#endif
