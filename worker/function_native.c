/* Loader for `kind: native`: a shared object implementing include/flint/function.h.
 *
 * The object is opened with RTLD_NOW (unresolved symbols fail the deploy, not the first invoke)
 * and RTLD_LOCAL; it resolves the ABI services (flint_output_write, ...) against flint-worker,
 * which exports them. */
#include "worker.h"
#include "flint/cleanup.h"

#include <dlfcn.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void
native_unload (flint_ctx_t *ctx)
{
  (void) ctx;
  /* The object stays mapped until exit: its code may still run in executor threads being
   * joined, and dlclose at exit buys nothing. */
}

int
flint__load_native (flint_ctx_t *ctx, const char *path, flint_function_t *fn, flint_error_t *err)
{
  struct stat st;
  void *h;
  const uint32_t *abi;

  (void) ctx;
  if (stat (path, &st) < 0)
    return flint_error_set_errno (err, FLINT_EPRECONDITION, errno, "function `%s`", path);
  h = dlopen (path, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL)
    return flint_error_set (err, FLINT_EPRECONDITION, "cannot load function: %s", dlerror ());
  abi = dlsym (h, "flint_abi_version");
  if (abi != NULL && *abi != FLINT_ABI_VERSION)
    {
      dlclose (h);
      return flint_error_set (err, FLINT_EPRECONDITION,
                              "function `%s` was built for flint ABI %u, this worker speaks %u",
                              path, *abi, FLINT_ABI_VERSION);
    }
  memset (fn, 0, sizeof *fn);
  *(void **) &fn->invoke = dlsym (h, "flint_invoke");
  *(void **) &fn->init = dlsym (h, "flint_init");
  *(void **) &fn->before_checkpoint = dlsym (h, "flint_before_checkpoint");
  *(void **) &fn->after_restore = dlsym (h, "flint_after_restore");
  *(void **) &fn->fini = dlsym (h, "flint_fini");
  if (fn->invoke == NULL)
    {
      dlclose (h);
      return flint_error_set (err, FLINT_EPRECONDITION,
                              "function `%s` does not export the entry point `flint_invoke` "
                              "(see worker/include/flint/function.h)", path);
    }
  fn->unload = native_unload;
  fn->loader_state = h;
  return 0;
}
