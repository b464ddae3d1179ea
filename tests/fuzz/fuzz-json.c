/* libFuzzer target: common/json.c, the JSON parser of HTTP bodies, config.json and
 * tokenizer.json (all untrusted).
 *
 * Checked on every input: the parser never reads outside its input (an exact-size copy), a
 * failure comes with a "line L, column C: ..." message, and a success yields a tree whose every
 * node is well formed: strings NUL-terminated at their length, counts matching their arrays,
 * depth within FLINT_JSON_MAX_DEPTH, integers flagged is_int equal to their double, lookups
 * returning the last of duplicate keys. */
#include "flint/json.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static void
check (const flint_json_t *v, int depth)
{
  if (v == NULL || depth > FLINT_JSON_MAX_DEPTH + 1)
    abort ();
  switch (v->type)
    {
    case FLINT_JSON_NULL:
    case FLINT_JSON_BOOL:
      break;
    case FLINT_JSON_NUMBER:
      if (!isfinite (v->num))
        abort ();
      if (v->is_int && (double) v->i64 != v->num) /* both round the same integer */
        abort ();
      break;
    case FLINT_JSON_STRING:
      if (v->str == NULL || v->str[v->len] != '\0')
        abort ();
      break;
    case FLINT_JSON_ARRAY:
      for (size_t i = 0; i < v->len; i++)
        check (v->items[i], depth + 1);
      break;
    case FLINT_JSON_OBJECT:
      for (size_t i = 0; i < v->len; i++)
        {
          const flint_json_t *found;
          if (v->keys[i] == NULL || v->keys[i][v->key_lens[i]] != '\0')
            abort ();
          check (v->items[i], depth + 1);
          /* keys without an inner NUL can be looked up; the last duplicate wins */
          if (strlen (v->keys[i]) == v->key_lens[i])
            {
              found = flint_json_get (v, v->keys[i]);
              if (found == NULL)
                abort ();
              for (size_t j = i + 1; j < v->len; j++)
                if (strcmp (v->keys[j], v->keys[i]) == 0 && found == v->items[i])
                  abort ();
            }
        }
      break;
    default:
      abort ();
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *text = malloc (size ? size : 1);
  flint_json_doc_t *doc = NULL;
  char err[256];

  if (text == NULL)
    return 0;
  memcpy (text, data, size);
  err[0] = '\0';
  if (flint_json_parse (text, size, &doc, err, sizeof err) == 0)
    {
      const flint_json_t *root = flint_json_root (doc);
      const char *s;
      size_t len;
      double d;
      int64_t i;
      bool b;

      check (root, 0);
      /* the typed accessors on whatever the root is */
      (void) flint_json_get_string (root, "a", &s, &len);
      (void) flint_json_get_number (root, "a", &d);
      (void) flint_json_get_int (root, "a", &i);
      (void) flint_json_get_bool (root, "a", &b);
      flint_json_doc_free (doc);
    }
  else if ((strncmp (err, "line ", 5) != 0 || strstr (err, "column ") == NULL) && strcmp (err, "out of memory") != 0)
    {
      fprintf (stderr, "fuzz-json: failure without a position: `%s`\n", err);
      abort ();
    }
  free (text);
  return 0;
}
