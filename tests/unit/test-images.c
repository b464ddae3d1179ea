/* Unit tests of snapshotter/images.c: listing with digests, verification (exact set, sizes,
 * digests), the verification cache noticing any change, and flint.meta. */
#include "tap.h"
#include "images.h"
#include "flint/util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void
put (const char *dir, const char *name, const char *text)
{
  char p[512];
  snprintf (p, sizeof p, "%s/%s", dir, name);
  flint_write_file_atomic (p, text, strlen (text), 0644);
}

static void
later (void)
{
  /* mtimes must move on for the cache to see a change made in the same tick */
  struct timespec ts = { 0, 2000000 };
  nanosleep (&ts, NULL);
}

int
main (void)
{
  char tmpl[] = "/tmp/flint-test-images-XXXXXX";
  char *dir = mkdtemp (tmpl);
  flint_image_file_t *files = NULL;
  flint_error_t err = FLINT_ERROR_INIT;
  uint64_t total = 0;
  char val[64];
  int n;

  if (dir == NULL)
    return 77;
  put (dir, "pages-1.img", "pages pages pages");
  put (dir, "core-1.img", "core");
  put (dir, "restore.log", "logs are not part of an image");
  {
    const char *k[] = { "criu", "worker" }, *v[] = { "4.1.1", "abc123" };
    ok (flint_image_meta_write (dir, k, v, 2, &err) == 0, "meta written");
  }
  n = flint_image_list (dir, &files, &total, &err);
  ok (n == 3, "lists the .img files and flint.meta, not logs (%d)", n);
  ok (n == 3 && strcmp (files[0].path, "core-1.img") == 0 && strcmp (files[2].path, "pages-1.img") == 0,
      "sorted by name");
  ok (n == 3 && files[2].size == 17 && strlen (files[2].sha256) == 64, "size and digest");
  ok (flint_image_meta_get (dir, "worker", val, sizeof val, &err) == 0 && strcmp (val, "abc123") == 0, "meta read");
  ok (flint_image_meta_get (dir, "kernel", val, sizeof val, &err) < 0 && err.code == FLINT_EDATALOSS,
      "a missing meta key is an error");

  ok (flint_image_verify (dir, files, (size_t) n, &err) == 0, "an intact image verifies");
  ok (flint_image_verify_cached (dir, files, (size_t) n, &err) == 0, "and through the cache");
  ok (flint_image_verify_cached (dir, files, (size_t) n, &err) == 0, "cached");

  later ();
  put (dir, "pages-1.img", "pages pages pagez");
  memset (&err, 0, sizeof err);
  ok (flint_image_verify_cached (dir, files, (size_t) n, &err) < 0 && err.code == FLINT_EDATALOSS,
      "same size, changed content: refused after a cached success");
  contains (err.msg, "`pages-1.img` does not match its recorded digest", "names the file");
  put (dir, "pages-1.img", "pages pages pages");
  ok (flint_image_verify_cached (dir, files, (size_t) n, &err) == 0, "restored content verifies again");

  later ();
  put (dir, "tty-info.img", "planted");
  ok (flint_image_verify_cached (dir, files, (size_t) n, &err) < 0, "an added image file is refused");
  contains (err.msg, "holds 4 files, the registry recorded 3", "says so");
  {
    char p[512];
    snprintf (p, sizeof p, "%s/tty-info.img", dir);
    unlink (p);
    snprintf (p, sizeof p, "%s/core-1.img", dir);
    unlink (p);
  }
  ok (flint_image_verify_cached (dir, files, (size_t) n, &err) < 0, "a missing file is refused");
  free (files);
  flint_rm_rf (dir);
  return tap_done ();
}
