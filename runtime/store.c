/* Weight store and bundle directories. See store.h. */
#include "store.h"
#include "flint/cleanup.h"
#include "flint/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

static int
copy_file (int in, int out, uint64_t size)
{
  uint64_t left = size;
  while (left > 0)
    {
      ssize_t n = copy_file_range (in, NULL, out, NULL, left > (1u << 30) ? (1u << 30) : left, 0);
      if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL))
        n = sendfile (out, in, NULL, left > (1u << 30) ? (1u << 30) : left);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return n < 0 ? -errno : -EIO;
      left -= (uint64_t) n;
    }
  return 0;
}

/* Ingests `src` (a regular file inside the bundle) into the object store and hard-links it as
 * `dst`. */
static int
ingest (const flint_daemon_config_t *cfg, const char *src, const char *dst, const char *what, uint64_t *bytes,
        flint_error_t *err)
{
  char sha[FLINT_SHA256_HEX_LEN];
  char obj[PATH_MAX], tmp[PATH_MAX];
  _cleanup_close_ int in = -1;
  struct stat st;
  uint64_t size;
  int r;

  in = open (src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (in < 0)
    return flint_error_set_errno (err, FLINT_EPRECONDITION, errno, "weights `%s`: open `%s` in the bundle", what, src);
  if (fstat (in, &st) < 0 || !S_ISREG (st.st_mode))
    return flint_error_set (err, FLINT_EPRECONDITION, "weights `%s`: `%s` is not a regular file", what, src);
  r = flint_sha256_file (src, sha, &size);
  if (r < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, r, "weights `%s`: read", what);
  snprintf (obj, sizeof obj, "%s/weights/objects/%s", cfg->run_dir, sha);
  if (access (obj, F_OK) < 0)
    {
      _cleanup_close_ int out = -1;
      snprintf (tmp, sizeof tmp, "%s/weights/objects/.tmp-%s-%d", cfg->run_dir, sha, (int) getpid ());
      out = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0444);
      if (out < 0)
        return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "weight store: create `%s`", tmp);
      r = copy_file (in, out, size);
      if (r < 0)
        {
          unlink (tmp);
          return flint_error_set_errno (err, FLINT_EINTERNAL, r,
                                        "weight store: copy `%s` (is the weight store tmpfs large enough?)", what);
        }
      if (rename (tmp, obj) < 0)
        {
          int e = errno;
          unlink (tmp);
          return flint_error_set_errno (err, FLINT_EINTERNAL, e, "weight store: rename");
        }
    }
  unlink (dst);
  if (link (obj, dst) < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "weight store: link `%s`", dst);
  *bytes += size;
  return 0;
}

static bool
has_suffix (const char *s, const char *sfx)
{
  size_t a = strlen (s), b = strlen (sfx);
  return a >= b && strcmp (s + a - b, sfx) == 0;
}

int
flint__store_link_weights (const flint_daemon_config_t *cfg, const char *endpoint, uint64_t version,
                           const flint_manifest_t *m, const char *bundle_dir, char **weights_dir_out,
                           uint64_t *bytes_out, flint_error_t *err)
{
  char dir[PATH_MAX], src[PATH_MAX], dst[PATH_MAX];
  uint64_t bytes = 0;
  bool any = m->n_weights > 0 || m->kind == FLINT_KIND_LLM;
  int r;

  *weights_dir_out = NULL;
  if (bytes_out)
    *bytes_out = 0;
  if (!any)
    return 0;
  snprintf (dir, sizeof dir, "%s/weights/objects", cfg->run_dir);
  r = flint_mkdir_p (dir, 0700);
  snprintf (dir, sizeof dir, "%s/weights/versions/%s-%llu", cfg->run_dir, endpoint, (unsigned long long) version);
  if (r == 0)
    {
      flint_rm_rf (dir);
      r = flint_mkdir_p (dir, 0755);
    }
  if (r < 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, r, "weight store: create `%s`", dir);

  for (size_t i = 0; i < m->n_weights; i++)
    {
      snprintf (src, sizeof src, "%s/%s", bundle_dir, m->weights[i].value);
      snprintf (dst, sizeof dst, "%s/%s", dir, m->weights[i].key);
      if (ingest (cfg, src, dst, m->weights[i].key, &bytes, err) < 0)
        goto fail;
    }
  if (m->kind == FLINT_KIND_LLM)
    {
      /* A model's safetensors (and its draft's) go to the store under their file names. */
      const char *models[2] = { m->model, m->draft_model };
      for (int k = 0; k < 2; k++)
        {
          DIR *dd;
          struct dirent *de;
          if (models[k] == NULL)
            continue;
          snprintf (src, sizeof src, "%s/%s", bundle_dir, models[k]);
          dd = opendir (src);
          if (dd == NULL)
            {
              flint_error_set_errno (err, FLINT_EPRECONDITION, errno, "model directory `%s` in the bundle",
                                     models[k]);
              goto fail;
            }
          while ((de = readdir (dd)) != NULL)
            {
              char s2[PATH_MAX + 300];
              if (!has_suffix (de->d_name, ".safetensors"))
                continue;
              snprintf (s2, sizeof s2, "%s/%s/%s", bundle_dir, models[k], de->d_name);
              snprintf (dst, sizeof dst, "%s/%s%s", dir, k == 1 ? "draft-" : "", de->d_name);
              if (ingest (cfg, s2, dst, de->d_name, &bytes, err) < 0)
                {
                  closedir (dd);
                  goto fail;
                }
            }
          closedir (dd);
        }
    }
  *weights_dir_out = strdup (dir);
  if (bytes_out)
    *bytes_out = bytes;
  return 0;
fail:
  flint__store_unlink_weights (dir, cfg);
  return -1;
}

void
flint__store_unlink_weights (const char *weights_dir, const flint_daemon_config_t *cfg)
{
  char objdir[PATH_MAX];
  DIR *d;
  struct dirent *de;

  if (weights_dir == NULL)
    return;
  flint_rm_rf (weights_dir);
  snprintf (objdir, sizeof objdir, "%s/weights/objects", cfg->run_dir);
  d = opendir (objdir);
  if (d == NULL)
    return;
  while ((de = readdir (d)) != NULL)
    {
      struct stat st;
      if (de->d_name[0] == '.')
        continue;
      if (fstatat (dirfd (d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG (st.st_mode) && st.st_nlink == 1)
        unlinkat (dirfd (d), de->d_name, 0);
    }
  closedir (d);
}

void
flint__store_remove_bundle (const flint_daemon_config_t *cfg, const char *sha256)
{
  char path[PATH_MAX];
  if (!flint_is_sha256_hex (sha256))
    return;
  snprintf (path, sizeof path, "%s/bundles/%s", cfg->state_dir, sha256);
  flint_rm_rf (path);
}
