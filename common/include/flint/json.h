/* A small JSON parser (RFC 8259) for untrusted input: HTTP bodies, config.json, tokenizer.json.
 *
 * The whole document lives in one arena owned by a flint_json_doc_t, so freeing is one call and
 * parsing a 10 MB tokenizer does not make a million mallocs. Nesting depth is bounded; numbers
 * are doubles (plus the exact int64 when the literal is an integer that fits); strings are
 * decoded to UTF-8 with their length (they may contain NUL). Duplicate object keys are kept;
 * lookups return the last one. */
#ifndef FLINT_JSON_H
#define FLINT_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum flint_json_type_e {
  FLINT_JSON_NULL,
  FLINT_JSON_BOOL,
  FLINT_JSON_NUMBER,
  FLINT_JSON_STRING,
  FLINT_JSON_ARRAY,
  FLINT_JSON_OBJECT,
} flint_json_type_t;

typedef struct flint_json_s flint_json_t;
struct flint_json_s {
  flint_json_type_t type;
  bool is_int;          /* NUMBER whose literal is an integer fitting int64 */
  bool b;
  double num;
  int64_t i64;
  const char *str;      /* STRING: NUL-terminated, len bytes */
  size_t len;           /* STRING: bytes; ARRAY/OBJECT: element count */
  flint_json_t **items; /* ARRAY elements / OBJECT values */
  const char **keys;    /* OBJECT keys (NUL-terminated) */
  size_t *key_lens;
};

typedef struct flint_json_doc_s flint_json_doc_t;

#define FLINT_JSON_MAX_DEPTH 128

/* Parses `len` bytes of `text`. On success returns 0 and a document (free with
 * flint_json_doc_free) whose root is flint_json_root(). On failure returns -1 and writes
 * "line L, column C: what" into errbuf. Cost: linear in len; memory about 3x len. */
int flint_json_parse (const char *text, size_t len, flint_json_doc_t **doc_out, char *errbuf,
                      size_t errlen);
const flint_json_t *flint_json_root (const flint_json_doc_t *doc);
void flint_json_doc_free (flint_json_doc_t *doc);

/* Member lookup in an OBJECT (NULL when absent or when `obj` is not an object). */
const flint_json_t *flint_json_get (const flint_json_t *obj, const char *key);
/* Typed accessors: return false when the value is absent or of another type. */
bool flint_json_get_string (const flint_json_t *obj, const char *key, const char **s_out, size_t *len_out);
bool flint_json_get_number (const flint_json_t *obj, const char *key, double *out);
bool flint_json_get_int (const flint_json_t *obj, const char *key, int64_t *out);
bool flint_json_get_bool (const flint_json_t *obj, const char *key, bool *out);

#endif
