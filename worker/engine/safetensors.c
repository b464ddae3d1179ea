/* The safetensors header parser. See safetensors.h for the format and the checks. */
#include "safetensors.h"
#include "flint/cleanup.h"
#include "flint/json.h"

#include <stdlib.h>
#include <string.h>

static const struct {
  const char *name;
  flint_dtype_t dtype;
  size_t size;
} dtypes[] = {
  { "F32", FLINT_DTYPE_F32, 4 },     { "F16", FLINT_DTYPE_F16, 2 },         { "BF16", FLINT_DTYPE_BF16, 2 },
  { "F64", FLINT_DTYPE_F64, 8 },     { "I64", FLINT_DTYPE_I64, 8 },         { "I32", FLINT_DTYPE_I32, 4 },
  { "I16", FLINT_DTYPE_I16, 2 },     { "I8", FLINT_DTYPE_I8, 1 },           { "U8", FLINT_DTYPE_U8, 1 },
  { "BOOL", FLINT_DTYPE_BOOL, 1 },   { "F8_E4M3", FLINT_DTYPE_F8_E4M3, 1 }, { "F8_E5M2", FLINT_DTYPE_F8_E5M2, 1 },
  { "U16", FLINT_DTYPE_U16, 2 },     { "U32", FLINT_DTYPE_U32, 4 },         { "U64", FLINT_DTYPE_U64, 8 },
};

size_t
flint_dtype_size (flint_dtype_t dtype)
{
  for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
    if (dtypes[i].dtype == dtype)
      return dtypes[i].size;
  return 0;
}

const char *
flint_dtype_name (flint_dtype_t dtype)
{
  for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
    if (dtypes[i].dtype == dtype)
      return dtypes[i].name;
  return "?";
}

/* The name index lives right after the tensors in one allocation: see parse. */
typedef struct st_file_priv_s {
  flint_st_file_t pub;
  size_t *by_name;
} st_file_priv_t;

void
flint_st_free (flint_st_file_t *f)
{
  if (f == NULL)
    return;
  for (size_t i = 0; i < f->n; i++)
    free (f->tensors[i].name);
  free (f->tensors);
  free (((st_file_priv_t *) f)->by_name);
  free (f->name);
  free (f);
}

static int
cmp_offset (const void *a, const void *b)
{
  const flint_st_tensor_t *x = a, *y = b;
  if (x->offset != y->offset)
    return x->offset < y->offset ? -1 : 1;
  return x->bytes < y->bytes ? -1 : x->bytes > y->bytes;
}

static int
cmp_name_idx (const void *a, const void *b, void *arg)
{
  const flint_st_tensor_t *t = arg;
  return strcmp (t[*(const size_t *) a].name, t[*(const size_t *) b].name);
}

/* A non-negative integer that fits uint64 (JSON numbers are doubles plus an exact int64). */
static bool
json_u64 (const flint_json_t *v, uint64_t *out)
{
  if (v == NULL || v->type != FLINT_JSON_NUMBER || !v->is_int || v->i64 < 0)
    return false;
  *out = (uint64_t) v->i64;
  return true;
}

static int
parse_tensor (const char *file, const char *name, const flint_json_t *v, uint64_t data_len, flint_st_tensor_t *t,
              flint_error_t *err)
{
  const flint_json_t *dt, *shape, *offs;
  size_t esize = 0;
  uint64_t n = 1, b, e, bytes;

  if (v->type != FLINT_JSON_OBJECT)
    return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: tensor `%s`: expected an object with dtype, shape and data_offsets",
                            file, name);
  for (size_t i = 0; i < v->len; i++)
    if (strcmp (v->keys[i], "dtype") != 0 && strcmp (v->keys[i], "shape") != 0
        && strcmp (v->keys[i], "data_offsets") != 0)
      return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: tensor `%s`: unknown field `%s`", file, name, v->keys[i]);
  dt = flint_json_get (v, "dtype");
  if (dt == NULL || dt->type != FLINT_JSON_STRING)
    return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: tensor `%s`: field `dtype`: missing or not a string", file,
                            name);
  for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
    if (strcmp (dt->str, dtypes[i].name) == 0)
      {
        t->dtype = dtypes[i].dtype;
        esize = dtypes[i].size;
      }
  if (esize == 0)
    return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: tensor `%s`: field `dtype`: unknown dtype `%.32s`", file,
                            name, dt->str);
  shape = flint_json_get (v, "shape");
  if (shape == NULL || shape->type != FLINT_JSON_ARRAY)
    return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: tensor `%s`: field `shape`: missing or not a list", file,
                            name);
  if (shape->len > FLINT_ST_MAX_DIMS)
    return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: tensor `%s`: field `shape`: %zu dimensions (at most %d)",
                            file, name, shape->len, FLINT_ST_MAX_DIMS);
  t->ndim = (uint32_t) shape->len;
  for (size_t i = 0; i < shape->len; i++)
    {
      uint64_t d;
      if (!json_u64 (shape->items[i], &d))
        return flint_error_set (err, FLINT_EPRECONDITION,
                                "`%s`: tensor `%s`: field `shape`: dimension %zu is not a non-negative integer", file,
                                name, i);
      if (d != 0 && n > UINT64_MAX / d)
        return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: tensor `%s`: field `shape`: element count overflows",
                                file, name);
      n *= d;
      t->shape[i] = d;
    }
  if (n > UINT64_MAX / esize)
    return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: tensor `%s`: field `shape`: byte size overflows", file, name);
  bytes = n * esize;
  offs = flint_json_get (v, "data_offsets");
  if (offs == NULL || offs->type != FLINT_JSON_ARRAY || offs->len != 2 || !json_u64 (offs->items[0], &b)
      || !json_u64 (offs->items[1], &e))
    return flint_error_set (err, FLINT_EPRECONDITION,
                            "`%s`: tensor `%s`: field `data_offsets`: expected [begin, end], two non-negative integers",
                            file, name);
  if (b > e)
    return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: tensor `%s`: field `data_offsets`: begin %llu is after end %llu",
                            file, name, (unsigned long long) b, (unsigned long long) e);
  if (e > data_len)
    return flint_error_set (err, FLINT_EPRECONDITION,
                            "`%s`: tensor `%s`: field `data_offsets`: end %llu is past the data section (%llu bytes): "
                            "is the file truncated?",
                            file, name, (unsigned long long) e, (unsigned long long) data_len);
  if (e - b != bytes)
    return flint_error_set (err, FLINT_EPRECONDITION,
                            "`%s`: tensor `%s`: field `data_offsets`: %llu bytes, but dtype %s and shape make %llu", file,
                            name, (unsigned long long) (e - b), dt->str, (unsigned long long) bytes);
  t->nelem = n;
  t->offset = b;
  t->bytes = bytes;
  return 0;
}

int
flint_st_parse (const char *name, const void *data, size_t len, flint_st_file_t **out, flint_error_t *err)
{
  const uint8_t *p = data;
  uint64_t hlen = 0;
  flint_json_doc_t *doc = NULL;
  const flint_json_t *root;
  st_file_priv_t *f = NULL;
  char jerr[160];
  size_t n = 0;
  uint64_t end;

  if (len < 8)
    return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: %zu bytes is too short for a safetensors file "
                            "(truncated?)", name, len);
  for (int i = 7; i >= 0; i--)
    hlen = hlen << 8 | p[i];
  if (hlen > FLINT_ST_MAX_HEADER)
    return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: header size %llu exceeds the limit of %u bytes (not a "
                            "safetensors file?)", name, (unsigned long long) hlen, FLINT_ST_MAX_HEADER);
  if (hlen > len - 8)
    return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: header of %llu bytes but the file has %zu (truncated?)",
                            name, (unsigned long long) hlen, len);
  if (hlen < 2 || p[8] != '{')
    return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: the header is not a JSON object (not a safetensors "
                            "file?)", name);
  if (flint_json_parse ((const char *) p + 8, (size_t) hlen, &doc, jerr, sizeof jerr) < 0)
    return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: header: %s", name, jerr);
  root = flint_json_root (doc);
  if (root->type != FLINT_JSON_OBJECT)
    {
      flint_json_doc_free (doc);
      return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: the header is not a JSON object", name);
    }

  f = calloc (1, sizeof *f);
  if (f == NULL || (f->pub.name = strdup (name)) == NULL
      || (root->len && (f->pub.tensors = calloc (root->len, sizeof *f->pub.tensors)) == NULL))
    {
      flint_json_doc_free (doc);
      if (f)
        flint_st_free (&f->pub);
      return flint_error_set (err, FLINT_EINTERNAL, "`%s`: out of memory", name);
    }
  f->pub.base = p;
  f->pub.len = len;
  f->pub.data = p + 8 + hlen;
  f->pub.data_len = len - 8 - hlen;
  for (size_t i = 0; i < root->len; i++)
    {
      const char *key = root->keys[i];
      const flint_json_t *v = root->items[i];
      flint_st_tensor_t *t = &f->pub.tensors[n];

      if (strcmp (key, "__metadata__") == 0)
        {
          /* free-form string map: checked for shape only */
          bool okm = v->type == FLINT_JSON_OBJECT;
          for (size_t j = 0; okm && j < v->len; j++)
            okm = v->items[j]->type == FLINT_JSON_STRING;
          if (!okm)
            goto bad_meta;
          continue;
        }
      if (root->key_lens[i] == 0 || strlen (key) != root->key_lens[i])
        {
          flint_error_set (err, FLINT_EPRECONDITION, "`%s`: header: a tensor name is empty or contains NUL", name);
          goto fail;
        }
      if (parse_tensor (name, key, v, f->pub.data_len, t, err) < 0)
        goto fail;
      t->name = strdup (key);
      if (t->name == NULL)
        {
          flint_error_set (err, FLINT_EINTERNAL, "`%s`: out of memory", name);
          goto fail;
        }
      t->data = f->pub.data + t->offset;
      f->pub.n = ++n;
    }
  flint_json_doc_free (doc);
  doc = NULL;

  /* no overlaps and no holes: sorted by offset, each tensor starts where the previous ended and
   * the last ends where the file does (zero-sized tensors may sit anywhere in between) */
  if (n)
    qsort (f->pub.tensors, n, sizeof *f->pub.tensors, cmp_offset);
  end = 0;
  for (size_t i = 0; i < n; i++)
    {
      const flint_st_tensor_t *t = &f->pub.tensors[i];
      if (t->bytes == 0)
        continue;
      if (t->offset < end)
        {
          flint_error_set (err, FLINT_EPRECONDITION, "`%s`: tensor `%s`: field `data_offsets`: overlaps the tensor before it",
                           name, t->name);
          goto fail;
        }
      if (t->offset > end)
        {
          flint_error_set (err, FLINT_EPRECONDITION,
                           "`%s`: tensor `%s`: field `data_offsets`: leaves a hole of %llu bytes before it", name, t->name,
                           (unsigned long long) (t->offset - end));
          goto fail;
        }
      end = t->offset + t->bytes;
    }
  if (end != f->pub.data_len)
    {
      flint_error_set (err, FLINT_EPRECONDITION, "`%s`: %llu bytes after the last tensor (the data section is %llu bytes)",
                       name, (unsigned long long) (f->pub.data_len - end), (unsigned long long) f->pub.data_len);
      goto fail;
    }

  /* name index, and duplicate names (JSON allows them, safetensors does not) */
  if (n)
    {
      f->by_name = malloc (n * sizeof *f->by_name);
      if (f->by_name == NULL)
        {
          flint_error_set (err, FLINT_EINTERNAL, "`%s`: out of memory", name);
          goto fail;
        }
      for (size_t i = 0; i < n; i++)
        f->by_name[i] = i;
      qsort_r (f->by_name, n, sizeof *f->by_name, cmp_name_idx, f->pub.tensors);
      for (size_t i = 1; i < n; i++)
        if (strcmp (f->pub.tensors[f->by_name[i]].name, f->pub.tensors[f->by_name[i - 1]].name) == 0)
          {
            flint_error_set (err, FLINT_EPRECONDITION, "`%s`: header: tensor `%s` appears twice", name,
                             f->pub.tensors[f->by_name[i]].name);
            goto fail;
          }
    }
  *out = &f->pub;
  return 0;

bad_meta:
  flint_error_set (err, FLINT_EPRECONDITION, "`%s`: header: field `__metadata__`: expected a map of strings", name);
fail:
  flint_json_doc_free (doc);
  flint_st_free (&f->pub);
  return -1;
}

const flint_st_tensor_t *
flint_st_find (const flint_st_file_t *f, const char *name)
{
  const st_file_priv_t *pf = (const st_file_priv_t *) f;
  size_t lo = 0, hi = f->n;

  while (lo < hi)
    {
      size_t mid = lo + (hi - lo) / 2;
      int c = strcmp (name, f->tensors[pf->by_name[mid]].name);
      if (c == 0)
        return &f->tensors[pf->by_name[mid]];
      if (c < 0)
        hi = mid;
      else
        lo = mid + 1;
    }
  return NULL;
}
