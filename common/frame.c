/* Frame encoding, blocking send/receive with SCM_RIGHTS, and the incremental decoder. */
#include "flint/frame.h"
#include "flint/cleanup.h"
#include "flint/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static void
put_le32 (uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t) v;
  p[1] = (uint8_t) (v >> 8);
  p[2] = (uint8_t) (v >> 16);
  p[3] = (uint8_t) (v >> 24);
}

static uint32_t
get_le32 (const uint8_t *p)
{
  return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}

int
flint_frame_encode (const ProtobufCMessage *msg, size_t max, uint8_t **buf_out, size_t *len_out)
{
  size_t n = protobuf_c_message_get_packed_size (msg);
  uint8_t *buf;

  if (n > max || n > UINT32_MAX)
    return -EMSGSIZE;
  buf = malloc (FLINT_FRAME_HEADER + n);
  if (buf == NULL)
    return -ENOMEM;
  put_le32 (buf, (uint32_t) n);
  if (protobuf_c_message_pack (msg, buf + FLINT_FRAME_HEADER) != n)
    {
      free (buf);
      return -EPROTO;
    }
  *buf_out = buf;
  *len_out = FLINT_FRAME_HEADER + n;
  return 0;
}

int
flint_frame_encode_append (const ProtobufCMessage *msg, size_t max, flint_buf_t *b)
{
  size_t n = protobuf_c_message_get_packed_size (msg);
  uint8_t *p;

  if (n > max || n > UINT32_MAX)
    return -EMSGSIZE;
  flint_buf_reserve (b, FLINT_FRAME_HEADER + n);
  p = (uint8_t *) b->data + b->len;
  put_le32 (p, (uint32_t) n);
  protobuf_c_message_pack (msg, p + FLINT_FRAME_HEADER);
  b->len += FLINT_FRAME_HEADER + n;
  b->data[b->len] = '\0';
  return 0;
}

int
flint_frame_send (int sock, const ProtobufCMessage *msg, const int *fds, size_t nfds)
{
  _cleanup_free_ uint8_t *buf = NULL;
  size_t len;
  int r;

  if (nfds > FLINT_FRAME_MAX_FDS)
    return -EINVAL;
  r = flint_frame_encode (msg, UINT32_MAX, &buf, &len);
  if (r < 0)
    return r;
  if (nfds > 0)
    {
      union {
        char buf[CMSG_SPACE (sizeof (int) * FLINT_FRAME_MAX_FDS)];
        struct cmsghdr align;
      } cbuf;
      struct iovec iov = { .iov_base = buf, .iov_len = 1 };
      struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
      struct cmsghdr *cm;
      ssize_t n;

      memset (&cbuf, 0, sizeof cbuf);
      mh.msg_control = cbuf.buf;
      mh.msg_controllen = CMSG_SPACE (sizeof (int) * nfds);
      cm = CMSG_FIRSTHDR (&mh);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN (sizeof (int) * nfds);
      memcpy (CMSG_DATA (cm), fds, sizeof (int) * nfds);
      do
        n = sendmsg (sock, &mh, MSG_NOSIGNAL);
      while (n < 0 && errno == EINTR);
      if (n < 0)
        return -errno;
      return flint_write_all (sock, buf + 1, len - 1);
    }
  return flint_write_all (sock, buf, len);
}

/* Reads into buf, collecting any fds that arrive with the first byte. */
static ssize_t
recv_with_fds (int sock, uint8_t *buf, size_t len, int *fds, size_t room, size_t *nfds)
{
  union {
    char buf[CMSG_SPACE (sizeof (int) * FLINT_FRAME_MAX_FDS)];
    struct cmsghdr align;
  } cbuf;
  struct iovec iov = { .iov_base = buf, .iov_len = len };
  struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
                       .msg_controllen = sizeof cbuf.buf };
  ssize_t n;

  do
    n = recvmsg (sock, &mh, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return -errno;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR (&mh); cm; cm = CMSG_NXTHDR (&mh, cm))
    {
      if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
        continue;
      size_t cnt = (cm->cmsg_len - CMSG_LEN (0)) / sizeof (int);
      int *in = (int *) CMSG_DATA (cm);
      for (size_t i = 0; i < cnt; i++)
        {
          if (*nfds < room)
            fds[(*nfds)++] = in[i];
          else
            close (in[i]);
        }
    }
  return n;
}

int
flint_frame_recv (int sock, size_t max, uint8_t **buf_out, size_t *len_out, int *fds_out,
                  size_t *nfds_inout)
{
  uint8_t hdr[FLINT_FRAME_HEADER];
  size_t room = nfds_inout ? *nfds_inout : 0;
  size_t nfds = 0;
  size_t got = 0;
  uint32_t len;
  _cleanup_free_ uint8_t *buf = NULL;
  ssize_t n;

  if (nfds_inout)
    *nfds_inout = 0;
  while (got < sizeof hdr)
    {
      n = recv_with_fds (sock, hdr + got, sizeof hdr - got, fds_out, room, &nfds);
      if (n < 0)
        goto fail_errno;
      if (n == 0)
        {
          n = got == 0 ? 0 : -EPROTO;
          goto fail_errno;
        }
      got += (size_t) n;
    }
  len = get_le32 (hdr);
  if (len > max)
    {
      n = -EMSGSIZE;
      goto fail_errno;
    }
  buf = malloc (len ? len : 1);
  if (buf == NULL)
    {
      n = -ENOMEM;
      goto fail_errno;
    }
  n = flint_read_all (sock, buf, len);
  if (n >= 0 && (size_t) n < len)
    n = -EPROTO;
  if (n < 0)
    goto fail_errno;
  *buf_out = steal_pointer (&buf);
  *len_out = len;
  if (nfds_inout)
    *nfds_inout = nfds;
  return 1;

fail_errno:
  for (size_t i = 0; i < nfds; i++)
    close (fds_out[i]);
  return (int) n;
}

void
flint_frame_reader_init (flint_frame_reader_t *r, size_t max)
{
  memset (r, 0, sizeof *r);
  r->max = max;
}

void
flint_frame_reader_free (flint_frame_reader_t *r)
{
  free (r->buf);
  memset (r, 0, sizeof *r);
}

int
flint_frame_reader_space (flint_frame_reader_t *r, size_t want, uint8_t **ptr_out, size_t *len_out)
{
  /* Compact consumed bytes away first so the buffer does not grow without bound. */
  if (r->off > 0)
    {
      memmove (r->buf, r->buf + r->off, r->len - r->off);
      r->len -= r->off;
      r->off = 0;
    }
  if (r->cap - r->len < want)
    {
      size_t cap = r->cap ? r->cap : 4096;
      uint8_t *nb;
      while (cap - r->len < want)
        cap *= 2;
      nb = realloc (r->buf, cap);
      if (nb == NULL)
        return -ENOMEM;
      r->buf = nb;
      r->cap = cap;
    }
  *ptr_out = r->buf + r->len;
  *len_out = r->cap - r->len;
  return 0;
}

void
flint_frame_reader_commit (flint_frame_reader_t *r, size_t n)
{
  r->len += n;
}

int
flint_frame_reader_next (flint_frame_reader_t *r, const uint8_t **payload_out, size_t *len_out)
{
  size_t avail = r->len - r->off;
  uint32_t len;

  if (avail < FLINT_FRAME_HEADER)
    return 0;
  len = get_le32 (r->buf + r->off);
  if (len > r->max)
    return -EMSGSIZE;
  if (avail - FLINT_FRAME_HEADER < len)
    return 0;
  *payload_out = r->buf + r->off + FLINT_FRAME_HEADER;
  *len_out = len;
  r->off += FLINT_FRAME_HEADER + len;
  return 1;
}
