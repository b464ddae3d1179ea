/* Bundle packing (CLI side) and safe extraction (flintd side) with libarchive.
 *
 * Extraction does not use archive_write_disk: every entry is validated here and written with
 * openat(O_NOFOLLOW | O_EXCL) relative to the destination, creating parent directories as
 * needed, so a crafted archive cannot write through a symlink it planted earlier. */
#include "bundle.h"
#include "manifest.h"
#include "flint/cleanup.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fnmatch.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- packing ------------------------------------------------------------------------- */

typedef struct pack_ctx_s {
  int fd;
  flint_sha256_t *sha;
  uint64_t size;
} pack_ctx_t;

static la_ssize_t
pack_write_cb (struct archive *a, void *ud, const void *buf, size_t len)
{
  pack_ctx_t *pc = ud;
  (void) a;
  if (flint_write_all (pc->fd, buf, len) < 0)
    return -1;
  flint_sha256_update (pc->sha, buf, len);
  pc->size += len;
  return (la_ssize_t) len;
}

typedef struct path_list_s {
  char **items;
  size_t n, cap;
} path_list_t;

static void
path_list_add (path_list_t *l, const char *p)
{
  if (l->n == l->cap)
    {
      l->cap = l->cap ? l->cap * 2 : 64;
      l->items = realloc (l->items, l->cap * sizeof *l->items);
      if (l->items == NULL)
        abort ();
    }
  l->items[l->n] = strdup (p);
  if (l->items[l->n] == NULL)
    abort ();
  l->n++;
}

static int
cmp_str (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

/* .flintignore: one glob pattern per line (fnmatch), matched against the bundle-relative path
 * and against the base name; '#' starts a comment. A matching directory is skipped whole. */
static void
load_ignore (const char *root, path_list_t *pats)
{
  char path[PATH_MAX], line[1024];
  FILE *f;

  snprintf (path, sizeof path, "%s/.flintignore", root);
  f = fopen (path, "re");
  if (f == NULL)
    return;
  while (fgets (line, sizeof line, f))
    {
      size_t n = strcspn (line, "\r\n");
      line[n] = '\0';
      while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '/'))
        line[--n] = '\0';
      if (n == 0 || line[0] == '#')
        continue;
      path_list_add (pats, line);
    }
  fclose (f);
}

static bool
ignored (const path_list_t *pats, const char *rel, const char *base)
{
  for (size_t i = 0; i < pats->n; i++)
    if (fnmatch (pats->items[i], rel, FNM_PATHNAME) == 0 || fnmatch (pats->items[i], base, 0) == 0)
      return true;
  return false;
}

/* Collects bundle-relative paths under root/rel, depth first. */
static int
collect (const char *root, const char *rel, const path_list_t *ign, path_list_t *out, flint_error_t *err)
{
  char path[PATH_MAX];
  DIR *d;
  struct dirent *de;

  snprintf (path, sizeof path, "%s%s%s", root, *rel ? "/" : "", rel);
  d = opendir (path);
  if (d == NULL)
    return flint_error_set_errno (err, FLINT_EINVAL, errno, "bundle: open directory `%s`", path);
  while ((de = readdir (d)) != NULL)
    {
      char child[PATH_MAX];
      struct stat st;

      if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
        continue;
      if (strcmp (de->d_name, ".git") == 0 && *rel == '\0')
        continue;
      if ((size_t) snprintf (child, sizeof child, "%s%s%s", rel, *rel ? "/" : "", de->d_name) >= sizeof child)
        {
          closedir (d);
          return flint_error_set (err, FLINT_EINVAL, "bundle: path too long under `%s`", path);
        }
      if (ignored (ign, child, de->d_name))
        continue;
      snprintf (path, sizeof path, "%s/%s", root, child);
      if (lstat (path, &st) < 0)
        {
          closedir (d);
          return flint_error_set_errno (err, FLINT_EINVAL, errno, "bundle: stat `%s`", path);
        }
      if (S_ISDIR (st.st_mode))
        {
          path_list_add (out, child);
          if (collect (root, child, ign, out, err) < 0)
            {
              closedir (d);
              return -1;
            }
        }
      else if (S_ISREG (st.st_mode) || S_ISLNK (st.st_mode))
        path_list_add (out, child);
      else
        {
          closedir (d);
          return flint_error_set (err, FLINT_EINVAL,
                                  "bundle: `%s` is not a regular file, directory or symlink", path);
        }
    }
  closedir (d);
  return 0;
}

/* A symlink target is acceptable when, resolved lexically from the link's directory, it stays
 * inside the bundle. */
static bool
link_stays_inside (const char *link_rel, const char *target)
{
  int depth = 0;
  const char *p;

  if (target[0] == '/' || target[0] == '\0')
    return false;
  for (p = link_rel; *p; p++)
    if (*p == '/')
      depth++;
  p = target;
  while (*p)
    {
      const char *slash = strchr (p, '/');
      size_t len = slash ? (size_t) (slash - p) : strlen (p);
      if (len == 2 && p[0] == '.' && p[1] == '.')
        {
          if (--depth < 0)
            return false;
        }
      else if (len > 0 && !(len == 1 && p[0] == '.'))
        depth++;
      p += len;
      if (*p == '/')
        p++;
    }
  return true;
}

int
flint_bundle_pack (const char *dir, int out_fd, char sha256_out[FLINT_SHA256_HEX_LEN],
                   uint64_t *size_out, flint_error_t *err)
{
  path_list_t paths = { 0 }, ign = { 0 };
  struct archive *a = NULL;
  struct archive_entry *e = NULL;
  pack_ctx_t pc = { .fd = out_fd };
  _cleanup_free_ char *buf = NULL;
  int ret = -1;

  load_ignore (dir, &ign);
  if (collect (dir, "", &ign, &paths, err) < 0)
    goto out;
  qsort (paths.items, paths.n, sizeof *paths.items, cmp_str);
  pc.sha = flint_sha256_new ();
  buf = malloc (1 << 20);
  a = archive_write_new ();
  e = archive_entry_new ();
  if (pc.sha == NULL || buf == NULL || a == NULL || e == NULL)
    {
      flint_error_set (err, FLINT_EINTERNAL, "out of memory");
      goto out;
    }
  archive_write_set_format_pax_restricted (a);
  archive_write_set_bytes_in_last_block (a, 1);
  if (archive_write_open2 (a, &pc, NULL, pack_write_cb, NULL, NULL) != ARCHIVE_OK)
    {
      flint_error_set (err, FLINT_EINTERNAL, "bundle: %s", archive_error_string (a));
      goto out;
    }
  for (size_t i = 0; i < paths.n; i++)
    {
      char path[PATH_MAX];
      struct stat st;
      _cleanup_close_ int fd = -1;

      snprintf (path, sizeof path, "%s/%s", dir, paths.items[i]);
      if (lstat (path, &st) < 0)
        {
          flint_error_set_errno (err, FLINT_EINVAL, errno, "bundle: stat `%s`", path);
          goto out;
        }
      archive_entry_clear (e);
      archive_entry_set_pathname (e, paths.items[i]);
      if (S_ISDIR (st.st_mode))
        {
          archive_entry_set_filetype (e, AE_IFDIR);
          archive_entry_set_perm (e, 0755);
        }
      else if (S_ISLNK (st.st_mode))
        {
          char target[PATH_MAX];
          ssize_t n = readlink (path, target, sizeof target - 1);
          if (n < 0)
            {
              flint_error_set_errno (err, FLINT_EINVAL, errno, "bundle: readlink `%s`", path);
              goto out;
            }
          target[n] = '\0';
          if (!link_stays_inside (paths.items[i], target))
            {
              flint_error_set (err, FLINT_EINVAL,
                               "bundle: symlink `%s` points outside the bundle (`%s`); copy the file in instead",
                               paths.items[i], target);
              goto out;
            }
          archive_entry_set_filetype (e, AE_IFLNK);
          archive_entry_set_perm (e, 0777);
          archive_entry_set_symlink (e, target);
        }
      else
        {
          fd = open (path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
          if (fd < 0)
            {
              flint_error_set_errno (err, FLINT_EINVAL, errno, "bundle: open `%s`", path);
              goto out;
            }
          archive_entry_set_filetype (e, AE_IFREG);
          archive_entry_set_perm (e, (st.st_mode & 0100) ? 0755 : 0644);
          archive_entry_set_size (e, st.st_size);
        }
      if (archive_write_header (a, e) != ARCHIVE_OK)
        {
          flint_error_set (err, FLINT_EINTERNAL, "bundle: `%s`: %s", paths.items[i], archive_error_string (a));
          goto out;
        }
      if (fd >= 0)
        {
          int64_t left = st.st_size;
          while (left > 0)
            {
              ssize_t n = read (fd, buf, 1 << 20);
              if (n < 0 && errno == EINTR)
                continue;
              if (n <= 0)
                {
                  flint_error_set (err, FLINT_EINVAL, "bundle: `%s` changed while being packed", path);
                  goto out;
                }
              if (n > left)
                n = (ssize_t) left;
              if (archive_write_data (a, buf, (size_t) n) != n)
                {
                  flint_error_set (err, FLINT_EINTERNAL, "bundle: write: %s", archive_error_string (a));
                  goto out;
                }
              left -= n;
            }
        }
    }
  if (archive_write_close (a) != ARCHIVE_OK)
    {
      flint_error_set (err, FLINT_EINTERNAL, "bundle: %s", archive_error_string (a));
      goto out;
    }
  flint_sha256_final (pc.sha, sha256_out);
  pc.sha = NULL;
  *size_out = pc.size;
  ret = 0;
out:
  if (pc.sha)
    {
      char scratch[FLINT_SHA256_HEX_LEN];
      flint_sha256_final (pc.sha, scratch);
    }
  if (e)
    archive_entry_free (e);
  if (a)
    archive_write_free (a);
  for (size_t i = 0; i < paths.n; i++)
    free (paths.items[i]);
  free (paths.items);
  for (size_t i = 0; i < ign.n; i++)
    free (ign.items[i]);
  free (ign.items);
  return ret;
}

/* ---- extraction ---------------------------------------------------------------------- */

/* Opens (creating as needed) the parent directory of `rel` under `rootfd`, never following
 * symlinks. Returns an fd and the last component in *leaf. */
static int
open_parent (int rootfd, char *rel, const char **leaf)
{
  int fd = dup (rootfd);
  char *p = rel;

  if (fd < 0)
    return -errno;
  for (;;)
    {
      char *slash = strchr (p, '/');
      int next;
      if (slash == NULL)
        break;
      *slash = '\0';
      if (mkdirat (fd, p, 0755) < 0 && errno != EEXIST)
        {
          int e = -errno;
          close (fd);
          return e;
        }
      next = openat (fd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      *slash = '/';
      close (fd);
      if (next < 0)
        return -errno; /* ELOOP/ENOTDIR: a symlink or file in the way */
      fd = next;
      p = slash + 1;
    }
  *leaf = p;
  return fd;
}

typedef struct link_list_s {
  char **items;
  size_t n;
} link_list_t;

static void
link_list_free (link_list_t *l)
{
  for (size_t i = 0; i < l->n; i++)
    free (l->items[i]);
  free (l->items);
}

static int
link_list_add (link_list_t *l, const char *rel)
{
  char **items = realloc (l->items, (l->n + 1) * sizeof *items);
  if (items == NULL)
    return -ENOMEM;
  l->items = items;
  if ((l->items[l->n] = strdup (rel)) == NULL)
    return -ENOMEM;
  l->n++;
  return 0;
}

/* Each symlink passed link_stays_inside() on its own, but links compose: with `a/l -> ..`,
 * `a/l2 -> l/..` reads as `a` lexically and is the bundle's parent physically. Once everything
 * is extracted, every link is resolved the way the kernel will (through the others) and must
 * stay beneath the bundle, so that nothing that later opens a bundle path on the host — flintd
 * linking weights, a reader of the model directory — can be steered outside. Dangling links
 * are harmless and kept. Without openat2 (Linux < 5.6) the rule falls back to refusing any
 * link with a `..` component. */
static int
check_links_beneath (int rootfd, const link_list_t *links, flint_error_t *err)
{
  for (size_t i = 0; i < links->n; i++)
    {
      const char *rel = links->items[i];
      struct open_how how = { .flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
      long fd = syscall (SYS_openat2, rootfd, rel, &how, sizeof how);

      if (fd >= 0)
        {
          close ((int) fd);
          continue;
        }
      if (errno == ENOENT)
        continue;
      if (errno == ENOSYS)
        {
          char target[PATH_MAX];
          ssize_t len = readlinkat (rootfd, rel, target, sizeof target - 1);
          if (len < 0)
            return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "bundle: readlink `%s`", rel);
          target[len] = '\0';
          if (strcmp (target, "..") == 0 || strncmp (target, "../", 3) == 0 || strstr (target, "/../")
              || (len >= 3 && strcmp (target + len - 3, "/..") == 0))
            return flint_error_set (err, FLINT_EINVAL,
                                    "bundle: symlink `%s` uses `..` (not allowed on kernels without openat2)", rel);
          continue;
        }
      if (errno == EXDEV)
        return flint_error_set (err, FLINT_EINVAL, "bundle: symlink `%s` leads outside the bundle through other links",
                                rel);
      if (errno == ELOOP)
        return flint_error_set (err, FLINT_EINVAL, "bundle: symlink `%s` is part of a loop of links", rel);
      return flint_error_set_errno (err, FLINT_EINVAL, errno, "bundle: symlink `%s`", rel);
    }
  return 0;
}

static int
extract_archive (struct archive *a, const char *dest, const flint_bundle_limits_t *limits, flint_error_t *err)
{
  struct archive_entry *e;
  _cleanup_close_ int rootfd = -1;
  _cleanup_free_ char *buf = NULL;
  __attribute__((cleanup (link_list_free))) link_list_t links = { NULL, 0 };
  uint64_t total = 0, entries = 0;
  int r;

  rootfd = open (dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  buf = malloc (1 << 20);
  if (rootfd < 0 || buf == NULL)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno ? errno : ENOMEM, "bundle: open `%s`", dest);

  while ((r = archive_read_next_header (a, &e)) == ARCHIVE_OK)
    {
      _cleanup_free_ char *rel = NULL;
      const char *name = archive_entry_pathname (e);
      const char *leaf = NULL;
      _cleanup_close_ int dirfd = -1;
      mode_t type = archive_entry_filetype (e);

      if (++entries > limits->max_entries)
        return flint_error_set (err, FLINT_EINVAL, "bundle: more than %llu entries",
                                (unsigned long long) limits->max_entries);
      if (name == NULL)
        return flint_error_set (err, FLINT_EINVAL, "bundle: an entry has no usable name");
      /* tar tools write "./x" and "dir/": normalise those two harmless forms only */
      while (name[0] == '.' && name[1] == '/')
        name += 2;
      rel = strdup (name);
      if (rel == NULL)
        return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
      size_t len = strlen (rel);
      while (len > 0 && rel[len - 1] == '/')
        rel[--len] = '\0';
      if (len == 0 || (len == 1 && rel[0] == '.'))
        continue;
      if (!flint_relpath_valid (rel))
        return flint_error_set (err, FLINT_EINVAL, "bundle: entry `%s` is not a relative path inside the bundle", name);
      if (archive_entry_hardlink (e) != NULL)
        return flint_error_set (err, FLINT_EINVAL, "bundle: entry `%s` is a hard link (not allowed)", name);

      dirfd = open_parent (rootfd, rel, &leaf);
      if (dirfd < 0)
        return flint_error_set_errno (err, FLINT_EINVAL, -dirfd, "bundle: entry `%s`: parent directory", name);

      if (type == AE_IFDIR)
        {
          if (mkdirat (dirfd, leaf, 0755) < 0 && errno != EEXIST)
            return flint_error_set_errno (err, FLINT_EINVAL, errno, "bundle: entry `%s`", name);
        }
      else if (type == AE_IFLNK)
        {
          const char *target = archive_entry_symlink (e);
          if (target == NULL || !link_stays_inside (rel, target))
            return flint_error_set (err, FLINT_EINVAL, "bundle: symlink `%s` points outside the bundle", name);
          if (symlinkat (target, dirfd, leaf) < 0)
            return flint_error_set_errno (err, FLINT_EINVAL, errno, "bundle: entry `%s`", name);
          if (link_list_add (&links, rel) < 0)
            return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
        }
      else if (type == AE_IFREG)
        {
          int64_t size = archive_entry_size (e);
          mode_t mode = (archive_entry_perm (e) & 0100) ? 0755 : 0644;
          _cleanup_close_ int fd = -1;
          la_ssize_t n;

          if (size < 0 || total + (uint64_t) size > limits->max_total_bytes)
            return flint_error_set (err, FLINT_EINVAL, "bundle: extracted size exceeds the limit of %llu bytes",
                                    (unsigned long long) limits->max_total_bytes);
          fd = openat (dirfd, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
          if (fd < 0)
            return flint_error_set_errno (err, FLINT_EINVAL, errno, "bundle: entry `%s`", name);
          while ((n = archive_read_data (a, buf, 1 << 20)) > 0)
            {
              total += (uint64_t) n;
              if (total > limits->max_total_bytes)
                return flint_error_set (err, FLINT_EINVAL, "bundle: extracted size exceeds the limit");
              if (flint_write_all (fd, buf, (size_t) n) < 0)
                return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "bundle: write `%s`", name);
            }
          if (n < 0)
            return flint_error_set (err, FLINT_EINVAL, "bundle: entry `%s`: %s", name, archive_error_string (a));
          fchmod (fd, mode); /* the umask must not change what the bundle asked for */
        }
      else
        return flint_error_set (err, FLINT_EINVAL,
                                "bundle: entry `%s` is not a regular file, directory or symlink", name);
    }
  if (r != ARCHIVE_EOF)
    return flint_error_set (err, FLINT_EINVAL, "bundle: not a valid tar archive: %s", archive_error_string (a));
  return check_links_beneath (rootfd, &links, err);
}

static struct archive *
reader_new (void)
{
  struct archive *a = archive_read_new ();
  if (a)
    {
      archive_read_support_format_tar (a);
      archive_read_support_filter_none (a);
    }
  return a;
}

int
flint_bundle_extract (const char *tar_path, const char *dest, const flint_bundle_limits_t *limits,
                      flint_error_t *err)
{
  struct archive *a = reader_new ();
  int r;

  if (a == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  if (mkdir (dest, 0755) < 0)
    {
      archive_read_free (a);
      return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "bundle: create `%s`", dest);
    }
  if (archive_read_open_filename (a, tar_path, 1 << 20) != ARCHIVE_OK)
    {
      r = flint_error_set (err, FLINT_EINVAL, "bundle: %s", archive_error_string (a));
      archive_read_free (a);
      flint_rm_rf (dest);
      return r;
    }
  r = extract_archive (a, dest, limits, err);
  archive_read_free (a);
  if (r < 0)
    flint_rm_rf (dest);
  return r;
}

int
flint_bundle_extract_mem (const void *data, size_t len, const char *dest,
                          const flint_bundle_limits_t *limits, flint_error_t *err)
{
  struct archive *a = reader_new ();
  int r;

  if (a == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  if (mkdir (dest, 0755) < 0)
    {
      archive_read_free (a);
      return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "bundle: create `%s`", dest);
    }
  if (archive_read_open_memory (a, data, len) != ARCHIVE_OK)
    {
      r = flint_error_set (err, FLINT_EINVAL, "bundle: %s", archive_error_string (a));
      archive_read_free (a);
      flint_rm_rf (dest);
      return r;
    }
  r = extract_archive (a, dest, limits, err);
  archive_read_free (a);
  if (r < 0)
    flint_rm_rf (dest);
  return r;
}
