/* libFuzzer target: runtime/bundle.c's extraction of the tar archives clients upload with
 * Deploy (untrusted: path traversal, links, special files, sizes).
 *
 * Each input is extracted into a fresh directory inside a private scratch directory. Checked on
 * every input: a failure leaves nothing behind (not even the destination) and names the bundle;
 * a success leaves nothing outside the destination, only regular files (no setuid/setgid bits,
 * within the size limit), directories and symlinks, and every symlink, followed physically
 * through the links that precede it, stays inside the bundle (openat2 RESOLVE_BENEATH), so that
 * flintd itself can never be steered outside by a bundle path. */
#include "bundle.h"
#include "flint/cleanup.h"
#include "flint/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define LIMIT_BYTES (1u << 20)
#define LIMIT_ENTRIES 256

static char scratch[256];

static void
cleanup_scratch (void)
{
  if (scratch[0])
    flint_rm_rf (scratch);
}

static void
fail (const char *what, const char *path)
{
  fprintf (stderr, "fuzz-bundle: %s: `%s`\n", what, path);
  abort ();
}

/* Walks `rel` (relative to rootfd, "" for the root) checking every entry. */
static void
walk (int rootfd, const char *rel, uint64_t *bytes)
{
  _cleanup_close_ int fd = -1;
  DIR *d;
  struct dirent *de;

  fd = rel[0] ? openat (rootfd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
              : fcntl (rootfd, F_DUPFD_CLOEXEC, 3);
  if (fd < 0)
    fail ("cannot open an extracted directory", rel);
  d = fdopendir (fd);
  if (d == NULL)
    fail ("fdopendir", rel);
  fd = -1; /* the DIR owns it */
  while ((de = readdir (d)) != NULL)
    {
      char path[4096];
      struct stat st;

      if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
        continue;
      snprintf (path, sizeof path, "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
      if (fstatat (rootfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
        fail ("lstat", path);
      if (S_ISDIR (st.st_mode))
        walk (rootfd, path, bytes);
      else if (S_ISREG (st.st_mode))
        {
          if (st.st_mode & (S_ISUID | S_ISGID))
            fail ("setuid/setgid file extracted", path);
          *bytes += (uint64_t) st.st_size;
        }
      else if (S_ISLNK (st.st_mode))
        {
          struct open_how how = { .flags = O_PATH | O_CLOEXEC,
                                  .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
          long r = syscall (SYS_openat2, rootfd, path, &how, sizeof how);
          if (r >= 0)
            close ((int) r);
          else if (errno == EXDEV)
            fail ("a symlink resolves outside the bundle", path);
        }
      else
        fail ("special file extracted", path);
    }
  closedir (d);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static unsigned seq;
  const flint_bundle_limits_t limits = { .max_total_bytes = LIMIT_BYTES, .max_entries = LIMIT_ENTRIES };
  flint_error_t err = FLINT_ERROR_INIT;
  char dest[300];
  uint8_t *copy;
  DIR *d;
  struct dirent *de;
  int r;

  if (scratch[0] == '\0')
    {
      snprintf (scratch, sizeof scratch, "/tmp/fuzz-bundle-XXXXXX");
      if (mkdtemp (scratch) == NULL)
        abort ();
      atexit (cleanup_scratch);
    }
  /* exact-size copy: ASan sees any read past the archive */
  copy = malloc (size ? size : 1);
  if (copy == NULL)
    return 0;
  memcpy (copy, data, size);
  snprintf (dest, sizeof dest, "%s/b%u", scratch, seq++);
  r = flint_bundle_extract_mem (copy, size, dest, &limits, &err);
  free (copy);

  if (r == 0)
    {
      _cleanup_close_ int rootfd = open (dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      uint64_t bytes = 0;
      if (rootfd < 0)
        fail ("the destination is missing after a success", dest);
      walk (rootfd, "", &bytes);
      if (bytes > LIMIT_BYTES)
        fail ("the size limit was exceeded", dest);
    }
  else if (err.code != FLINT_EINVAL || strncmp (err.msg, "bundle: ", 8) != 0)
    {
      fprintf (stderr, "fuzz-bundle: unexpected failure: code %d: %s\n", (int) err.code, err.msg);
      abort ();
    }

  /* nothing but the destination (when it succeeded) may exist in the scratch directory */
  d = opendir (scratch);
  if (d == NULL)
    abort ();
  while ((de = readdir (d)) != NULL)
    {
      if (de->d_name[0] == '.' && (de->d_name[1] == '\0' || (de->d_name[1] == '.' && de->d_name[2] == '\0')))
        continue;
      if (r != 0 || strcmp (de->d_name, dest + strlen (scratch) + 1) != 0)
        fail ("something was left beside the destination", de->d_name);
    }
  closedir (d);
  flint_rm_rf (dest);
  return 0;
}
