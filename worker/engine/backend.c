/* The list of compute backends and the choice among them. The CUDA backend (backend_cuda.c) is
 * listed first when the engine was built with it (FLINT_ENGINE_CUDA, set by
 * worker/engine/meson.build when the toolkit is found); "auto" then takes it wherever a GPU
 * answers and otherwise falls back to the CPU, keeping the reason in the backend's `fallback`
 * so the worker can log it. */
#include "backend.h"

#include <stdio.h>
#include <string.h>

typedef int (*open_fn) (const flint_backend_options_t *o, flint_backend_t **out, flint_error_t *err);

static const struct {
  const char *name;
  open_fn open;
} backends[] = {
#ifdef FLINT_ENGINE_CUDA
  { "cuda", flint__backend_cuda_open },
#endif
  { "cpu", flint__backend_cpu_open },
};

int
flint__backend_open (const char *name, const flint_backend_options_t *o, flint_backend_t **out, flint_error_t *err)
{
  size_t n = sizeof backends / sizeof backends[0];
  bool any = name == NULL || name[0] == '\0' || strcmp (name, "auto") == 0;
  char why[256] = "";

  for (size_t i = 0; i < n; i++)
    {
      flint_error_t e2 = FLINT_ERROR_INIT;
      if (!any && strcmp (name, backends[i].name) != 0)
        continue;
      if (backends[i].open (o, out, any ? &e2 : err) == 0)
        {
          snprintf ((*out)->fallback, sizeof (*out)->fallback, "%s", why);
          return 0;
        }
      if (!any)
        return -1;
      /* auto: a GPU backend that finds no device gives way to the next one */
      if (why[0] == '\0')
        snprintf (why, sizeof why, "%s: %s", backends[i].name, e2.msg);
    }
  if (any)
    return flint_error_set (err, FLINT_EPRECONDITION, "no compute backend could be opened");
  return flint_error_set (err, FLINT_EPRECONDITION, "unknown compute backend `%s` (this build has: %s)", name,
#ifdef FLINT_ENGINE_CUDA
                          "cuda, cpu"
#else
                          "cpu"
#endif
  );
}
