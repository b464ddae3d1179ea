/* Intrusive circular doubly-linked lists (the Linux/libuv idiom): embed a flint_list_t in a
 * struct, recover the struct with flint_list_entry(). O(1) insert and unlink; an unlinked node
 * points to itself, so unlinking twice is harmless. */
#ifndef FLINT_LIST_H
#define FLINT_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct flint_list_s {
  struct flint_list_s *prev, *next;
} flint_list_t;

#define flint_list_entry(ptr, type, member) ((type *) ((char *) (ptr) - offsetof (type, member)))

static inline void
flint_list_init (flint_list_t *l)
{
  l->prev = l->next = l;
}

static inline bool
flint_list_empty (const flint_list_t *l)
{
  return l->next == l;
}

static inline void
flint_list_insert_tail (flint_list_t *head, flint_list_t *n)
{
  n->prev = head->prev;
  n->next = head;
  head->prev->next = n;
  head->prev = n;
}

static inline void
flint_list_insert_head (flint_list_t *head, flint_list_t *n)
{
  n->next = head->next;
  n->prev = head;
  head->next->prev = n;
  head->next = n;
}

static inline void
flint_list_remove (flint_list_t *n)
{
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = n;
}

/* Iterates safely against removal of the current node. */
#define flint_list_foreach_safe(pos, tmp, head) \
  for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

static inline size_t
flint_list_length (const flint_list_t *head)
{
  size_t n = 0;
  for (const flint_list_t *p = head->next; p != head; p = p->next)
    n++;
  return n;
}

#endif
