/* The CPU backend's thread pool. See pool.h.
 *
 * Protocol: the caller publishes (fn, arg, n), resets `next` and `pending`, then bumps `gen`.
 * Workers notice the new generation (spinning, then on the condition variable), claim tasks
 * with an atomic increment of `next`, and decrement `pending` when they leave the job. The
 * caller also claims tasks, then waits for `pending` to reach zero, which also guarantees no
 * worker still looks at the job when the next one is published. */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#define SPIN_ITERS 20000

struct flint_pool_s {
  uint32_t threads;
  pthread_t *tids;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  pthread_cond_t idle;
  /* the job */
  flint_pool_fn fn;
  void *arg;
  uint32_t n;
  uint32_t next;         /* atomic: next task to claim */
  uint32_t pending;      /* atomic: workers still in the job */
  uint64_t gen;          /* atomic: job generation */
  bool stop;
};

typedef struct worker_arg_s {
  flint_pool_t *p;
  uint32_t index;
} worker_arg_t;

static inline void
cpu_relax (void)
{
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause ();
#endif
}

static void
work (flint_pool_t *p, uint32_t self)
{
  for (;;)
    {
      uint32_t t = __atomic_fetch_add (&p->next, 1, __ATOMIC_ACQ_REL);
      if (t >= p->n)
        break;
      p->fn (p->arg, t, self);
    }
}

static void *
worker_main (void *arg)
{
  worker_arg_t *wa = arg;
  flint_pool_t *p = wa->p;
  uint32_t self = wa->index;
  uint64_t seen = 0;

  free (wa);
  for (;;)
    {
      uint64_t g;
      int spins = 0;
      while ((g = __atomic_load_n (&p->gen, __ATOMIC_ACQUIRE)) == seen && spins < SPIN_ITERS)
        {
          cpu_relax ();
          spins++;
        }
      if (g == seen)
        {
          pthread_mutex_lock (&p->lock);
          while ((g = __atomic_load_n (&p->gen, __ATOMIC_ACQUIRE)) == seen && !p->stop)
            pthread_cond_wait (&p->wake, &p->lock);
          pthread_mutex_unlock (&p->lock);
        }
      if (__atomic_load_n (&p->gen, __ATOMIC_ACQUIRE) == seen)
        return NULL; /* stopping */
      seen = g;
      work (p, self);
      if (__atomic_sub_fetch (&p->pending, 1, __ATOMIC_ACQ_REL) == 0)
        {
          pthread_mutex_lock (&p->lock);
          pthread_cond_signal (&p->idle);
          pthread_mutex_unlock (&p->lock);
        }
    }
}

int
flint__pool_new (uint32_t threads, flint_pool_t **out)
{
  flint_pool_t *p = calloc (1, sizeof *p);
  if (p == NULL)
    return -ENOMEM;
  p->threads = threads ? threads : 1;
  pthread_mutex_init (&p->lock, NULL);
  pthread_cond_init (&p->wake, NULL);
  pthread_cond_init (&p->idle, NULL);
  p->tids = calloc (p->threads, sizeof *p->tids);
  if (p->tids == NULL)
    {
      flint__pool_free (p);
      return -ENOMEM;
    }
  for (uint32_t i = 1; i < p->threads; i++)
    {
      worker_arg_t *wa = malloc (sizeof *wa);
      int r;
      if (wa == NULL)
        r = ENOMEM;
      else
        {
          wa->p = p;
          wa->index = i;
          r = pthread_create (&p->tids[i], NULL, worker_main, wa);
          if (r != 0)
            free (wa);
        }
      if (r != 0)
        {
          p->threads = i; /* the ones started get joined */
          flint__pool_free (p);
          return -r;
        }
    }
  *out = p;
  return 0;
}

void
flint__pool_free (flint_pool_t *p)
{
  if (p == NULL)
    return;
  pthread_mutex_lock (&p->lock);
  p->stop = true;
  pthread_cond_broadcast (&p->wake);
  pthread_mutex_unlock (&p->lock);
  for (uint32_t i = 1; i < p->threads && p->tids; i++)
    pthread_join (p->tids[i], NULL);
  pthread_mutex_destroy (&p->lock);
  pthread_cond_destroy (&p->wake);
  pthread_cond_destroy (&p->idle);
  free (p->tids);
  free (p);
}

uint32_t
flint__pool_threads (const flint_pool_t *p)
{
  return p->threads;
}

void
flint__pool_run (flint_pool_t *p, flint_pool_fn fn, void *arg, uint32_t n)
{
  int spins = 0;

  if (p->threads == 1 || n <= 1)
    {
      for (uint32_t t = 0; t < n; t++)
        fn (arg, t, 0);
      return;
    }
  p->fn = fn;
  p->arg = arg;
  p->n = n;
  __atomic_store_n (&p->next, 0, __ATOMIC_RELAXED);
  __atomic_store_n (&p->pending, p->threads - 1, __ATOMIC_RELAXED);
  pthread_mutex_lock (&p->lock);
  __atomic_add_fetch (&p->gen, 1, __ATOMIC_RELEASE);
  pthread_cond_broadcast (&p->wake);
  pthread_mutex_unlock (&p->lock);
  work (p, 0);
  while (__atomic_load_n (&p->pending, __ATOMIC_ACQUIRE) != 0 && spins < SPIN_ITERS)
    {
      cpu_relax ();
      spins++;
    }
  if (__atomic_load_n (&p->pending, __ATOMIC_ACQUIRE) != 0)
    {
      pthread_mutex_lock (&p->lock);
      while (__atomic_load_n (&p->pending, __ATOMIC_ACQUIRE) != 0)
        pthread_cond_wait (&p->idle, &p->lock);
      pthread_mutex_unlock (&p->lock);
    }
}
