/* UTF-8 decoding and character classes for the tokenizer. See unicode.h. */
#include "unicode.h"

size_t
flint_utf8_decode (const uint8_t *s, size_t len, uint32_t *cp_out)
{
  uint32_t c = s[0], cp;
  size_t n;

  if (c < 0x80)
    {
      *cp_out = c;
      return 1;
    }
  if (c >= 0xC2 && c <= 0xDF)
    n = 2, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF)
    n = 3, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4)
    n = 4, cp = c & 0x07;
  else
    goto invalid;
  if (n > len)
    goto invalid;
  for (size_t i = 1; i < n; i++)
    {
      if ((s[i] & 0xC0) != 0x80)
        goto invalid;
      cp = cp << 6 | (s[i] & 0x3F);
    }
  /* overlong forms, surrogates and code points past U+10FFFF are not characters */
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
    goto invalid;
  *cp_out = cp;
  return n;
invalid:
  *cp_out = FLINT_UTF8_INVALID | c;
  return 1;
}

size_t
flint_utf8_complete_prefix (const uint8_t *s, size_t len)
{
  /* look back at most 3 bytes for the start of a sequence that runs past the end */
  for (size_t back = 1; back <= 3 && back <= len; back++)
    {
      uint8_t c = s[len - back];
      size_t need;
      if ((c & 0xC0) == 0x80)
        continue; /* continuation byte: keep looking for the lead */
      need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
      return need > back ? len - back : len;
    }
  return len;
}

bool
flint_unicode_is_space (uint32_t cp)
{
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680
         || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F
         || cp == 0x3000;
}

static bool
in_ranges (const flint_unicode_range_t *r, size_t n, uint32_t cp)
{
  size_t lo = 0, hi = n;
  if (cp & FLINT_UTF8_INVALID)
    return false;
  while (lo < hi)
    {
      size_t mid = lo + (hi - lo) / 2;
      if (cp < r[mid].lo)
        hi = mid;
      else if (cp > r[mid].hi)
        lo = mid + 1;
      else
        return true;
    }
  return false;
}

bool
flint_unicode_is_letter (uint32_t cp)
{
  if (cp < 0x80)
    return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in_ranges (flint__unicode_letters, flint__unicode_letters_len, cp);
}

bool
flint_unicode_is_number (uint32_t cp)
{
  if (cp < 0x80)
    return cp >= '0' && cp <= '9';
  return in_ranges (flint__unicode_numbers, flint__unicode_numbers_len, cp);
}
