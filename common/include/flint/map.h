/* A string-keyed hash map (open addressing, linear probing) for flintd's registries of
 * endpoints, replicas and requests. Keys are copied; values are borrowed pointers.
 * Not thread-safe: each map belongs to one thread (flintd's loop). */
#ifndef FLINT_MAP_H
#define FLINT_MAP_H

#include <stddef.h>

typedef struct flint_map_entry_s {
  char *key;     /* NULL = empty; FLINT_MAP_TOMBSTONE = deleted */
  void *value;
} flint_map_entry_t;

typedef struct flint_map_s {
  flint_map_entry_t *slots;
  size_t cap;     /* power of two */
  size_t len;     /* live entries */
  size_t used;    /* live + tombstones */
} flint_map_t;

#define FLINT_MAP_INIT { NULL, 0, 0, 0 }

void *flint_map_get (const flint_map_t *m, const char *key);
/* Inserts or replaces; returns the previous value (or NULL). Aborts on out-of-memory. */
void *flint_map_put (flint_map_t *m, const char *key, void *value);
/* Removes `key`; returns its value (or NULL). */
void *flint_map_del (flint_map_t *m, const char *key);
void flint_map_free (flint_map_t *m);

/* Iteration: `for (size_t i = 0; flint_map_next (m, &i, &key, &value);)` — the map must not be
 * modified during the walk except by deleting the current key. */
int flint_map_next (const flint_map_t *m, size_t *iter, const char **key_out, void **value_out);

#endif
