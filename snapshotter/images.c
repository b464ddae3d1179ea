/* Image directory helpers. See images.h. */
#include "images.h"
#include "flint/cleanup.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int
cmp_files (const void *a, const void *b)
{
  return strcmp (((const flint_image_file_t *) a)->path, ((const flint_image_file_t *) b)->path);
}

int
flint_image_list (const char *dir, flint_image_file_t **files_out, uint64_t *total_out, flint_error_t *err)
{
  DIR *d = opendir (dir);
  struct dirent *de;
  flint_image_file_t *files = NULL;
  size_t n = 0, cap = 0;
  uint64_t total = 0;

  if (d == NULL)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "image `%s`", dir);
  while ((de = readdir (d)) != NULL)
    {
      size_t l = strlen (de->d_name);
      char path[PATH_MAX];
      int r;

      if (de->d_type != DT_REG || l >= sizeof files[0].path)
        continue;
      if (!(l > 4 && strcmp (de->d_name + l - 4, ".img") == 0) && strcmp (de->d_name, FLINT_IMAGE_META) != 0)
        continue;
      if (n == cap)
        {
          cap = cap ? cap * 2 : 32;
          files = realloc (files, cap * sizeof *files);
          if (files == NULL)
            abort ();
        }
      snprintf (files[n].path, sizeof files[n].path, "%s", de->d_name);
      snprintf (path, sizeof path, "%s/%s", dir, de->d_name);
      r = flint_sha256_file (path, files[n].sha256, &files[n].size);
      if (r < 0)
        {
          closedir (d);
          free (files);
          return flint_error_set_errno (err, FLINT_EINTERNAL, r, "image `%s`: read %s", dir, de->d_name);
        }
      total += files[n].size;
      n++;
    }
  closedir (d);
  qsort (files, n, sizeof *files, cmp_files);
  *files_out = files;
  if (total_out)
    *total_out = total;
  return (int) n;
}

int
flint_image_verify (const char *dir, const flint_image_file_t *files, size_t n, flint_error_t *err)
{
  flint_image_file_t *have = NULL;
  int m = flint_image_list (dir, &have, NULL, err);

  if (m < 0)
    return flint_error_set (err, FLINT_EDATALOSS, "%s", err->msg);
  if ((size_t) m != n)
    {
      free (have);
      return flint_error_set (err, FLINT_EDATALOSS, "image `%s` holds %d files, the registry recorded %zu", dir, m, n);
    }
  for (size_t i = 0; i < n; i++)
    {
      /* both lists are sorted by path */
      if (strcmp (have[i].path, files[i].path) != 0 || have[i].size != files[i].size
          || strcmp (have[i].sha256, files[i].sha256) != 0)
        {
          int r = flint_error_set (err, FLINT_EDATALOSS, "image file `%s` does not match its recorded digest",
                                   files[i].path);
          free (have);
          return r;
        }
    }
  free (have);
  return 0;
}

/* One verified directory: its own identity (a file added or removed changes its mtime) and its
 * files' identities at verification time. */
typedef struct verified_s {
  char dir[PATH_MAX];
  size_t n;
  ino_t dir_ino;
  struct timespec dir_mtime;
  struct { ino_t ino; off_t size; struct timespec mtime; } id[128];
} verified_t;

static verified_t cache[16];
static unsigned cache_next;

static bool
identity (const char *dir, const flint_image_file_t *files, size_t n, verified_t *v)
{
  struct stat dst;

  if (n > 128 || stat (dir, &dst) < 0)
    return false;
  memset (v, 0, sizeof *v);
  snprintf (v->dir, sizeof v->dir, "%s", dir);
  v->n = n;
  v->dir_ino = dst.st_ino;
  v->dir_mtime = dst.st_mtim;
  for (size_t i = 0; i < n; i++)
    {
      char path[PATH_MAX];
      struct stat st;
      snprintf (path, sizeof path, "%s/%s", dir, files[i].path);
      if (stat (path, &st) < 0)
        return false;
      v->id[i].ino = st.st_ino;
      v->id[i].size = st.st_size;
      v->id[i].mtime = st.st_mtim;
    }
  return true;
}

int
flint_image_verify_cached (const char *dir, const flint_image_file_t *files, size_t n, flint_error_t *err)
{
  verified_t now;

  if (identity (dir, files, n, &now))
    for (size_t k = 0; k < FLINT_ARRAY_SIZE (cache); k++)
      if (strcmp (cache[k].dir, dir) == 0 && cache[k].n == n && cache[k].dir_ino == now.dir_ino
          && cache[k].dir_mtime.tv_sec == now.dir_mtime.tv_sec && cache[k].dir_mtime.tv_nsec == now.dir_mtime.tv_nsec
          && memcmp (cache[k].id, now.id, n * sizeof now.id[0]) == 0)
        return 0;
  if (flint_image_verify (dir, files, n, err) < 0)
    {
      for (size_t k = 0; k < FLINT_ARRAY_SIZE (cache); k++)
        if (strcmp (cache[k].dir, dir) == 0)
          cache[k].dir[0] = '\0';
      return -1;
    }
  if (identity (dir, files, n, &now))
    cache[cache_next++ % FLINT_ARRAY_SIZE (cache)] = now;
  return 0;
}

int
flint_image_meta_write (const char *dir, const char *const *keys, const char *const *values, size_t n,
                        flint_error_t *err)
{
  char path[PATH_MAX], buf[4096];
  size_t len = 0;
  int r;

  for (size_t i = 0; i < n && len < sizeof buf; i++)
    len += (size_t) snprintf (buf + len, sizeof buf - len, "%s=%s\n", keys[i], values[i]);
  if (len >= sizeof buf)
    return flint_error_set (err, FLINT_EINTERNAL, "image meta too large");
  snprintf (path, sizeof path, "%s/%s", dir, FLINT_IMAGE_META);
  r = flint_write_file_atomic (path, buf, len, 0600);
  return r < 0 ? flint_error_set_errno (err, FLINT_EINTERNAL, r, "write %s", path) : 0;
}

int
flint_image_meta_get (const char *dir, const char *key, char *out, size_t len, flint_error_t *err)
{
  char path[PATH_MAX];
  _cleanup_free_ char *text = NULL;
  size_t klen = strlen (key), tlen;
  int r;

  snprintf (path, sizeof path, "%s/%s", dir, FLINT_IMAGE_META);
  r = flint_read_file (path, 1 << 16, &text, &tlen);
  if (r < 0)
    return flint_error_set_errno (err, FLINT_EDATALOSS, r, "image `%s`: %s", dir, FLINT_IMAGE_META);
  for (char *line = text; line && *line;)
    {
      char *nl = strchr (line, '\n');
      if (nl)
        *nl = '\0';
      if (strncmp (line, key, klen) == 0 && line[klen] == '=')
        {
          snprintf (out, len, "%s", line + klen + 1);
          return 0;
        }
      line = nl ? nl + 1 : NULL;
    }
  return flint_error_set (err, FLINT_EDATALOSS, "image `%s`: no `%s` in %s", dir, key, FLINT_IMAGE_META);
}
