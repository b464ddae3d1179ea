/* Loader for `kind: llm`: the built-in model engine (worker/engine). */
#include "worker.h"

int
flint__load_llm (flint_ctx_t *ctx, const char *path, flint_function_t *fn, flint_error_t *err)
{
  (void) ctx;
  (void) fn;
  return flint_error_set (err, FLINT_EUNIMPLEMENTED, "model `%s`: this flint-worker was built without the model engine", path);
}
