/* JSON parser: recursive descent over a byte buffer into arena-allocated nodes.
 *
 * Security notes (this parses HTTP bodies and model files): every read is bounds-checked
 * against the input length, depth is capped at FLINT_JSON_MAX_DEPTH, string escapes are
 * validated (surrogate pairs must pair up), and sizes are checked for overflow before any
 * allocation. Arrays and objects are first collected on a growable scratch stack and then
 * copied into the arena, so the arena never holds abandoned growth. */
#include "flint/json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_CHUNK (64 * 1024)

typedef struct arena_chunk_s {
  struct arena_chunk_s *next;
  size_t used, cap;
  max_align_t data[];
} arena_chunk_t;

struct flint_json_doc_s {
  arena_chunk_t *chunks;
  flint_json_t *root;
};

typedef struct parser_s {
  const char *p, *start, *end;
  flint_json_doc_t *doc;
  char *err;
  size_t errlen;
  bool failed;
  /* scratch stack for array items / object members under construction */
  void **stack;
  size_t sp, scap;
} parser_t;

static void *
arena_alloc (flint_json_doc_t *doc, size_t n)
{
  arena_chunk_t *c = doc->chunks;
  n = (n + 15) & ~(size_t) 15;
  if (c == NULL || c->cap - c->used < n)
    {
      size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
      c = malloc (sizeof *c + cap);
      if (c == NULL)
        return NULL;
      c->cap = cap;
      c->used = 0;
      c->next = doc->chunks;
      doc->chunks = c;
    }
  void *r = (char *) c->data + c->used;
  c->used += n;
  return r;
}

static void fail (parser_t *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
fail (parser_t *ps, const char *fmt, ...)
{
  int line = 1, col = 1;
  char what[200];
  va_list ap;

  if (ps->failed)
    return;
  ps->failed = true;
  for (const char *q = ps->start; q < ps->p && q < ps->end; q++)
    {
      if (*q == '\n')
        line++, col = 1;
      else
        col++;
    }
  va_start (ap, fmt);
  vsnprintf (what, sizeof what, fmt, ap);
  va_end (ap);
  if (ps->err && ps->errlen)
    snprintf (ps->err, ps->errlen, "line %d, column %d: %s", line, col, what);
}

static void
skip_ws (parser_t *ps)
{
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    ps->p++;
}

static bool
push (parser_t *ps, void *v)
{
  if (ps->sp == ps->scap)
    {
      size_t ncap = ps->scap ? ps->scap * 2 : 64;
      void **ns = realloc (ps->stack, ncap * sizeof *ns);
      if (ns == NULL)
        {
          fail (ps, "out of memory");
          return false;
        }
      ps->stack = ns;
      ps->scap = ncap;
    }
  ps->stack[ps->sp++] = v;
  return true;
}

static flint_json_t *
new_node (parser_t *ps, flint_json_type_t t)
{
  flint_json_t *n = arena_alloc (ps->doc, sizeof *n);
  if (n == NULL)
    {
      fail (ps, "out of memory");
      return NULL;
    }
  memset (n, 0, sizeof *n);
  n->type = t;
  return n;
}

static int
hex4 (const char *p, const char *end, unsigned *out)
{
  unsigned v = 0;
  if (end - p < 4)
    return -1;
  for (int i = 0; i < 4; i++)
    {
      char c = p[i];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= (unsigned) (c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= (unsigned) (c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= (unsigned) (c - 'A' + 10);
      else
        return -1;
    }
  *out = v;
  return 0;
}

static size_t
put_utf8 (char *o, unsigned cp)
{
  if (cp < 0x80)
    {
      o[0] = (char) cp;
      return 1;
    }
  if (cp < 0x800)
    {
      o[0] = (char) (0xc0 | (cp >> 6));
      o[1] = (char) (0x80 | (cp & 0x3f));
      return 2;
    }
  if (cp < 0x10000)
    {
      o[0] = (char) (0xe0 | (cp >> 12));
      o[1] = (char) (0x80 | ((cp >> 6) & 0x3f));
      o[2] = (char) (0x80 | (cp & 0x3f));
      return 3;
    }
  o[0] = (char) (0xf0 | (cp >> 18));
  o[1] = (char) (0x80 | ((cp >> 12) & 0x3f));
  o[2] = (char) (0x80 | ((cp >> 6) & 0x3f));
  o[3] = (char) (0x80 | (cp & 0x3f));
  return 4;
}

/* Parses a string literal at ps->p (which points at the opening quote). The decoded form is
 * never longer than the literal, so one arena allocation of the literal's size suffices. */
static const char *
parse_string (parser_t *ps, size_t *len_out)
{
  const char *q = ps->p + 1;
  const char *close = q;
  char *out, *o;

  /* find the closing quote to size the allocation */
  while (close < ps->end && *close != '"')
    {
      if (*close == '\\')
        close++;
      close++;
    }
  if (close >= ps->end)
    {
      fail (ps, "unterminated string");
      return NULL;
    }
  out = arena_alloc (ps->doc, (size_t) (close - q) + 1);
  if (out == NULL)
    {
      fail (ps, "out of memory");
      return NULL;
    }
  o = out;
  while (q < close)
    {
      unsigned char c = (unsigned char) *q;
      if (c < 0x20)
        {
          ps->p = q;
          fail (ps, "control character in string");
          return NULL;
        }
      if (c != '\\')
        {
          *o++ = (char) c;
          q++;
          continue;
        }
      q++;
      switch (*q)
        {
        case '"': *o++ = '"'; q++; break;
        case '\\': *o++ = '\\'; q++; break;
        case '/': *o++ = '/'; q++; break;
        case 'b': *o++ = '\b'; q++; break;
        case 'f': *o++ = '\f'; q++; break;
        case 'n': *o++ = '\n'; q++; break;
        case 'r': *o++ = '\r'; q++; break;
        case 't': *o++ = '\t'; q++; break;
        case 'u':
          {
            unsigned cp, lo;
            if (hex4 (q + 1, close, &cp) < 0)
              {
                ps->p = q;
                fail (ps, "bad \\u escape");
                return NULL;
              }
            q += 5;
            if (cp >= 0xd800 && cp <= 0xdbff)
              {
                if (close - q < 6 || q[0] != '\\' || q[1] != 'u' || hex4 (q + 2, close, &lo) < 0
                    || lo < 0xdc00 || lo > 0xdfff)
                  {
                    ps->p = q;
                    fail (ps, "unpaired surrogate in \\u escape");
                    return NULL;
                  }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                q += 6;
              }
            else if (cp >= 0xdc00 && cp <= 0xdfff)
              {
                ps->p = q;
                fail (ps, "unpaired surrogate in \\u escape");
                return NULL;
              }
            o += put_utf8 (o, cp);
            break;
          }
        default:
          ps->p = q;
          fail (ps, "bad escape sequence");
          return NULL;
        }
    }
  *o = '\0';
  *len_out = (size_t) (o - out);
  ps->p = close + 1;
  return out;
}

static flint_json_t *parse_value (parser_t *ps, int depth);

static flint_json_t *
parse_number (parser_t *ps)
{
  const char *s = ps->p, *q = ps->p;
  bool integer = true;
  char tmp[64];
  flint_json_t *n;

  if (q < ps->end && *q == '-')
    q++;
  if (q >= ps->end || !(*q >= '0' && *q <= '9'))
    {
      fail (ps, "bad number");
      return NULL;
    }
  if (*q == '0')
    q++;
  else
    while (q < ps->end && *q >= '0' && *q <= '9')
      q++;
  if (q < ps->end && *q == '.')
    {
      integer = false;
      q++;
      if (q >= ps->end || !(*q >= '0' && *q <= '9'))
        {
          ps->p = q;
          fail (ps, "bad number: digit expected after '.'");
          return NULL;
        }
      while (q < ps->end && *q >= '0' && *q <= '9')
        q++;
    }
  if (q < ps->end && (*q == 'e' || *q == 'E'))
    {
      integer = false;
      q++;
      if (q < ps->end && (*q == '+' || *q == '-'))
        q++;
      if (q >= ps->end || !(*q >= '0' && *q <= '9'))
        {
          ps->p = q;
          fail (ps, "bad number: digit expected in exponent");
          return NULL;
        }
      while (q < ps->end && *q >= '0' && *q <= '9')
        q++;
    }
  n = new_node (ps, FLINT_JSON_NUMBER);
  if (n == NULL)
    return NULL;
  size_t len = (size_t) (q - s);
  if (len < sizeof tmp)
    {
      memcpy (tmp, s, len);
      tmp[len] = '\0';
      n->num = strtod (tmp, NULL);
      if (integer)
        {
          errno = 0;
          long long v = strtoll (tmp, NULL, 10);
          if (errno == 0)
            {
              n->is_int = true;
              n->i64 = v;
            }
        }
    }
  else
    {
      /* absurdly long literal: parse through a heap copy */
      char *h = malloc (len + 1);
      if (h == NULL)
        {
          fail (ps, "out of memory");
          return NULL;
        }
      memcpy (h, s, len);
      h[len] = '\0';
      n->num = strtod (h, NULL);
      free (h);
    }
  if (!isfinite (n->num))
    {
      /* 1e999 would become infinity, which no consumer expects (and converting it to an
       * integer is undefined): RFC 8259 lets a parser limit the range */
      fail (ps, "number out of range");
      return NULL;
    }
  ps->p = q;
  return n;
}

static flint_json_t *
parse_container (parser_t *ps, int depth, bool object)
{
  size_t base = ps->sp;
  flint_json_t *n = new_node (ps, object ? FLINT_JSON_OBJECT : FLINT_JSON_ARRAY);
  char close = object ? '}' : ']';
  size_t count = 0;

  if (n == NULL)
    return NULL;
  ps->p++;
  skip_ws (ps);
  if (ps->p < ps->end && *ps->p == close)
    {
      ps->p++;
      return n;
    }
  for (;;)
    {
      skip_ws (ps);
      if (object)
        {
          size_t klen;
          const char *key;
          if (ps->p >= ps->end || *ps->p != '"')
            {
              fail (ps, "object key (a string) expected");
              return NULL;
            }
          key = parse_string (ps, &klen);
          if (key == NULL)
            return NULL;
          skip_ws (ps);
          if (ps->p >= ps->end || *ps->p != ':')
            {
              fail (ps, "':' expected after object key");
              return NULL;
            }
          ps->p++;
          if (!push (ps, (void *) key) || !push (ps, (void *) (uintptr_t) klen))
            return NULL;
        }
      flint_json_t *v = parse_value (ps, depth + 1);
      if (v == NULL || !push (ps, v))
        return NULL;
      count++;
      skip_ws (ps);
      if (ps->p < ps->end && *ps->p == ',')
        {
          ps->p++;
          continue;
        }
      if (ps->p < ps->end && *ps->p == close)
        {
          ps->p++;
          break;
        }
      fail (ps, object ? "',' or '}' expected" : "',' or ']' expected");
      return NULL;
    }
  n->len = count;
  n->items = arena_alloc (ps->doc, count * sizeof *n->items);
  if (object)
    {
      n->keys = arena_alloc (ps->doc, count * sizeof *n->keys);
      n->key_lens = arena_alloc (ps->doc, count * sizeof *n->key_lens);
    }
  if (n->items == NULL || (object && (n->keys == NULL || n->key_lens == NULL)))
    {
      fail (ps, "out of memory");
      return NULL;
    }
  size_t stride = object ? 3 : 1;
  for (size_t i = 0; i < count; i++)
    {
      void **e = ps->stack + base + i * stride;
      if (object)
        {
          n->keys[i] = e[0];
          n->key_lens[i] = (size_t) (uintptr_t) e[1];
          n->items[i] = e[2];
        }
      else
        n->items[i] = e[0];
    }
  ps->sp = base;
  return n;
}

static bool
match_literal (parser_t *ps, const char *lit)
{
  size_t n = strlen (lit);
  if ((size_t) (ps->end - ps->p) < n || memcmp (ps->p, lit, n) != 0)
    return false;
  ps->p += n;
  return true;
}

static flint_json_t *
parse_value (parser_t *ps, int depth)
{
  flint_json_t *n;

  if (depth > FLINT_JSON_MAX_DEPTH)
    {
      fail (ps, "nesting deeper than %d", FLINT_JSON_MAX_DEPTH);
      return NULL;
    }
  skip_ws (ps);
  if (ps->p >= ps->end)
    {
      fail (ps, "unexpected end of input");
      return NULL;
    }
  switch (*ps->p)
    {
    case '{':
      return parse_container (ps, depth, true);
    case '[':
      return parse_container (ps, depth, false);
    case '"':
      n = new_node (ps, FLINT_JSON_STRING);
      if (n == NULL)
        return NULL;
      n->str = parse_string (ps, &n->len);
      return n->str ? n : NULL;
    case 't':
      if (!match_literal (ps, "true"))
        break;
      n = new_node (ps, FLINT_JSON_BOOL);
      if (n)
        n->b = true;
      return n;
    case 'f':
      if (!match_literal (ps, "false"))
        break;
      return new_node (ps, FLINT_JSON_BOOL);
    case 'n':
      if (!match_literal (ps, "null"))
        break;
      return new_node (ps, FLINT_JSON_NULL);
    default:
      if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
        return parse_number (ps);
      break;
    }
  fail (ps, "unexpected character '%c'", *ps->p >= 0x20 && *ps->p < 0x7f ? *ps->p : '?');
  return NULL;
}

int
flint_json_parse (const char *text, size_t len, flint_json_doc_t **doc_out, char *errbuf, size_t errlen)
{
  parser_t ps = { .p = text, .start = text, .end = text + len, .err = errbuf, .errlen = errlen };
  flint_json_doc_t *doc = calloc (1, sizeof *doc);

  if (doc == NULL)
    {
      if (errbuf && errlen)
        snprintf (errbuf, errlen, "out of memory");
      return -1;
    }
  ps.doc = doc;
  doc->root = parse_value (&ps, 0);
  if (doc->root)
    {
      skip_ws (&ps);
      if (ps.p != ps.end)
        fail (&ps, "trailing characters after the document");
    }
  free (ps.stack);
  if (ps.failed || doc->root == NULL)
    {
      flint_json_doc_free (doc);
      return -1;
    }
  *doc_out = doc;
  return 0;
}

const flint_json_t *
flint_json_root (const flint_json_doc_t *doc)
{
  return doc->root;
}

void
flint_json_doc_free (flint_json_doc_t *doc)
{
  if (doc == NULL)
    return;
  for (arena_chunk_t *c = doc->chunks, *next; c; c = next)
    {
      next = c->next;
      free (c);
    }
  free (doc);
}

const flint_json_t *
flint_json_get (const flint_json_t *obj, const char *key)
{
  if (obj == NULL || obj->type != FLINT_JSON_OBJECT)
    return NULL;
  size_t klen = strlen (key);
  for (size_t i = obj->len; i-- > 0;)
    if (obj->key_lens[i] == klen && memcmp (obj->keys[i], key, klen) == 0)
      return obj->items[i];
  return NULL;
}

bool
flint_json_get_string (const flint_json_t *obj, const char *key, const char **s_out, size_t *len_out)
{
  const flint_json_t *v = flint_json_get (obj, key);
  if (v == NULL || v->type != FLINT_JSON_STRING)
    return false;
  *s_out = v->str;
  if (len_out)
    *len_out = v->len;
  return true;
}

bool
flint_json_get_number (const flint_json_t *obj, const char *key, double *out)
{
  const flint_json_t *v = flint_json_get (obj, key);
  if (v == NULL || v->type != FLINT_JSON_NUMBER)
    return false;
  *out = v->num;
  return true;
}

bool
flint_json_get_int (const flint_json_t *obj, const char *key, int64_t *out)
{
  const flint_json_t *v = flint_json_get (obj, key);
  if (v == NULL || v->type != FLINT_JSON_NUMBER || !v->is_int)
    return false;
  *out = v->i64;
  return true;
}

bool
flint_json_get_bool (const flint_json_t *obj, const char *key, bool *out)
{
  const flint_json_t *v = flint_json_get (obj, key);
  if (v == NULL || v->type != FLINT_JSON_BOOL)
    return false;
  *out = v->b;
  return true;
}
