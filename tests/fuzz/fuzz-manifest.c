/* libFuzzer target: runtime/manifest.c, the flint.yaml parser. Manifests come from clients
 * (the Deploy RPC carries the text), so they are untrusted.
 *
 * Checked on every input: no read outside the input (an exact-size copy); a failure is
 * FLINT_EINVAL with a message that starts with the file name and a line:column position; a
 * success satisfies every documented rule (valid name, relative paths, kind-specific fields,
 * limits within their ranges, scale knobs consistent). */
#include "manifest.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
  do                                                                                               \
    {                                                                                              \
      if (!(cond))                                                                                 \
        {                                                                                          \
          fprintf (stderr, "fuzz-manifest: broken rule: %s\n", #cond);                             \
          abort ();                                                                                \
        }                                                                                          \
    }                                                                                              \
  while (0)

static void
check_manifest (const flint_manifest_t *m)
{
  flint_error_t err = FLINT_ERROR_INIT;

  CHECK (m->name && flint_name_valid (m->name));
  CHECK (m->kind == FLINT_KIND_NATIVE || m->kind == FLINT_KIND_EXEC || m->kind == FLINT_KIND_LLM);
  if (m->kind == FLINT_KIND_LLM)
    {
      CHECK (m->function == NULL && m->model != NULL);
      CHECK (strcmp (m->model, ".") == 0 || flint_relpath_valid (m->model));
    }
  else
    {
      CHECK (m->function && flint_relpath_valid (m->function));
      CHECK (m->model == NULL && m->draft_model == NULL);
    }
  CHECK (m->n_args == 0 || m->kind == FLINT_KIND_EXEC);
  for (size_t i = 0; i < m->n_args; i++)
    CHECK (m->args[i] != NULL);
  for (size_t i = 0; i < m->n_config; i++)
    {
      CHECK (m->config[i].key && m->config[i].value);
      for (size_t j = 0; j < i; j++)
        CHECK (strcmp (m->config[i].key, m->config[j].key) != 0);
    }
  for (size_t i = 0; i < m->n_weights; i++)
    CHECK (flint_name_valid (m->weights[i].key) && flint_relpath_valid (m->weights[i].value));
  for (size_t i = 0; i < m->n_secrets; i++)
    CHECK (flint_name_valid (m->secrets[i]));
  CHECK (m->resources.memory_bytes >= (16u << 20));
  CHECK (m->resources.cpu_millis >= 10);
  CHECK (m->resources.pids >= 4);
  CHECK (m->resources.nofile >= 16);
  CHECK (m->max_payload >= 1024 && m->max_payload <= (1ull << 30));
  CHECK (flint_scale_validate (&m->scale, &err) == 0);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *text = malloc (size ? size : 1);
  flint_manifest_t *m = NULL;
  flint_error_t err = FLINT_ERROR_INIT;

  if (text == NULL)
    return 0;
  memcpy (text, data, size);
  if (flint_manifest_parse (text, size, "fuzz.yaml", &m, &err) == 0)
    {
      check_manifest (m);
      /* the live knobs go through the same field parsers: feed them the config values */
      for (size_t i = 0; i < m->n_config; i++)
        {
          flint_scale_t s = m->scale;
          flint_error_t e2 = FLINT_ERROR_INIT;
          if (flint_scale_set (&s, m->config[i].key, m->config[i].value, &e2) < 0)
            CHECK (e2.code == FLINT_EINVAL && e2.msg[0] != '\0');
        }
      flint_manifest_free (m);
    }
  else
    {
      CHECK (err.code == FLINT_EINVAL);
      CHECK (strncmp (err.msg, "fuzz.yaml:", 10) == 0);
    }
  free (text);
  return 0;
}
