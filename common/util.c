/* Implementation of the helpers in flint/util.h. */
#include "flint/util.h"
#include "flint/cleanup.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

uint64_t
flint_now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

int64_t
flint_wall_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
flint_write_all (int fd, const void *buf, size_t len)
{
  const char *p = buf;
  while (len > 0)
    {
      ssize_t n = write (fd, p, len);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return -errno;
        }
      p += n;
      len -= (size_t) n;
    }
  return 0;
}

ssize_t
flint_read_all (int fd, void *buf, size_t len)
{
  char *p = buf;
  size_t got = 0;
  while (got < len)
    {
      ssize_t n = read (fd, p + got, len - got);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          return -errno;
        }
      if (n == 0)
        break;
      got += (size_t) n;
    }
  return (ssize_t) got;
}

int
flint_set_cloexec (int fd, bool on)
{
  int flags = fcntl (fd, F_GETFD);
  if (flags < 0)
    return -errno;
  flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  return fcntl (fd, F_SETFD, flags) < 0 ? -errno : 0;
}

int
flint_set_nonblock (int fd, bool on)
{
  int flags = fcntl (fd, F_GETFL);
  if (flags < 0)
    return -errno;
  flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  return fcntl (fd, F_SETFL, flags) < 0 ? -errno : 0;
}

static int
int_cmp (const void *a, const void *b)
{
  return *(const int *) a - *(const int *) b;
}

void
flint_close_fds_except (int lowfd, const int *keep, size_t nkeep)
{
  int sorted[64];
  size_t n = nkeep < 64 ? nkeep : 64;
  int from = lowfd;

  if (n)
    memcpy (sorted, keep, n * sizeof (int));
  qsort (sorted, n, sizeof (int), int_cmp);
  for (size_t i = 0; i <= n; i++)
    {
      int upto = i < n ? sorted[i] - 1 : INT_MAX;
      if (i < n && sorted[i] < from)
        continue;
      if (upto >= from)
        {
          if (syscall (SYS_close_range, (unsigned) from, (unsigned) upto, 0) < 0)
            for (int fd = from; fd <= upto && fd < 65536; fd++)
              close (fd);
        }
      if (i < n)
        from = sorted[i] + 1;
    }
}

int
flint_mkdir_p (const char *path, mode_t mode)
{
  char buf[PATH_MAX];
  size_t len = strlen (path);

  if (len == 0 || len >= sizeof buf)
    return -EINVAL;
  memcpy (buf, path, len + 1);
  for (char *p = buf + 1; *p; p++)
    {
      if (*p != '/')
        continue;
      *p = '\0';
      if (mkdir (buf, mode) < 0 && errno != EEXIST)
        return -errno;
      *p = '/';
    }
  if (mkdir (buf, mode) < 0 && errno != EEXIST)
    return -errno;
  return 0;
}

static int
rm_rf_at (int parent_fd, const char *name, dev_t dev)
{
  struct stat st;

  if (fstatat (parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return errno == ENOENT ? 0 : -errno;
  if (S_ISDIR (st.st_mode))
    {
      int fd;
      DIR *d;
      struct dirent *de;
      int ret = 0;

      if (st.st_dev != dev)
        return -EXDEV; /* a mount point: never delete what is mounted there */
      fd = openat (parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0)
        return -errno;
      d = fdopendir (fd);
      if (d == NULL)
        {
          close (fd);
          return -errno;
        }
      while ((de = readdir (d)) != NULL)
        {
          if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
            continue;
          int r = rm_rf_at (dirfd (d), de->d_name, dev);
          if (r < 0 && ret == 0)
            ret = r;
        }
      closedir (d);
      if (ret < 0)
        return ret;
      return unlinkat (parent_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT ? -errno : 0;
    }
  return unlinkat (parent_fd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
}

int
flint_rm_rf (const char *path)
{
  struct stat st;
  if (lstat (path, &st) < 0)
    return errno == ENOENT ? 0 : -errno;
  return rm_rf_at (AT_FDCWD, path, st.st_dev);
}

int
flint_read_file (const char *path, size_t max, char **data_out, size_t *len_out)
{
  _cleanup_close_ int fd = open (path, O_RDONLY | O_CLOEXEC);
  _cleanup_free_ char *buf = NULL;
  struct stat st;
  ssize_t n;

  if (fd < 0)
    return -errno;
  if (fstat (fd, &st) < 0)
    return -errno;
  if ((size_t) st.st_size > max)
    return -EFBIG;
  buf = malloc ((size_t) st.st_size + 1);
  if (buf == NULL)
    return -ENOMEM;
  n = flint_read_all (fd, buf, (size_t) st.st_size);
  if (n < 0)
    return (int) n;
  buf[n] = '\0';
  if (len_out)
    *len_out = (size_t) n;
  *data_out = steal_pointer (&buf);
  return 0;
}

int
flint_write_file_atomic (const char *path, const void *data, size_t len, mode_t mode)
{
  char tmp[PATH_MAX];
  _cleanup_close_ int fd = -1;
  int r;

  if (snprintf (tmp, sizeof tmp, "%s.tmp.%d", path, (int) getpid ()) >= (int) sizeof tmp)
    return -ENAMETOOLONG;
  fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return -errno;
  r = flint_write_all (fd, data, len);
  if (r == 0 && fsync (fd) < 0)
    r = -errno;
  if (r == 0 && rename (tmp, path) < 0)
    r = -errno;
  if (r < 0)
    unlink (tmp);
  return r;
}

struct flint_sha256_s
{
  EVP_MD_CTX *ctx;
};

flint_sha256_t *
flint_sha256_new (void)
{
  flint_sha256_t *h = calloc (1, sizeof *h);
  if (h == NULL)
    return NULL;
  h->ctx = EVP_MD_CTX_new ();
  if (h->ctx == NULL || EVP_DigestInit_ex (h->ctx, EVP_sha256 (), NULL) != 1)
    {
      EVP_MD_CTX_free (h->ctx);
      free (h);
      return NULL;
    }
  return h;
}

void
flint_sha256_update (flint_sha256_t *h, const void *data, size_t len)
{
  EVP_DigestUpdate (h->ctx, data, len);
}

void
flint_sha256_final (flint_sha256_t *h, char hex_out[FLINT_SHA256_HEX_LEN])
{
  unsigned char md[32];
  unsigned int mdlen = 0;

  EVP_DigestFinal_ex (h->ctx, md, &mdlen);
  for (unsigned i = 0; i < 32; i++)
    snprintf (hex_out + 2 * i, 3, "%02x", md[i]);
  EVP_MD_CTX_free (h->ctx);
  free (h);
}

void
flint_sha256_buf (const void *data, size_t len, char hex_out[FLINT_SHA256_HEX_LEN])
{
  flint_sha256_t *h = flint_sha256_new ();
  if (h == NULL)
    abort ();
  flint_sha256_update (h, data, len);
  flint_sha256_final (h, hex_out);
}

int
flint_sha256_file (const char *path, char hex_out[FLINT_SHA256_HEX_LEN], uint64_t *size_out)
{
  _cleanup_close_ int fd = open (path, O_RDONLY | O_CLOEXEC);
  _cleanup_free_ char *buf = NULL;
  flint_sha256_t *h;
  uint64_t total = 0;

  if (fd < 0)
    return -errno;
  buf = malloc (1 << 20);
  h = flint_sha256_new ();
  if (buf == NULL || h == NULL)
    {
      if (h)
        flint_sha256_final (h, hex_out);
      return -ENOMEM;
    }
  for (;;)
    {
      ssize_t n = read (fd, buf, 1 << 20);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          int e = -errno;
          flint_sha256_final (h, hex_out);
          return e;
        }
      if (n == 0)
        break;
      flint_sha256_update (h, buf, (size_t) n);
      total += (uint64_t) n;
    }
  flint_sha256_final (h, hex_out);
  if (size_out)
    *size_out = total;
  return 0;
}

bool
flint_is_sha256_hex (const char *s)
{
  size_t i;
  for (i = 0; s[i]; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  return i == 64;
}

int
flint_parse_size (const char *s, uint64_t *bytes_out)
{
  char *end;
  double v;
  uint64_t mult = 1;

  if (s == NULL || *s == '\0' || *s == '-')
    return -EINVAL;
  errno = 0;
  v = strtod (s, &end);
  /* !(v >= 0) also refuses NaN, whose conversion to an integer is undefined */
  if (errno || end == s || !(v >= 0) || isinf (v))
    return -EINVAL;
  while (*end == ' ')
    end++;
  if (*end)
    {
      static const struct { const char *sfx; uint64_t mult; } units[] = {
        { "B", 1 },
        { "k", 1000 }, { "K", 1000 }, { "KB", 1000 }, { "kB", 1000 }, { "Ki", 1024 }, { "KiB", 1024 },
        { "M", 1000000 }, { "MB", 1000000 }, { "Mi", 1 << 20 }, { "MiB", 1 << 20 },
        { "G", 1000000000ull }, { "GB", 1000000000ull }, { "Gi", 1ull << 30 }, { "GiB", 1ull << 30 },
        { "T", 1000000000000ull }, { "Ti", 1ull << 40 }, { "TiB", 1ull << 40 },
      };
      size_t i;
      for (i = 0; i < FLINT_ARRAY_SIZE (units); i++)
        if (strcmp (end, units[i].sfx) == 0)
          break;
      if (i == FLINT_ARRAY_SIZE (units))
        return -EINVAL;
      mult = units[i].mult;
    }
  if (v * (double) mult > 1.8e19)
    return -EINVAL;
  *bytes_out = (uint64_t) (v * (double) mult);
  return 0;
}

int
flint_parse_duration_ms (const char *s, uint64_t *ms_out)
{
  char *end;
  double v;
  double mult = 1000; /* a bare number means seconds */

  if (s == NULL || *s == '\0' || *s == '-')
    return -EINVAL;
  errno = 0;
  v = strtod (s, &end);
  if (errno || end == s || !(v >= 0) || isinf (v))
    return -EINVAL;
  if (strcmp (end, "ms") == 0)
    mult = 1;
  else if (strcmp (end, "s") == 0 || *end == '\0')
    mult = 1000;
  else if (strcmp (end, "m") == 0 || strcmp (end, "min") == 0)
    mult = 60000;
  else if (strcmp (end, "h") == 0)
    mult = 3600000;
  else
    return -EINVAL;
  if (v * mult > 1e15)
    return -EINVAL;
  *ms_out = (uint64_t) (v * mult + 0.5);
  return 0;
}

void
flint_format_size (uint64_t bytes, char *buf, size_t len)
{
  static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
  double v = (double) bytes;
  unsigned u = 0;

  while (v >= 1024 && u < 4)
    {
      v /= 1024;
      u++;
    }
  if (u == 0)
    snprintf (buf, len, "%llu B", (unsigned long long) bytes);
  else if (v == (double) (uint64_t) v)
    snprintf (buf, len, "%.0f %s", v, units[u]);
  else
    snprintf (buf, len, "%.1f %s", v, units[u]);
}

bool
flint_fault_listed (const char *list, const char *point)
{
  size_t n = strlen (point);

  for (const char *p = list; p && *p;)
    {
      if (strncmp (p, point, n) == 0 && (p[n] == '\0' || p[n] == ','))
        return true;
      p = strchr (p, ',');
      if (p)
        p++;
    }
  return false;
}
