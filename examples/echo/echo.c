/* examples/echo: the smallest flint function. It returns its input unchanged.
 *
 *   flint deploy build/examples/echo
 *   flint invoke echo --data 'hello'
 */
#include <flint/function.h>

FLINT_FUNCTION_ABI;

int
flint_invoke (flint_ctx_t *ctx, const flint_input_t *in, flint_output_t *out)
{
  (void) ctx;
  return flint_output_write (out, in->data, in->len);
}
