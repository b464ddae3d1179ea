/* A small fork-join thread pool for the CPU backend: `flint__pool_run` hands out task indices
 * 0..n-1 to the calling thread and the pool's workers and returns when all are done.
 *
 * A decode step issues a few hundred short parallel operations, so hand-off latency matters
 * more than throughput: idle workers spin briefly on the job counter before sleeping on a
 * condition variable, and the caller takes tasks itself instead of waiting. With no work the
 * workers sleep (no CPU burnt by an idle replica). */
#ifndef FLINT_ENGINE_POOL_H
#define FLINT_ENGINE_POOL_H

#include <stdint.h>

typedef struct flint_pool_s flint_pool_t;

/* Runs task `task` on pool thread `thread` (0 = the caller, 1..threads-1 the workers). */
typedef void (*flint_pool_fn) (void *arg, uint32_t task, uint32_t thread);

/* A pool of `threads` threads in all, the caller counted (threads - 1 are started). Returns 0
 * or -errno (pthread_create). */
int flint__pool_new (uint32_t threads, flint_pool_t **out);
/* Stops and joins the workers. */
void flint__pool_free (flint_pool_t *p);
uint32_t flint__pool_threads (const flint_pool_t *p);
/* Runs fn(arg, t, thread) for t in 0..n-1 across the pool; returns when all have returned.
 * Not reentrant: one caller at a time. */
void flint__pool_run (flint_pool_t *p, flint_pool_fn fn, void *arg, uint32_t n);

#endif
