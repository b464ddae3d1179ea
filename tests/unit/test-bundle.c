/* Unit tests of runtime/bundle.c: deterministic packing, round trip, and extraction refusing
 * every hostile archive shape. */
#include "tap.h"
#include "bundle.h"
#include "flint/util.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp[256];

typedef struct entry_s {
  const char *path;
  int type;           /* AE_IFREG, AE_IFDIR, AE_IFLNK, AE_IFCHR, 'h' for a hard link */
  const char *data;   /* file content, or link target */
} entry_t;

/* Builds a tar archive in memory from `entries`. */
static size_t
make_tar (const entry_t *entries, size_t n, char *buf, size_t cap)
{
  struct archive *a = archive_write_new ();
  struct archive_entry *e = archive_entry_new ();
  size_t used = 0;

  archive_write_set_format_pax_restricted (a);
  archive_write_open_memory (a, buf, cap, &used);
  for (size_t i = 0; i < n; i++)
    {
      archive_entry_clear (e);
      archive_entry_set_pathname (e, entries[i].path);
      archive_entry_set_perm (e, 0644);
      if (entries[i].type == 'h')
        {
          archive_entry_set_filetype (e, AE_IFREG);
          archive_entry_set_hardlink (e, entries[i].data);
        }
      else
        archive_entry_set_filetype (e, (unsigned) entries[i].type);
      if (entries[i].type == AE_IFLNK)
        archive_entry_set_symlink (e, entries[i].data);
      if (entries[i].type == AE_IFREG)
        archive_entry_set_size (e, (la_int64_t) strlen (entries[i].data));
      archive_write_header (a, e);
      if (entries[i].type == AE_IFREG)
        archive_write_data (a, entries[i].data, strlen (entries[i].data));
    }
  archive_write_close (a);
  archive_write_free (a);
  archive_entry_free (e);
  return used;
}

static int
try_extract (const entry_t *entries, size_t n, const char *name, flint_error_t *err)
{
  static char buf[1 << 16];
  char dest[512];
  size_t len = make_tar (entries, n, buf, sizeof buf);
  flint_bundle_limits_t lim = { .max_total_bytes = 1 << 20, .max_entries = 100 };

  snprintf (dest, sizeof dest, "%s/%s", tmp, name);
  flint_error_clear (err);
  return flint_bundle_extract_mem (buf, len, dest, &lim, err);
}

static void
write_file (const char *path, const char *data, mode_t mode)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  if (fd >= 0)
    {
      (void) !write (fd, data, strlen (data));
      close (fd);
    }
}

int
main (void)
{
  flint_error_t err = FLINT_ERROR_INIT;
  char path[512], sha1[FLINT_SHA256_HEX_LEN], sha2[FLINT_SHA256_HEX_LEN];
  uint64_t size1, size2;
  struct stat st;
  int fd;

  snprintf (tmp, sizeof tmp, "/tmp/flint-test-bundle-XXXXXX");
  if (mkdtemp (tmp) == NULL)
    return 99;

  /* a source directory */
  snprintf (path, sizeof path, "%s/src", tmp);
  mkdir (path, 0755);
  snprintf (path, sizeof path, "%s/src/sub", tmp);
  mkdir (path, 0755);
  snprintf (path, sizeof path, "%s/src/flint.yaml", tmp);
  write_file (path, "name: x\n", 0644);
  snprintf (path, sizeof path, "%s/src/run.sh", tmp);
  write_file (path, "#!/bin/sh\n", 0755);
  snprintf (path, sizeof path, "%s/src/sub/data", tmp);
  write_file (path, "payload", 0644);
  snprintf (path, sizeof path, "%s/src/sub/link", tmp);
  symlink ("data", path);
  snprintf (path, sizeof path, "%s/src/ignored.o", tmp);
  write_file (path, "junk", 0644);
  snprintf (path, sizeof path, "%s/src/.flintignore", tmp);
  write_file (path, "# comment\n*.o\n", 0644);

  snprintf (path, sizeof path, "%s/src", tmp);
  fd = open (tmp, O_TMPFILE | O_RDWR, 0600);
  ok (flint_bundle_pack (path, fd, sha1, &size1, &err) == 0, "pack a directory: %s", err.msg);
  close (fd);
  fd = open (tmp, O_TMPFILE | O_RDWR, 0600);
  ok (flint_bundle_pack (path, fd, sha2, &size2, &err) == 0 && strcmp (sha1, sha2) == 0 && size1 == size2,
      "packing is deterministic (same digest twice)");

  /* round trip */
  {
    char *data = malloc (size2);
    char dest[512];
    flint_bundle_limits_t lim = { .max_total_bytes = 1 << 20, .max_entries = 100 };
    pread (fd, data, size2, 0);
    snprintf (dest, sizeof dest, "%s/out", tmp);
    ok (flint_bundle_extract_mem (data, size2, dest, &lim, &err) == 0, "extract: %s", err.msg);
    snprintf (path, sizeof path, "%s/out/run.sh", tmp);
    ok (stat (path, &st) == 0 && (st.st_mode & 0777) == 0755, "executable bit kept");
    snprintf (path, sizeof path, "%s/out/sub/link", tmp);
    ok (lstat (path, &st) == 0 && S_ISLNK (st.st_mode), "inner symlink kept");
    snprintf (path, sizeof path, "%s/out/ignored.o", tmp);
    ok (access (path, F_OK) < 0, ".flintignore honoured");
    free (data);
  }
  close (fd);

  {
    entry_t e[] = { { "/etc/evil", AE_IFREG, "x" } };
    ok (try_extract (e, 1, "abs", &err) < 0 && err.code == FLINT_EINVAL, "absolute path refused: %s", err.msg);
  }
  {
    entry_t e[] = { { "a/../../evil", AE_IFREG, "x" } };
    ok (try_extract (e, 1, "dotdot", &err) < 0, "'..' refused: %s", err.msg);
  }
  {
    entry_t e[] = { { "l", AE_IFLNK, "/etc" } };
    ok (try_extract (e, 1, "symabs", &err) < 0, "symlink to an absolute path refused: %s", err.msg);
  }
  {
    entry_t e[] = { { "l", AE_IFLNK, "../.." } };
    ok (try_extract (e, 1, "symrel", &err) < 0, "symlink leaving the bundle refused: %s", err.msg);
  }
  {
    /* each link is inside on its own; `a/l2` goes through `a/l` and leaves (found by fuzz-bundle) */
    entry_t e[] = { { "a", AE_IFDIR, "" }, { "a/l", AE_IFLNK, ".." }, { "a/l2", AE_IFLNK, "l/.." } };
    ok (try_extract (e, 3, "chain", &err) < 0 && strstr (err.msg, "`a/l2` leads outside the bundle"),
        "a chain of links leaving the bundle refused: %s", err.msg);
  }
  {
    entry_t e[] = { { "a", AE_IFDIR, "" }, { "a/l", AE_IFLNK, ".." }, { "a/l2", AE_IFLNK, "l/a" },
                    { "gone", AE_IFLNK, "nowhere" } };
    ok (try_extract (e, 4, "chain-ok", &err) == 0, "links through links that stay inside, and dangling ones, kept: %s",
        err.msg);
  }
  {
    entry_t e[] = { { "d", AE_IFLNK, "." }, { "d/x", AE_IFREG, "x" } };
    ok (try_extract (e, 2, "through", &err) < 0, "writing through a planted symlink refused: %s", err.msg);
  }
  {
    entry_t e[] = { { "a", AE_IFREG, "x" }, { "b", 'h', "a" } };
    ok (try_extract (e, 2, "hard", &err) < 0, "hard link refused: %s", err.msg);
  }
  {
    entry_t e[] = { { "dev", AE_IFCHR, NULL } };
    ok (try_extract (e, 1, "dev", &err) < 0, "device node refused: %s", err.msg);
  }
  {
    entry_t e[] = { { "a", AE_IFREG, "x" }, { "a", AE_IFREG, "y" } };
    ok (try_extract (e, 2, "dup", &err) < 0, "duplicate file refused: %s", err.msg);
    snprintf (path, sizeof path, "%s/dup", tmp);
    ok (access (path, F_OK) < 0, "a failed extraction leaves nothing behind");
  }
  {
    static char big[2 << 20];
    entry_t e[] = { { "big", AE_IFREG, big } };
    memset (big, 'a', sizeof big - 1);
    ok (try_extract (e, 1, "big", &err) < 0, "size limit enforced");
  }
  ok (flint_bundle_extract_mem ("garbage garbage", 15, "/tmp/flint-test-bundle-never", &(flint_bundle_limits_t) { 1 << 20, 10 },
                                &err)
          < 0,
      "garbage refused: %s", err.msg);
  flint_rm_rf (tmp);
  return tap_done ();
}
