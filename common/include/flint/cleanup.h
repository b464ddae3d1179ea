/* Scope-bound ownership for C (crun's cleanup_* habit).
 *
 * Every owning local is declared with one of these attributes and initialised to NULL or -1;
 * ownership leaves the scope only through steal_pointer() / steal_fd(), which makes every
 * transfer visible at the call site. */
#ifndef FLINT_CLEANUP_H
#define FLINT_CLEANUP_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static inline void
flint__cleanup_freep (void *p)
{
  void **pp = (void **) p;
  free (*pp);
}

static inline void
flint__cleanup_closep (int *fd)
{
  if (*fd >= 0)
    {
      int saved = errno;
      close (*fd);
      errno = saved;
    }
}

static inline void
flint__cleanup_fclosep (FILE **f)
{
  if (*f)
    fclose (*f);
}

/* A child pid owned by a scope: killed and reaped when the scope ends without steal. */
static inline void
flint__cleanup_pidp (pid_t *pid)
{
  if (*pid > 0)
    {
      int saved = errno, status;
      kill (*pid, SIGKILL);
      while (waitpid (*pid, &status, 0) < 0 && errno == EINTR)
        ;
      errno = saved;
    }
}

#define _cleanup_free_ __attribute__((cleanup(flint__cleanup_freep)))
#define _cleanup_close_ __attribute__((cleanup(flint__cleanup_closep)))
#define _cleanup_fclose_ __attribute__((cleanup(flint__cleanup_fclosep)))
#define _cleanup_pid_ __attribute__((cleanup(flint__cleanup_pidp)))

/* Moves ownership out of an owning local: returns the value and leaves NULL / -1 behind. */
#define steal_pointer(pp) \
  __extension__({ __typeof__(*(pp)) _stolen = *(pp); *(pp) = NULL; _stolen; })

static inline int
steal_fd (int *fd)
{
  int r = *fd;
  *fd = -1;
  return r;
}

static inline pid_t
steal_pid (pid_t *pid)
{
  pid_t r = *pid;
  *pid = -1;
  return r;
}

#endif
