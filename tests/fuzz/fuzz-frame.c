/* libFuzzer target: the frame layer between flintd and the processes it talks to
 * (common/frame.c), and what flintd does with each frame's bytes. Workers run functions of
 * unknown authors, so everything they write on their channel is untrusted.
 *
 * The input is a byte stream as a peer would write it. It goes through:
 *   1. the incremental reader flintd's channels use (flint_frame_reader_*), fed in chunks whose
 *      sizes come from the first input byte (so frame headers straddle reads);
 *   2. the blocking reader of the helpers and the worker (flint_frame_recv), over a real
 *      socketpair, differentially: both must return the same frames, then agree on how the
 *      stream ended (clean end, truncated frame, oversized frame);
 *   3. every frame unpacked as a worker.proto Frame and as a node.proto NodeFrame, and what
 *      unpacks rendered with the proto→JSON renderer (common/pbjson.c), whose output must parse
 *      back as JSON. */
#include "flint/frame.h"
#include "flint/buf.h"
#include "flint/json.h"
#include "flint/pbjson.h"
#include "flint/node/v1/node.pb-c.h"
#include "flint/worker/v1/worker.pb-c.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define MAX_FRAME (64u << 10)
#define MAX_FRAMES 4096

typedef struct seen_s {
  size_t n;
  uint8_t *copy[MAX_FRAMES];
  size_t len[MAX_FRAMES];
} seen_t;

static void
render_check (const ProtobufCMessage *msg)
{
  flint_buf_t b = FLINT_BUF_INIT;
  flint_json_doc_t *doc = NULL;
  char err[256];

  flint_pbjson_render (msg, &b);
  if (flint_json_parse (b.data, b.len, &doc, err, sizeof err) < 0)
    {
      fprintf (stderr, "fuzz-frame: pbjson rendered invalid JSON (%s): %.*s\n", err, (int) (b.len > 400 ? 400 : b.len),
               b.data);
      abort ();
    }
  flint_json_doc_free (doc);
  flint_buf_free (&b);
}

static void
use_frame (const uint8_t *payload, size_t len)
{
  /* exact-size copy: ASan sees any read past the frame */
  uint8_t *copy = malloc (len ? len : 1);
  Flint__Worker__V1__Frame *wf;
  Flint__Node__V1__NodeFrame *nf;

  if (copy == NULL)
    return;
  memcpy (copy, payload, len);
  wf = flint__worker__v1__frame__unpack (NULL, len, copy);
  if (wf)
    {
      render_check (&wf->base);
      flint__worker__v1__frame__free_unpacked (wf, NULL);
    }
  nf = flint__node__v1__node_frame__unpack (NULL, len, copy);
  if (nf)
    {
      render_check (&nf->base);
      flint__node__v1__node_frame__free_unpacked (nf, NULL);
    }
  free (copy);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static seen_t inc;
  flint_frame_reader_t rd;
  size_t fed = 0, step = size ? (size_t) data[0] % 61 + 1 : 1;
  int end_inc = 0, end_blk;
  int sv[2];

  /* 1. incremental reader */
  inc.n = 0;
  flint_frame_reader_init (&rd, MAX_FRAME);
  while (end_inc == 0)
    {
      const uint8_t *payload;
      size_t len, n;
      uint8_t *space;
      int r;

      while ((r = flint_frame_reader_next (&rd, &payload, &len)) == 1)
        {
          if (inc.n == MAX_FRAMES)
            abort (); /* cannot happen: each frame takes at least 4 input bytes */
          if (len > MAX_FRAME)
            abort ();
          inc.copy[inc.n] = malloc (len ? len : 1);
          if (inc.copy[inc.n] == NULL)
            abort ();
          memcpy (inc.copy[inc.n], payload, len);
          inc.len[inc.n++] = len;
          use_frame (payload, len);
        }
      if (r < 0)
        {
          if (r != -EMSGSIZE)
            abort ();
          end_inc = -EMSGSIZE;
          break;
        }
      if (fed == size)
        {
          /* end of stream: a clean end has no partial frame buffered */
          end_inc = rd.len == rd.off ? 1 : -EPROTO;
          break;
        }
      if (flint_frame_reader_space (&rd, step, &space, &len) < 0)
        abort ();
      n = step < size - fed ? step : size - fed;
      memcpy (space, data + fed, n);
      flint_frame_reader_commit (&rd, n);
      fed += n;
    }
  flint_frame_reader_free (&rd);

  /* 2. the blocking reader over a socketpair must agree (inputs that fit the socket buffer:
   * libFuzzer's are far smaller) */
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    abort ();
  {
    int buf = 1 << 20;
    size_t got = 0, sent = 0;
    setsockopt (sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    while (sent < size)
      {
        ssize_t n = send (sv[0], data + sent, size - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0)
          break;
        sent += (size_t) n;
      }
    close (sv[0]);
    if (sent < size)
      {
        close (sv[1]);
        goto out;
      }
    for (;;)
      {
        uint8_t *msg = NULL;
        size_t len = 0;
        int r = flint_frame_recv (sv[1], MAX_FRAME, &msg, &len, NULL, NULL);
        if (r != 1)
          {
            end_blk = r == 0 ? 1 : r;
            break;
          }
        if (got >= inc.n || inc.len[got] != len || memcmp (msg, inc.copy[got], len) != 0)
          {
            fprintf (stderr, "fuzz-frame: the two readers disagree on frame %zu\n", got);
            abort ();
          }
        free (msg);
        got++;
      }
    close (sv[1]);
    if (got != inc.n || end_blk != end_inc)
      {
        fprintf (stderr, "fuzz-frame: readers disagree: %zu vs %zu frames, end %d vs %d\n", inc.n, got, end_inc,
                 end_blk);
        abort ();
      }
  }
out:
  for (size_t i = 0; i < inc.n; i++)
    free (inc.copy[i]);
  return 0;
}
