/* flint_channel_t over uv_poll_t. See channel.h.
 *
 * Frames sent with flint_channel_send_soon() collect in `cork` and leave in one write from a
 * uv_prepare callback, which libuv runs once per loop iteration just before it polls: every
 * frame the iteration produced for this peer goes out together, and the peer wakes once for
 * them. */
#include "channel.h"
#include "flint/buf.h"
#include "flint/frame.h"
#include "flint/list.h"
#include "flint/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct out_s {
  flint_list_t link;
  uint8_t *buf;
  size_t len, off;
  int fds[FLINT_FRAME_MAX_FDS];
  size_t nfds;  /* still to send with the first byte */
} out_t;

#define FDQ_MAX 32
#define KEEP_CORK (256u << 10)  /* capacity of `cork` kept between iterations */

struct flint_channel_s {
  uv_poll_t poll;
  uv_prepare_t prep;   /* flushes `cork` before the loop polls */
  flint_buf_t cork;    /* frames of flint_channel_send_soon() not yet handed to the kernel */
  int handles;         /* handles not yet closed (the channel is freed when none is left) */
  int fd;
  int fdq[FDQ_MAX];  /* fds received, oldest first */
  int nfdq;
  flint_frame_reader_t rd;
  flint_list_t outq;
  size_t pending;
  int events;
  bool closed;     /* close_cb delivered or owner closed */
  bool freed;      /* owner called flint_channel_close */
  int in_cb;       /* re-entrancy depth of callbacks */
  flint_channel_frame_cb frame_cb;
  flint_channel_close_cb close_cb;
  void *data;
};

static void poll_cb (uv_poll_t *h, int status, int events);

static void
handle_closed_cb (uv_handle_t *h)
{
  flint_channel_t *ch = h->data;
  if (--ch->handles == 0)
    free (ch);
}

static void
out_free (out_t *o)
{
  for (size_t i = 0; i < o->nfds; i++)
    close (o->fds[i]);
  free (o->buf);
  free (o);
}

static void
destroy (flint_channel_t *ch)
{
  flint_list_t *p, *t;

  flint_list_foreach_safe (p, t, &ch->outq)
    {
      flint_list_remove (p);
      out_free (flint_list_entry (p, out_t, link));
    }
  flint_buf_free (&ch->cork);
  flint_frame_reader_free (&ch->rd);
  for (int i = 0; i < ch->nfdq; i++)
    close (ch->fdq[i]);
  ch->nfdq = 0;
  uv_poll_stop (&ch->poll);
  uv_close ((uv_handle_t *) &ch->poll, handle_closed_cb);
  uv_close ((uv_handle_t *) &ch->prep, handle_closed_cb);
  close (ch->fd);
}

static void
update_events (flint_channel_t *ch)
{
  int want = UV_READABLE | (flint_list_empty (&ch->outq) ? 0 : UV_WRITABLE);
  if (ch->closed)
    want = flint_list_empty (&ch->outq) ? 0 : UV_WRITABLE;
  if (want != ch->events)
    {
      ch->events = want;
      if (want)
        uv_poll_start (&ch->poll, want, poll_cb);
      else
        uv_poll_stop (&ch->poll);
    }
}

static void
deliver_close (flint_channel_t *ch, int error)
{
  if (ch->closed)
    return;
  ch->closed = true;
  update_events (ch);
  ch->in_cb++;
  ch->close_cb (ch, error, ch->data);
  ch->in_cb--;
}

/* Writes what it can of `buf` (with fds on the first byte). Returns bytes written or -errno;
 * -EAGAIN when nothing could be written. */
static ssize_t
write_some (int fd, const uint8_t *buf, size_t len, const int *fds, size_t nfds)
{
  ssize_t n;

  if (nfds == 0)
    {
      do
        n = send (fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
      while (n < 0 && errno == EINTR);
    }
  else
    {
      union {
        char b[CMSG_SPACE (sizeof (int) * FLINT_FRAME_MAX_FDS)];
        struct cmsghdr align;
      } cbuf;
      struct iovec iov = { .iov_base = (void *) buf, .iov_len = len };
      struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.b,
                           .msg_controllen = CMSG_SPACE (sizeof (int) * nfds) };
      struct cmsghdr *cm;

      memset (&cbuf, 0, sizeof cbuf);
      cm = CMSG_FIRSTHDR (&mh);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN (sizeof (int) * nfds);
      memcpy (CMSG_DATA (cm), fds, sizeof (int) * nfds);
      do
        n = sendmsg (fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
      while (n < 0 && errno == EINTR);
    }
  return n < 0 ? -errno : n;
}

static int
flush (flint_channel_t *ch)
{
  while (!flint_list_empty (&ch->outq))
    {
      out_t *o = flint_list_entry (ch->outq.next, out_t, link);
      ssize_t n = write_some (ch->fd, o->buf + o->off, o->len - o->off, o->fds, o->nfds);
      if (n == -EAGAIN)
        return 0;
      if (n < 0)
        return (int) n;
      for (size_t i = 0; i < o->nfds; i++)
        close (o->fds[i]);
      o->nfds = 0;
      o->off += (size_t) n;
      ch->pending -= (size_t) n;
      if (o->off == o->len)
        {
          flint_list_remove (&o->link);
          out_free (o);
        }
    }
  return 0;
}

/* Moves the corked frames behind whatever is queued and writes what the kernel takes. Returns 0
 * or -errno (the peer is gone). */
static int
uncork (flint_channel_t *ch)
{
  size_t off = 0;
  out_t *o;

  uv_prepare_stop (&ch->prep);
  if (ch->cork.len == 0)
    return 0;
  if (flint_list_empty (&ch->outq))
    {
      ssize_t n = write_some (ch->fd, (const uint8_t *) ch->cork.data, ch->cork.len, NULL, 0);
      if (n < 0 && n != -EAGAIN)
        {
          flint_buf_reset (&ch->cork);
          return (int) n;
        }
      off = n > 0 ? (size_t) n : 0;
      if (off == ch->cork.len)
        {
          /* keep a small allocation for the next iteration, not a large request's */
          if (ch->cork.cap > KEEP_CORK)
            flint_buf_free (&ch->cork);
          else
            flint_buf_reset (&ch->cork);
          return 0;
        }
    }
  o = calloc (1, sizeof *o);
  if (o == NULL)
    abort ();
  o->buf = (uint8_t *) flint_buf_steal (&ch->cork, &o->len);
  o->off = off;
  flint_list_insert_tail (&ch->outq, &o->link);
  ch->pending += o->len - off;
  return flush (ch);
}

static void
prep_cb (uv_prepare_t *h)
{
  flint_channel_t *ch = h->data;
  int r;

  ch->in_cb++;
  r = uncork (ch);
  if (r < 0)
    deliver_close (ch, r);
  ch->in_cb--;
  if (ch->freed)
    {
      if (ch->in_cb == 0)
        destroy (ch);
      return;
    }
  update_events (ch);
}

static void
read_ready (flint_channel_t *ch)
{
  for (int rounds = 0; rounds < 16 && !ch->closed; rounds++)
    {
      uint8_t *space;
      size_t room;
      ssize_t n;
      const uint8_t *payload;
      size_t len;
      int r = 0;

      if (flint_frame_reader_space (&ch->rd, 64u << 10, &space, &room) < 0)
        {
          deliver_close (ch, -ENOMEM);
          return;
        }
      {
        union {
          char b[CMSG_SPACE (sizeof (int) * FLINT_FRAME_MAX_FDS)];
          struct cmsghdr align;
        } cbuf;
        struct iovec iov = { .iov_base = space, .iov_len = room };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.b, .msg_controllen = sizeof cbuf.b };
        do
          n = recvmsg (ch->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n > 0)
          for (struct cmsghdr *cm = CMSG_FIRSTHDR (&mh); cm; cm = CMSG_NXTHDR (&mh, cm))
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
              {
                size_t cnt = (cm->cmsg_len - CMSG_LEN (0)) / sizeof (int);
                int *in = (int *) CMSG_DATA (cm);
                for (size_t k = 0; k < cnt; k++)
                  {
                    if (ch->nfdq < FDQ_MAX)
                      ch->fdq[ch->nfdq++] = in[k];
                    else
                      close (in[k]);
                  }
              }
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
      if (n <= 0)
        {
          deliver_close (ch, n == 0 ? 0 : -errno);
          return;
        }
      flint_frame_reader_commit (&ch->rd, (size_t) n);
      ch->in_cb++;
      while (!ch->closed && (r = flint_frame_reader_next (&ch->rd, &payload, &len)) == 1)
        ch->frame_cb (ch, payload, len, ch->data);
      ch->in_cb--;
      if (ch->freed)
        return;
      if (!ch->closed && r < 0)
        {
          deliver_close (ch, r);
          return;
        }
      if ((size_t) n < room)
        return; /* drained the socket */
    }
}

static void
poll_cb (uv_poll_t *h, int status, int events)
{
  flint_channel_t *ch = h->data;

  ch->in_cb++;
  if (status < 0)
    deliver_close (ch, status);
  else
    {
      if ((events & UV_WRITABLE) && !ch->freed)
        {
          int r = flush (ch);
          if (r < 0)
            deliver_close (ch, r);
        }
      if ((events & UV_READABLE) && !ch->closed && !ch->freed)
        read_ready (ch);
    }
  ch->in_cb--;
  if (ch->freed)
    {
      if (ch->in_cb == 0)
        destroy (ch);
      return;
    }
  update_events (ch);
}

int
flint_channel_new (uv_loop_t *loop, int fd, size_t max_frame, flint_channel_frame_cb frame_cb,
                   flint_channel_close_cb close_cb, void *data, flint_channel_t **out)
{
  flint_channel_t *ch = calloc (1, sizeof *ch);
  int r;

  if (ch == NULL)
    return -ENOMEM;
  r = flint_set_nonblock (fd, true);
  if (r == 0)
    r = flint_set_cloexec (fd, true);
  if (r == 0)
    r = uv_poll_init (loop, &ch->poll, fd);
  if (r < 0)
    {
      free (ch);
      return r;
    }
  uv_prepare_init (loop, &ch->prep); /* cannot fail */
  ch->handles = 2;
  ch->fd = fd;
  ch->poll.data = ch;
  ch->prep.data = ch;
  ch->frame_cb = frame_cb;
  ch->close_cb = close_cb;
  ch->data = data;
  flint_list_init (&ch->outq);
  flint_frame_reader_init (&ch->rd, max_frame);
  ch->events = UV_READABLE;
  uv_poll_start (&ch->poll, UV_READABLE, poll_cb);
  *out = ch;
  return 0;
}

int
flint_channel_send (flint_channel_t *ch, const ProtobufCMessage *msg, const int *fds, size_t nfds)
{
  uint8_t *buf;
  size_t len, off = 0;
  int r;
  out_t *o;

  if (ch->closed || ch->freed)
    return -EPIPE;
  if (nfds > FLINT_FRAME_MAX_FDS)
    return -EINVAL;
  r = flint_frame_encode (msg, UINT32_MAX, &buf, &len);
  if (r < 0)
    return r;
  if (ch->cork.len > 0 && (r = uncork (ch)) < 0)
    {
      free (buf);
      return r; /* the close is delivered when the poll reports the error */
    }
  if (flint_list_empty (&ch->outq))
    {
      ssize_t n = write_some (ch->fd, buf, len, fds, nfds);
      if (n < 0 && n != -EAGAIN)
        {
          free (buf);
          return (int) n;
        }
      if (n > 0)
        {
          nfds = 0; /* delivered with the first byte */
          off = (size_t) n;
        }
      if (off == len)
        {
          free (buf);
          return 0;
        }
    }
  o = calloc (1, sizeof *o);
  if (o == NULL)
    {
      free (buf);
      return -ENOMEM;
    }
  o->buf = buf;
  o->len = len;
  o->off = off;
  for (size_t i = 0; i < nfds; i++)
    {
      o->fds[i] = fcntl (fds[i], F_DUPFD_CLOEXEC, 3);
      if (o->fds[i] < 0)
        {
          int e = -errno;
          o->nfds = i;
          out_free (o);
          return e;
        }
    }
  o->nfds = nfds;
  flint_list_insert_tail (&ch->outq, &o->link);
  ch->pending += len - off;
  update_events (ch);
  return 0;
}

int
flint_channel_send_soon (flint_channel_t *ch, const ProtobufCMessage *msg)
{
  int r;

  if (ch->closed || ch->freed)
    return -EPIPE;
  r = flint_frame_encode_append (msg, UINT32_MAX, &ch->cork);
  if (r < 0)
    return r;
  if (!uv_is_active ((uv_handle_t *) &ch->prep))
    uv_prepare_start (&ch->prep, prep_cb);
  return 0;
}

int
flint_channel_take_fd (flint_channel_t *ch)
{
  int fd;
  if (ch->nfdq == 0)
    return -1;
  fd = ch->fdq[0];
  memmove (ch->fdq, ch->fdq + 1, (size_t) (ch->nfdq - 1) * sizeof (int));
  ch->nfdq--;
  return fd;
}

size_t
flint_channel_pending (const flint_channel_t *ch)
{
  return ch->pending + ch->cork.len;
}

void
flint_channel_close (flint_channel_t *ch)
{
  if (ch == NULL || ch->freed)
    return;
  ch->freed = true;
  ch->closed = true;
  if (ch->in_cb == 0)
    destroy (ch);
}
