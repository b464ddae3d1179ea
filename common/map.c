/* flint_map_t: FNV-1a hashing, linear probing, tombstones, growth at 70% occupancy. */
#include "flint/map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static char tombstone_key;
#define TOMBSTONE (&tombstone_key)

static uint64_t
hash_str (const char *s)
{
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (unsigned char) *s) * 1099511628211ull;
  return h;
}

static flint_map_entry_t *
find_slot (const flint_map_t *m, const char *key)
{
  size_t mask = m->cap - 1;
  size_t i = (size_t) hash_str (key) & mask;

  for (;;)
    {
      flint_map_entry_t *e = &m->slots[i];
      if (e->key == NULL)
        return NULL;
      if (e->key != TOMBSTONE && strcmp (e->key, key) == 0)
        return e;
      i = (i + 1) & mask;
    }
}

void *
flint_map_get (const flint_map_t *m, const char *key)
{
  flint_map_entry_t *e;
  if (m->cap == 0)
    return NULL;
  e = find_slot (m, key);
  return e ? e->value : NULL;
}

static void
grow (flint_map_t *m)
{
  size_t ncap = m->cap ? m->cap * 2 : 16;
  flint_map_entry_t *old = m->slots;
  size_t ocap = m->cap;

  if (m->len * 2 < m->cap)
    ncap = m->cap; /* mostly tombstones: rehash in place size */
  m->slots = calloc (ncap, sizeof *m->slots);
  if (m->slots == NULL)
    abort ();
  m->cap = ncap;
  m->len = m->used = 0;
  for (size_t i = 0; i < ocap; i++)
    {
      if (old[i].key == NULL || old[i].key == TOMBSTONE)
        continue;
      size_t j = (size_t) hash_str (old[i].key) & (ncap - 1);
      while (m->slots[j].key)
        j = (j + 1) & (ncap - 1);
      m->slots[j] = old[i];
      m->len++;
      m->used++;
    }
  free (old);
}

void *
flint_map_put (flint_map_t *m, const char *key, void *value)
{
  flint_map_entry_t *e;
  size_t i, mask;

  if (m->cap)
    {
      e = find_slot (m, key);
      if (e)
        {
          void *prev = e->value;
          e->value = value;
          return prev;
        }
    }
  if ((m->used + 1) * 10 >= m->cap * 7)
    grow (m);
  mask = m->cap - 1;
  i = (size_t) hash_str (key) & mask;
  while (m->slots[i].key && m->slots[i].key != TOMBSTONE)
    i = (i + 1) & mask;
  if (m->slots[i].key == NULL)
    m->used++;
  m->slots[i].key = strdup (key);
  if (m->slots[i].key == NULL)
    abort ();
  m->slots[i].value = value;
  m->len++;
  return NULL;
}

void *
flint_map_del (flint_map_t *m, const char *key)
{
  flint_map_entry_t *e;
  void *v;

  if (m->cap == 0 || (e = find_slot (m, key)) == NULL)
    return NULL;
  v = e->value;
  free (e->key);
  e->key = TOMBSTONE;
  e->value = NULL;
  m->len--;
  return v;
}

void
flint_map_free (flint_map_t *m)
{
  for (size_t i = 0; i < m->cap; i++)
    if (m->slots[i].key && m->slots[i].key != TOMBSTONE)
      free (m->slots[i].key);
  free (m->slots);
  memset (m, 0, sizeof *m);
}

int
flint_map_next (const flint_map_t *m, size_t *iter, const char **key_out, void **value_out)
{
  while (*iter < m->cap)
    {
      flint_map_entry_t *e = &m->slots[(*iter)++];
      if (e->key && e->key != TOMBSTONE)
        {
          if (key_out)
            *key_out = e->key;
          if (value_out)
            *value_out = e->value;
          return 1;
        }
    }
  return 0;
}
