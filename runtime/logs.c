/* Log rings, rotated files and pipe readers. See logs.h. */
#include "logs.h"
#include "flint/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

struct flint_logbook_s {
  char dir[PATH_MAX];
  char path[PATH_MAX];
  int fd;
  uint64_t file_size;
  flint_log_record_t ring[FLINT_LOG_RING];
  size_t head;   /* next slot to write */
  size_t count;
  flint_list_t followers;
};

struct flint_logpipe_s {
  uv_pipe_t pipe;
  flint_logbook_t *lb;
  uint64_t version;
  char replica[48];
  char stream[8];
  char partial[FLINT_LOG_LINE_MAX];
  size_t plen;
  bool truncated;
  char readbuf[16384];
};

flint_logbook_t *
flint_logbook_new (const char *dir, const char *name)
{
  flint_logbook_t *lb = calloc (1, sizeof *lb);
  struct stat st;

  if (lb == NULL)
    abort ();
  snprintf (lb->dir, sizeof lb->dir, "%s/%s", dir, name);
  snprintf (lb->path, sizeof lb->path, "%s/current.log", lb->dir);
  flint_list_init (&lb->followers);
  flint_mkdir_p (lb->dir, 0700);
  lb->fd = open (lb->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (lb->fd >= 0 && fstat (lb->fd, &st) == 0)
    lb->file_size = (uint64_t) st.st_size;
  return lb;
}

void
flint_logbook_free (flint_logbook_t *lb)
{
  if (lb == NULL)
    return;
  for (size_t i = 0; i < FLINT_LOG_RING; i++)
    free (lb->ring[i].line);
  /* followers learn the log is gone (rec NULL) and end their streams */
  while (!flint_list_empty (&lb->followers))
    {
      flint_log_follower_t *f = flint_list_entry (lb->followers.next, flint_log_follower_t, link);
      flint_list_remove (&f->link);
      f->cb (f, NULL);
    }
  if (lb->fd >= 0)
    close (lb->fd);
  free (lb);
}

void
flint_logbook_remove_files (flint_logbook_t *lb)
{
  if (lb->fd >= 0)
    {
      close (lb->fd);
      lb->fd = -1;
    }
  flint_rm_rf (lb->dir);
}

static void
rotate (flint_logbook_t *lb)
{
  char from[PATH_MAX + 8], to[PATH_MAX + 8];

  if (lb->fd >= 0)
    close (lb->fd);
  for (int i = FLINT_LOG_FILES - 1; i >= 1; i--)
    {
      if (i == 1)
        snprintf (from, sizeof from, "%s", lb->path);
      else
        snprintf (from, sizeof from, "%s/%d.log", lb->dir, i - 1);
      snprintf (to, sizeof to, "%s/%d.log", lb->dir, i);
      rename (from, to);
    }
  lb->fd = open (lb->path, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC | O_CLOEXEC, 0600);
  lb->file_size = 0;
}

void
flint_logbook_append (flint_logbook_t *lb, uint64_t version, const char *replica, const char *stream,
                      const char *line, size_t len)
{
  flint_log_record_t *rec = &lb->ring[lb->head];
  char stamp[40];
  struct tm tm;
  time_t secs;
  char *copy;
  flint_list_t *p;

  if (len > FLINT_LOG_LINE_MAX)
    len = FLINT_LOG_LINE_MAX;
  copy = malloc (len + 1);
  if (copy == NULL)
    abort ();
  memcpy (copy, line, len);
  copy[len] = '\0';
  for (size_t i = 0; i < len; i++)
    if (copy[i] == '\0')
      copy[i] = ' ';
  free (rec->line);
  rec->time_ms = flint_wall_ms ();
  rec->version = version;
  snprintf (rec->replica, sizeof rec->replica, "%s", replica);
  snprintf (rec->stream, sizeof rec->stream, "%s", stream);
  rec->line = copy;
  lb->head = (lb->head + 1) % FLINT_LOG_RING;
  if (lb->count < FLINT_LOG_RING)
    lb->count++;

  if (lb->fd >= 0)
    {
      char hdr[160];
      int n;
      secs = (time_t) (rec->time_ms / 1000);
      gmtime_r (&secs, &tm);
      strftime (stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
      n = snprintf (hdr, sizeof hdr, "%s.%03dZ v%llu %s %s: ", stamp, (int) (rec->time_ms % 1000),
                    (unsigned long long) version, rec->replica, rec->stream);
      struct iovec iov[3] = { { hdr, (size_t) n }, { copy, len }, { (void *) "\n", 1 } };
      ssize_t w = writev (lb->fd, iov, 3);
      if (w > 0)
        lb->file_size += (uint64_t) w;
      if (lb->file_size >= FLINT_LOG_FILE_MAX)
        rotate (lb);
    }
  for (p = lb->followers.next; p != &lb->followers;)
    {
      flint_log_follower_t *f = flint_list_entry (p, flint_log_follower_t, link);
      p = p->next; /* the callback may unfollow */
      f->cb (f, rec);
    }
}

void
flint_logbook_each (flint_logbook_t *lb, int64_t since_ms, uint32_t tail,
                    void (*cb) (const flint_log_record_t *rec, void *data), void *data)
{
  size_t start = (lb->head + FLINT_LOG_RING - lb->count) % FLINT_LOG_RING;
  size_t n = 0, skip = 0;

  for (size_t i = 0; i < lb->count; i++)
    if (lb->ring[(start + i) % FLINT_LOG_RING].time_ms > since_ms)
      n++;
  if (tail && n > tail)
    skip = n - tail;
  for (size_t i = 0; i < lb->count; i++)
    {
      const flint_log_record_t *rec = &lb->ring[(start + i) % FLINT_LOG_RING];
      if (rec->time_ms <= since_ms)
        continue;
      if (skip)
        {
          skip--;
          continue;
        }
      cb (rec, data);
    }
}

void
flint_logbook_follow (flint_logbook_t *lb, flint_log_follower_t *f)
{
  flint_list_insert_tail (&lb->followers, &f->link);
}

void
flint_logbook_unfollow (flint_log_follower_t *f)
{
  flint_list_remove (&f->link);
}

/* ---- pipes --------------------------------------------------------------------------- */

static void
emit_lines (flint_logpipe_t *p, const char *data, size_t len)
{
  for (size_t i = 0; i < len; i++)
    {
      char c = data[i];
      if (c == '\n')
        {
          size_t l = p->plen;
          if (l && p->partial[l - 1] == '\r')
            l--;
          flint_logbook_append (p->lb, p->version, p->replica, p->stream, p->partial, l);
          p->plen = 0;
          p->truncated = false;
          continue;
        }
      if (p->plen < sizeof p->partial)
        p->partial[p->plen++] = c;
      else if (!p->truncated)
        {
          /* cut an endless line into records instead of dropping the rest */
          flint_logbook_append (p->lb, p->version, p->replica, p->stream, p->partial, p->plen);
          p->plen = 0;
          p->partial[p->plen++] = c;
        }
    }
}

static void
alloc_cb (uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  flint_logpipe_t *p = h->data;
  (void) suggested;
  buf->base = p->readbuf;
  buf->len = sizeof p->readbuf;
}

static void
closed_cb (uv_handle_t *h)
{
  free (h->data);
}

static void
flush_partial (flint_logpipe_t *p)
{
  if (p->plen)
    {
      flint_logbook_append (p->lb, p->version, p->replica, p->stream, p->partial, p->plen);
      p->plen = 0;
    }
}

static void
read_cb (uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  flint_logpipe_t *p = s->data;
  if (n > 0)
    emit_lines (p, buf->base, (size_t) n);
  else if (n < 0)
    {
      flush_partial (p);
      uv_read_stop (s);
    }
}

flint_logpipe_t *
flint_logpipe_open (uv_loop_t *loop, int fd, flint_logbook_t *lb, uint64_t version, const char *replica,
                    const char *stream)
{
  flint_logpipe_t *p = calloc (1, sizeof *p);

  if (p == NULL || uv_pipe_init (loop, &p->pipe, 0) < 0)
    {
      free (p);
      close (fd);
      return NULL;
    }
  p->pipe.data = p;
  p->lb = lb;
  p->version = version;
  snprintf (p->replica, sizeof p->replica, "%s", replica);
  snprintf (p->stream, sizeof p->stream, "%s", stream);
  if (uv_pipe_open (&p->pipe, fd) < 0 || uv_read_start ((uv_stream_t *) &p->pipe, alloc_cb, read_cb) < 0)
    {
      close (fd);
      uv_close ((uv_handle_t *) &p->pipe, closed_cb);
      return NULL;
    }
  return p;
}

void
flint_logpipe_close (flint_logpipe_t *p)
{
  uv_os_fd_t fd;

  if (p == NULL)
    return;
  /* drain what the dead worker left in the pipe so its last words reach the log */
  if (uv_fileno ((uv_handle_t *) &p->pipe, &fd) == 0)
    {
      for (int i = 0; i < 64; i++)
        {
          ssize_t n = read (fd, p->readbuf, sizeof p->readbuf);
          if (n <= 0)
            break;
          emit_lines (p, p->readbuf, (size_t) n);
        }
    }
  flush_partial (p);
  uv_read_stop ((uv_stream_t *) &p->pipe);
  uv_close ((uv_handle_t *) &p->pipe, closed_cb);
}
