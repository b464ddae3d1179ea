/* libFuzzer target: the safetensors header parser (worker/engine/safetensors.c) on arbitrary
 * file contents. Every parsed tensor must lie inside the buffer and be looked up by name. */
#include "safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  flint_st_file_t *f = NULL;
  flint_error_t err = FLINT_ERROR_INIT;

  if (flint_st_parse ("fuzz.safetensors", data, size, &f, &err) < 0)
    {
      if (err.msg[0] == '\0')
        abort (); /* every failure explains itself */
      return 0;
    }
  for (size_t i = 0; i < f->n; i++)
    {
      const flint_st_tensor_t *t = &f->tensors[i];
      const uint8_t *p = t->data;
      if (p < data || p + t->bytes > data + size || flint_st_find (f, t->name) != t)
        abort ();
      if (t->bytes)
        {
          volatile uint8_t x = p[0];
          x = p[t->bytes - 1];
          (void) x;
        }
    }
  flint_st_free (f);
  return 0;
}
