/* The pre-tokenizer scanners. See pretok.h for the patterns; each function below follows its
 * pattern's alternatives in order, as a backtracking regex engine would try them. */
#include "pretok.h"
#include "unicode.h"

#include <string.h>

static const char re_gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char re_llama3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
                                "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char re_qwen2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
                               "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

int
flint__pretok_from_regex (const char *regex)
{
  if (strcmp (regex, re_gpt2) == 0)
    return FLINT_PRETOK_GPT2;
  if (strcmp (regex, re_llama3) == 0)
    return FLINT_PRETOK_LLAMA3;
  if (strcmp (regex, re_qwen2) == 0)
    return FLINT_PRETOK_QWEN2;
  return -1;
}

const char *
flint__pretok_regex (flint_pretok_t kind)
{
  switch (kind)
    {
    case FLINT_PRETOK_GPT2: return re_gpt2;
    case FLINT_PRETOK_LLAMA3: return re_llama3;
    case FLINT_PRETOK_QWEN2: return re_qwen2;
    default: return "";
    }
}

typedef struct scan_s {
  const uint8_t *s;
  size_t len;
} scan_t;

/* Code point at byte i (i < len), its length in *n. */
static inline uint32_t
at (const scan_t *sc, size_t i, size_t *n)
{
  uint32_t cp;
  *n = flint_utf8_decode (sc->s + i, sc->len - i, &cp);
  return cp;
}

enum { C_SPACE, C_LETTER, C_NUMBER, C_OTHER };

static inline int
cls (uint32_t cp)
{
  if (flint_unicode_is_space (cp))
    return C_SPACE;
  if (flint_unicode_is_letter (cp))
    return C_LETTER;
  if (flint_unicode_is_number (cp))
    return C_NUMBER;
  return C_OTHER;
}

/* End of the run of class `c` starting at i. */
static size_t
run (const scan_t *sc, size_t i, int c)
{
  while (i < sc->len)
    {
      size_t n;
      if (cls (at (sc, i, &n)) != c)
        break;
      i += n;
    }
  return i;
}

/* \s+(?!\S) | \s+ at i (a whitespace character): the whitespace run, less its last character
 * when a non-space follows and more than one character would remain. */
static size_t
ws_tail (const scan_t *sc, size_t i)
{
  size_t j = i, last = i;
  while (j < sc->len)
    {
      size_t n;
      if (!flint_unicode_is_space (at (sc, j, &n)))
        break;
      last = j;
      j += n;
    }
  if (j == sc->len || last == i)
    return j;
  return last;
}

/* 's 't 're 've 'm 'll 'd at i (s[i] == '\''), case-sensitive or not. Returns the end or 0. */
static size_t
contraction (const scan_t *sc, size_t i, int fold)
{
  static const char *const tails[] = { "s", "t", "re", "ve", "m", "ll", "d" };
  for (size_t t = 0; t < sizeof tails / sizeof tails[0]; t++)
    {
      size_t j = i + 1;
      const char *p = tails[t];
      for (; *p; p++)
        {
          size_t n;
          uint32_t cp;
          if (j >= sc->len)
            break;
          cp = at (sc, j, &n);
          if (cp == (uint32_t) *p || (fold && (cp == (uint32_t) (*p - 32) || (*p == 's' && cp == 0x17F))))
            j += n;
          else
            break;
        }
      if (*p == '\0')
        return j;
    }
  return 0;
}

static size_t
next_gpt2 (const scan_t *sc, size_t i)
{
  size_t n, k = i, j;
  uint32_t c;
  int cl;

  if (sc->s[i] == '\'' && (j = contraction (sc, i, 0)) != 0)
    return j;
  /* ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': a space joins the run that follows it */
  if (sc->s[i] == ' ' && i + 1 < sc->len && !flint_unicode_is_space (at (sc, i + 1, &n)))
    k = i + 1;
  c = at (sc, k, &n);
  cl = cls (c);
  if (cl != C_SPACE)
    return run (sc, k, cl);
  return ws_tail (sc, i);
}

static size_t
next_llama (const scan_t *sc, size_t i, size_t max_digits)
{
  size_t n, n1, j;
  uint32_t c = at (sc, i, &n);
  int cl = cls (c);

  if (c == '\'' && (j = contraction (sc, i, 1)) != 0)
    return j;
  /* [^\r\n\p{L}\p{N}]?\p{L}+ */
  if (cl == C_LETTER)
    return run (sc, i, C_LETTER);
  if (c != '\r' && c != '\n' && cl != C_NUMBER && i + n < sc->len && cls (at (sc, i + n, &n1)) == C_LETTER)
    return run (sc, i + n, C_LETTER);
  /* \p{N}{1,max} */
  if (cl == C_NUMBER)
    {
      size_t digits = 1;
      j = i + n;
      while (j < sc->len && digits < max_digits && cls (at (sc, j, &n1)) == C_NUMBER)
        j += n1, digits++;
      return j;
    }
  /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
  {
    size_t k = i;
    if (c == ' ' && i + 1 < sc->len && cls (at (sc, i + 1, &n1)) == C_OTHER)
      k = i + 1;
    if (cls (at (sc, k, &n1)) == C_OTHER)
      {
        j = run (sc, k, C_OTHER);
        while (j < sc->len && (sc->s[j] == '\r' || sc->s[j] == '\n'))
          j++;
        return j;
      }
  }
  /* \s*[\r\n]+ : through the last CR or LF of the whitespace run */
  {
    size_t end = 0;
    j = i;
    while (j < sc->len)
      {
        uint32_t w = at (sc, j, &n1);
        if (!flint_unicode_is_space (w))
          break;
        j += n1;
        if (w == '\r' || w == '\n')
          end = j;
      }
    if (end)
      return end;
  }
  return ws_tail (sc, i);
}

size_t
flint__pretok_next (flint_pretok_t kind, const uint8_t *s, size_t len, size_t i)
{
  scan_t sc = { s, len };
  switch (kind)
    {
    case FLINT_PRETOK_GPT2: return next_gpt2 (&sc, i);
    case FLINT_PRETOK_LLAMA3: return next_llama (&sc, i, 3);
    case FLINT_PRETOK_QWEN2: return next_llama (&sc, i, 1);
    default: return len;
    }
}
