/* Unit tests of common/: util.c, frame.c (both readers, descriptor passing), map.c, error.c,
 * buf.c's JSON strings and pbjson.c. */
#include "tap.h"
#include "flint/buf.h"
#include "flint/error.h"
#include "flint/frame.h"
#include "flint/pbjson.h"
#include "flint/map.h"
#include "flint/util.h"
#include "flint/worker/v1/worker.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

int
main (void)
{
  uint64_t v;
  char buf[64];

  ok (flint_parse_size ("256Mi", &v) == 0 && v == 256u << 20, "256Mi");
  ok (flint_parse_size ("1G", &v) == 0 && v == 1000000000ull, "1G is decimal");
  ok (flint_parse_size ("1.5Gi", &v) == 0 && v == 3ull << 29, "fractions");
  ok (flint_parse_size ("12", &v) == 0 && v == 12, "bare bytes");
  ok (flint_parse_size ("nan", &v) < 0 && flint_parse_size ("infMi", &v) < 0 && flint_parse_duration_ms ("nan", &v) < 0
          && flint_parse_duration_ms ("inf", &v) < 0 && flint_parse_duration_ms ("NaNms", &v) < 0,
      "NaN and infinity refused (found by fuzz-manifest: their conversion was undefined)");
  ok (flint_parse_size ("-1", &v) < 0 && flint_parse_size ("5 parsecs", &v) < 0 && flint_parse_size ("", &v) < 0,
      "bad sizes refused");
  ok (flint_parse_duration_ms ("250ms", &v) == 0 && v == 250, "250ms");
  ok (flint_parse_duration_ms ("2.5s", &v) == 0 && v == 2500, "2.5s");
  ok (flint_parse_duration_ms ("5m", &v) == 0 && v == 300000, "5m");
  ok (flint_parse_duration_ms ("30", &v) == 0 && v == 30000, "bare seconds");
  ok (flint_parse_duration_ms ("1d", &v) < 0, "unknown unit refused");
  flint_format_size (1536 << 20, buf, sizeof buf);
  is_str (buf, "1.5 GiB", "format size");

  /* frames over a socketpair, blocking and incremental */
  {
    int sv[2];
    Flint__Worker__V1__Ping ping = FLINT__WORKER__V1__PING__INIT;
    Flint__Worker__V1__Frame f = FLINT__WORKER__V1__FRAME__INIT;
    uint8_t *got = NULL;
    size_t len, nfds = 0;
    flint_frame_reader_t rd;
    const uint8_t *payload;

    socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    ping.seq = 42;
    f.msg_case = FLINT__WORKER__V1__FRAME__MSG_PING;
    f.ping = &ping;
    ok (flint_frame_send (sv[0], &f.base, NULL, 0) == 0, "send a frame");
    ok (flint_frame_recv (sv[1], 1024, &got, &len, NULL, &nfds) == 1, "receive it");
    {
      Flint__Worker__V1__Frame *u = flint__worker__v1__frame__unpack (NULL, len, got);
      ok (u && u->msg_case == FLINT__WORKER__V1__FRAME__MSG_PING && u->ping->seq == 42, "same message");
      flint__worker__v1__frame__free_unpacked (u, NULL);
    }
    free (got);
    /* an oversized announcement is refused before allocation */
    {
      uint8_t hdr[4] = { 0xff, 0xff, 0xff, 0x7f };
      (void) !write (sv[0], hdr, 4);
      ok (flint_frame_recv (sv[1], 1024, &got, &len, NULL, &nfds) == -EMSGSIZE, "oversized frame refused");
    }
    /* incremental reader: byte by byte */
    {
      uint8_t *enc;
      size_t elen;
      int n = 0;
      flint_frame_encode (&f.base, 1024, &enc, &elen);
      flint_frame_reader_init (&rd, 1024);
      for (size_t i = 0; i < elen; i++)
        {
          uint8_t *space;
          size_t room;
          flint_frame_reader_space (&rd, 1, &space, &room);
          *space = enc[i];
          flint_frame_reader_commit (&rd, 1);
          n += flint_frame_reader_next (&rd, &payload, &len) == 1;
        }
      ok (n == 1 && len == elen - 4, "incremental reader yields exactly one frame");
      free (enc);
      flint_frame_reader_free (&rd);
    }
    /* a descriptor rides with a frame and arrives close-on-exec */
    {
      int pfd[2], got_fd[2] = { -1, -1 }, fl;
      size_t nf = 2;
      pipe2 (pfd, O_CLOEXEC);
      ok (flint_frame_send (sv[0], &f.base, &pfd[1], 1) == 0, "send a frame with an fd");
      ok (flint_frame_recv (sv[1], 1024, &got, &len, got_fd, &nf) == 1 && nf == 1, "one fd received");
      fl = fcntl (got_fd[0], F_GETFD);
      ok (fl >= 0 && (fl & FD_CLOEXEC), "received fd is close-on-exec");
      ok (write (got_fd[0], "x", 1) == 1 && read (pfd[0], buf, 1) == 1 && buf[0] == 'x', "and is the pipe we sent");
      free (got);
      close (got_fd[0]);
      close (pfd[0]);
      close (pfd[1]);
    }
    /* the peer goes away in the middle of a frame */
    {
      uint8_t *enc;
      size_t elen;
      flint_frame_encode (&f.base, 1024, &enc, &elen);
      (void) !write (sv[0], enc, elen - 1);
      close (sv[0]);
      ok (flint_frame_recv (sv[1], 1024, &got, &len, NULL, NULL) == -EPROTO, "truncated frame: -EPROTO");
      ok (flint_frame_recv (sv[1], 1024, &got, &len, NULL, NULL) == 0, "then a clean end of stream");
      free (enc);
    }
    close (sv[1]);
  }

  /* errors: context is prepended, the code kept, the length bounded */
  {
    flint_error_t err = FLINT_ERROR_INIT;
    char big[3000];
    flint_error_set_errno (&err, FLINT_EINTERNAL, ENOENT, "open `%s`", "x");
    flint_error_prefix (&err, "deploy `%s`", "echo");
    is_str (err.msg, "deploy `echo`: open `x`: No such file or directory", "context prepended");
    ok (err.code == FLINT_EINTERNAL, "code kept");
    memset (big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    flint_error_prefix (&err, "%s", big);
    ok (strlen (err.msg) == FLINT_ERROR_MSG_MAX - 1, "a long prefix truncates, never overflows");
  }

  /* JSON strings and proto→JSON */
  {
    flint_buf_t b = FLINT_BUF_INIT;
    Flint__Worker__V1__Pong pong = FLINT__WORKER__V1__PONG__INIT;
    Flint__Worker__V1__Pong__StatsEntry e = FLINT__WORKER__V1__PONG__STATS_ENTRY__INIT, *ep = &e;
    Flint__Worker__V1__Result res = FLINT__WORKER__V1__RESULT__INIT;
    flint_buf_json_string (&b, "q\"\\\n\x01\xff\xc3\xa9", 8);
    is_str (b.data, "\"q\\\"\\\\\\n\\u0001\xef\xbf\xbd\xc3\xa9\"",
            "escapes, control characters, invalid UTF-8 replaced, valid UTF-8 kept");
    flint_buf_reset (&b);
    e.key = (char *) "tok/s";
    e.value = 12.5;
    pong.seq = 7;
    pong.n_stats = 1;
    pong.stats = &ep;
    flint_pbjson_render (&pong.base, &b);
    is_str (b.data, "{\"seq\":7,\"completed\":0,\"stats\":{\"tok/s\":12.5}}", "message with a map");
    flint_buf_reset (&b);
    res.request_id = 1;
    res.message = (char *) "";
    res.data.data = (uint8_t *) "hi!";
    res.data.len = 3;
    flint_pbjson_render (&res.base, &b);
    contains (b.data, "\"data\":\"aGkh\"", "bytes as base64: %s", b.data);
    flint_buf_free (&b);
  }

  /* map */
  {
    flint_map_t m = FLINT_MAP_INIT;
    char key[32];
    int vals[2000], found = 0;
    for (int i = 0; i < 2000; i++)
      {
        vals[i] = i;
        snprintf (key, sizeof key, "k%d", i);
        flint_map_put (&m, key, &vals[i]);
      }
    for (int i = 0; i < 2000; i += 2)
      {
        snprintf (key, sizeof key, "k%d", i);
        flint_map_del (&m, key);
      }
    for (int i = 0; i < 2000; i++)
      {
        snprintf (key, sizeof key, "k%d", i);
        int *p = flint_map_get (&m, key);
        if ((i % 2 == 0 && p == NULL) || (i % 2 == 1 && p && *p == i))
          found++;
      }
    ok (found == 2000 && m.len == 1000, "map put/get/del");
    flint_map_free (&m);
  }
  /* fault lists: whole names only, anywhere in the comma-separated list */
  ok (flint_fault_listed ("snapshot-dump", "snapshot-dump"), "fault: a single name");
  ok (flint_fault_listed ("a,snapshot-dump,b", "snapshot-dump"), "fault: a name in the middle");
  ok (!flint_fault_listed ("snapshot-dumpster", "snapshot-dump"), "fault: a longer name does not match");
  ok (!flint_fault_listed ("snapshot", "snapshot-dump"), "fault: a prefix does not match");
  ok (!flint_fault_listed (NULL, "x") && !flint_fault_listed ("", "x"), "fault: none listed");
  return tap_done ();
}
