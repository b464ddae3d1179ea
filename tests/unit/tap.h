/* Minimal TAP output for flint's C unit tests: `ok N - name` lines, a plan at the end, exit
 * status 1 when anything failed (77 = skipped, as meson expects). */
#ifndef FLINT_TAP_H
#define FLINT_TAP_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_n, tap_failed;

#define ok(cond, ...)                                                                    \
  do                                                                                     \
    {                                                                                    \
      int _okc = (cond);                                                                   \
      tap_n++;                                                                           \
      if (!_okc)                                                                           \
        tap_failed++;                                                                    \
      printf ("%sok %d - ", _okc ? "" : "not ", tap_n);                                    \
      printf (__VA_ARGS__);                                                              \
      printf ("\n");                                                                     \
      if (!_okc)                                                                           \
        printf ("#   failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);                  \
    }                                                                                    \
  while (0)

#define is_str(got, want, ...)                                                           \
  do                                                                                     \
    {                                                                                    \
      const char *_g = (got), *_w = (want);                                              \
      int _mc = _g && _w && strcmp (_g, _w) == 0;                                         \
      ok (_mc, __VA_ARGS__);                                                             \
      if (!_mc)                                                                          \
        printf ("#   got:  `%s`\n#   want: `%s`\n", _g ? _g : "(null)", _w ? _w : "(null)"); \
    }                                                                                    \
  while (0)

#define contains(got, needle, ...)                                                       \
  do                                                                                     \
    {                                                                                    \
      const char *_g = (got), *_w = (needle);                                            \
      int _mc = _g && strstr (_g, _w) != NULL;                                            \
      ok (_mc, __VA_ARGS__);                                                             \
      if (!_mc)                                                                          \
        printf ("#   `%s`\n#   does not contain `%s`\n", _g ? _g : "(null)", _w);          \
    }                                                                                    \
  while (0)

static inline int
tap_done (void)
{
  printf ("1..%d\n", tap_n);
  if (tap_failed)
    printf ("# %d of %d failed\n", tap_failed, tap_n);
  return tap_failed ? 1 : 0;
}

#endif
