/* The CPU backend's thread pool. See pool.h.
 *
 * Protocol: a job is published as one 64-bit word, generation << 32 | next task, after its
 * descriptor (fn, arg, n) was written to the slot of that generation's parity. Anyone (workers
 * and the caller) claims a task with a compare-and-swap on the word, which fails once the
 * generation moved on, so a worker that looked at an old job can never run a task of it late;
 * a claimed task is always run and counted in `done`. The caller returns when `done` reaches n.
 *
 * The caller never waits for a worker that claimed nothing: on a busy machine a preempted
 * worker only costs the tasks it holds, instead of stalling every operation until it is
 * scheduled again to acknowledge the job (the cost of a plain fork-join barrier). */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#define SPIN_ITERS 20000

typedef struct job_s {
  flint_pool_fn fn;
  void *arg;
  uint32_t n;
} job_t;

struct flint_pool_s {
  uint32_t threads;
  pthread_t *tids;
  pthread_mutex_t lock;
  pthread_cond_t wake;       /* a new generation */
  pthread_cond_t idle;       /* done reached n */
  job_t job[2];              /* by generation parity */
  uint64_t word;             /* atomic: generation << 32 | next task */
  uint32_t done;             /* atomic: tasks finished in the current job */
  bool caller_waiting;       /* under lock: the caller sleeps on `idle` */
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

/* Claims and runs tasks of generation `gen` until none is left. */
static void
work (flint_pool_t *p, uint32_t gen, uint32_t self)
{
  for (;;)
    {
      uint64_t w = __atomic_load_n (&p->word, __ATOMIC_ACQUIRE);
      const job_t *j = &p->job[gen & 1];
      uint32_t t = (uint32_t) w;
      job_t mine;
      /* the slot may already hold a later job of the same parity when this worker is late: its
       * n is read atomically, and the claim below fails then */
      if ((uint32_t) (w >> 32) != gen || t >= __atomic_load_n (&j->n, __ATOMIC_RELAXED))
        return;
      if (!__atomic_compare_exchange_n (&p->word, &w, w + 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        continue;
      /* claimed: the job cannot change before this task is counted done */
      mine = *j;
      mine.fn (mine.arg, t, self);
      if (__atomic_add_fetch (&p->done, 1, __ATOMIC_ACQ_REL) == mine.n)
        {
          pthread_mutex_lock (&p->lock);
          if (p->caller_waiting)
            pthread_cond_signal (&p->idle);
          pthread_mutex_unlock (&p->lock);
        }
    }
}

static void *
worker_main (void *arg)
{
  worker_arg_t *wa = arg;
  flint_pool_t *p = wa->p;
  uint32_t self = wa->index, seen = 0;

  free (wa);
  for (;;)
    {
      uint32_t gen;
      int spins = 0;
      while ((gen = (uint32_t) (__atomic_load_n (&p->word, __ATOMIC_ACQUIRE) >> 32)) == seen && spins < SPIN_ITERS)
        {
          cpu_relax ();
          spins++;
        }
      if (gen == seen)
        {
          pthread_mutex_lock (&p->lock);
          while ((gen = (uint32_t) (__atomic_load_n (&p->word, __ATOMIC_ACQUIRE) >> 32)) == seen && !p->stop)
            pthread_cond_wait (&p->wake, &p->lock);
          pthread_mutex_unlock (&p->lock);
          if (gen == seen)
            return NULL; /* stopping */
        }
      seen = gen;
      work (p, gen, self);
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
  uint32_t gen;
  int spins = 0;

  if (p->threads == 1 || n <= 1)
    {
      for (uint32_t t = 0; t < n; t++)
        fn (arg, t, 0);
      return;
    }
  /* The previous job is complete (done == n): nobody runs its tasks, and a worker still looking
   * at it fails its claim once the word moves on. Generations alternate parity (wrapping from
   * 0xffffffff to 0 included), so the slot written here is never the current job's. */
  gen = (uint32_t) (__atomic_load_n (&p->word, __ATOMIC_ACQUIRE) >> 32) + 1;
  p->job[gen & 1].fn = fn;
  p->job[gen & 1].arg = arg;
  __atomic_store_n (&p->job[gen & 1].n, n, __ATOMIC_RELAXED);
  __atomic_store_n (&p->done, 0, __ATOMIC_RELAXED);
  pthread_mutex_lock (&p->lock);
  __atomic_store_n (&p->word, (uint64_t) gen << 32, __ATOMIC_RELEASE);
  pthread_cond_broadcast (&p->wake);
  pthread_mutex_unlock (&p->lock);
  work (p, gen, 0);
  while (__atomic_load_n (&p->done, __ATOMIC_ACQUIRE) != n && spins < SPIN_ITERS)
    {
      cpu_relax ();
      spins++;
    }
  if (__atomic_load_n (&p->done, __ATOMIC_ACQUIRE) != n)
    {
      pthread_mutex_lock (&p->lock);
      p->caller_waiting = true;
      while (__atomic_load_n (&p->done, __ATOMIC_ACQUIRE) != n)
        pthread_cond_wait (&p->idle, &p->lock);
      p->caller_waiting = false;
      pthread_mutex_unlock (&p->lock);
    }
}
