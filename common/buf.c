/* flint_buf_t: append-only string building with JSON escaping. */
#include "flint/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
flint_buf_reserve (flint_buf_t *b, size_t extra)
{
  size_t need = b->len + extra + 1;
  if (need <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap *= 2;
  char *nd = realloc (b->data, cap);
  if (nd == NULL)
    abort ();
  b->data = nd;
  b->cap = cap;
}

void
flint_buf_append (flint_buf_t *b, const void *data, size_t len)
{
  flint_buf_reserve (b, len);
  if (len)
    memcpy (b->data + b->len, data, len);
  b->len += len;
  b->data[b->len] = '\0';
}

void
flint_buf_puts (flint_buf_t *b, const char *s)
{
  flint_buf_append (b, s, strlen (s));
}

void
flint_buf_putc (flint_buf_t *b, char c)
{
  flint_buf_append (b, &c, 1);
}

void
flint_buf_vprintf (flint_buf_t *b, const char *fmt, va_list ap)
{
  va_list ap2;
  int n;

  va_copy (ap2, ap);
  flint_buf_reserve (b, 64);
  n = vsnprintf (b->data + b->len, b->cap - b->len, fmt, ap);
  if (n < 0)
    abort ();
  if ((size_t) n >= b->cap - b->len)
    {
      flint_buf_reserve (b, (size_t) n);
      vsnprintf (b->data + b->len, b->cap - b->len, fmt, ap2);
    }
  va_end (ap2);
  b->len += (size_t) n;
}

void
flint_buf_printf (flint_buf_t *b, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  flint_buf_vprintf (b, fmt, ap);
  va_end (ap);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid. */
static size_t
utf8_seq_len (const unsigned char *s, size_t avail)
{
  unsigned c = s[0];
  size_t n;
  unsigned cp;

  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    n = 2, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef)
    n = 3, cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4)
    n = 4, cp = c & 0x07;
  else
    return 0;
  if (avail < n)
    return 0;
  for (size_t i = 1; i < n; i++)
    {
      if ((s[i] & 0xc0) != 0x80)
        return 0;
      cp = (cp << 6) | (s[i] & 0x3f);
    }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))
      || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

void
flint_buf_json_string (flint_buf_t *b, const char *s, size_t len)
{
  const unsigned char *p = (const unsigned char *) s;
  size_t i = 0;

  flint_buf_reserve (b, len + 2);
  flint_buf_putc (b, '"');
  while (i < len)
    {
      unsigned char c = p[i];
      if (c == '"' || c == '\\')
        {
          char esc[2] = { '\\', (char) c };
          flint_buf_append (b, esc, 2);
          i++;
        }
      else if (c < 0x20)
        {
          switch (c)
            {
            case '\n': flint_buf_append (b, "\\n", 2); break;
            case '\r': flint_buf_append (b, "\\r", 2); break;
            case '\t': flint_buf_append (b, "\\t", 2); break;
            case '\b': flint_buf_append (b, "\\b", 2); break;
            case '\f': flint_buf_append (b, "\\f", 2); break;
            default: flint_buf_printf (b, "\\u%04x", c); break;
            }
          i++;
        }
      else
        {
          size_t n = utf8_seq_len (p + i, len - i);
          if (n == 0)
            {
              flint_buf_append (b, "\xef\xbf\xbd", 3);
              i++;
            }
          else
            {
              flint_buf_append (b, p + i, n);
              i += n;
            }
        }
    }
  flint_buf_putc (b, '"');
}

void
flint_buf_reset (flint_buf_t *b)
{
  b->len = 0;
  if (b->data)
    b->data[0] = '\0';
}

void
flint_buf_free (flint_buf_t *b)
{
  free (b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

char *
flint_buf_steal (flint_buf_t *b, size_t *len_out)
{
  char *d = b->data;
  if (d == NULL)
    {
      d = calloc (1, 1);
      if (d == NULL)
        abort ();
    }
  if (len_out)
    *len_out = b->len;
  b->data = NULL;
  b->len = b->cap = 0;
  return d;
}
