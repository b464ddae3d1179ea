/* The load generator of the invoke benchmark: unary flint.v1.Flint/Invoke calls over the gRPC C
 * core, a fixed number of them in flight, each one timed from the start of its batch to its
 * completion (so every request's latency is measured, not inferred from throughput).
 *
 * Targets are measured alternately in the same process (serial latency on each, then each
 * concurrency level on each, for several rounds), so that drift of a shared machine hits both
 * alike. Every answer is checked: status OK and the payload echoed byte for byte; a single
 * failure fails the run (a fast wrong answer is no result).
 *
 * usage: bench-invoke-load [--serial N] [--seconds S] [--rounds R] [--inflight 1,4,16]
 *                          [--payload BYTES] NAME=ADDR[/ENDPOINT] ...
 * Prints one JSON object per line:
 *   {"target":"bare","mode":"serial","inflight":1,"n":..,"p50_us":..,"p99_us":..,"qps":..}
 * and for concurrency levels mode "load", one line per round. */
#include "flint/v1/flint.pb-c.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_TARGETS 4
#define MAX_INFLIGHT 256

typedef struct target_s {
  const char *name;
  char addr[256];
  const char *endpoint;
  grpc_channel *channel;
  grpc_slice request;        /* the serialized InvokeRequest */
} target_t;

typedef struct slot_s {
  grpc_call *call;
  grpc_metadata_array initial_md, trailing_md;
  grpc_byte_buffer *send;
  grpc_byte_buffer *recv;
  grpc_status_code status;
  grpc_slice details;
  uint64_t t0;
} slot_t;

static grpc_completion_queue *cq;
static uint8_t *payload;
static size_t payload_len = 64;

static uint64_t
now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static void
die (const char *what)
{
  fprintf (stderr, "bench-invoke-load: %s\n", what);
  exit (1);
}

static void
start (target_t *t, slot_t *s)
{
  grpc_slice method = grpc_slice_from_static_string ("/flint.v1.Flint/Invoke");
  grpc_op ops[6];

  memset (s, 0, sizeof *s);
  grpc_metadata_array_init (&s->initial_md);
  grpc_metadata_array_init (&s->trailing_md);
  s->send = grpc_raw_byte_buffer_create (&t->request, 1);
  s->call = grpc_channel_create_call (t->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
                                      gpr_inf_future (GPR_CLOCK_REALTIME), NULL);
  memset (ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = s->send;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &s->recv;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.status = &s->status;
  ops[5].data.recv_status_on_client.status_details = &s->details;
  ops[5].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
  s->t0 = now_ns ();
  if (grpc_call_start_batch (s->call, ops, 6, s, NULL) != GRPC_CALL_OK)
    die ("grpc_call_start_batch failed");
}

/* Checks the answer and releases the call. Exits on a wrong answer. */
static void
finish (target_t *t, slot_t *s, bool ok)
{
  grpc_byte_buffer_reader rd;
  grpc_slice body;
  Flint__V1__InvokeResponse *resp;

  if (!ok || s->status != GRPC_STATUS_OK)
    {
      char *d = grpc_slice_to_c_string (s->details);
      fprintf (stderr, "bench-invoke-load: %s: call failed: status %d: %s\n", t->name, (int) s->status, d);
      gpr_free (d);
      exit (1);
    }
  if (s->recv == NULL || !grpc_byte_buffer_reader_init (&rd, s->recv))
    die ("no reply message");
  body = grpc_byte_buffer_reader_readall (&rd);
  grpc_byte_buffer_reader_destroy (&rd);
  resp = flint__v1__invoke_response__unpack (NULL, GRPC_SLICE_LENGTH (body), GRPC_SLICE_START_PTR (body));
  if (resp == NULL || resp->payload.len != payload_len || memcmp (resp->payload.data, payload, payload_len) != 0)
    {
      fprintf (stderr, "bench-invoke-load: %s: wrong answer\n", t->name);
      exit (1);
    }
  flint__v1__invoke_response__free_unpacked (resp, NULL);
  grpc_slice_unref (body);
  grpc_byte_buffer_destroy (s->recv);
  grpc_byte_buffer_destroy (s->send);
  grpc_slice_unref (s->details);
  grpc_metadata_array_destroy (&s->initial_md);
  grpc_metadata_array_destroy (&s->trailing_md);
  grpc_call_unref (s->call);
}

static int
cmp_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
  return x < y ? -1 : x > y;
}

static double
quantile_us (uint64_t *v, size_t n, double q)
{
  size_t i;
  if (n == 0)
    return 0;
  i = (size_t) (q * (double) (n - 1) + 0.5);
  return (double) v[i] / 1000.0;
}

/* Runs `inflight` calls at a time on `t` until `count` calls completed (count > 0) or `secs`
 * seconds passed. Latencies go to lat (grown as needed); returns the number completed. */
static size_t
run (target_t *t, int inflight, size_t count, double secs, uint64_t **lat, size_t *cap, double *elapsed_s)
{
  slot_t slots[MAX_INFLIGHT];
  size_t done = 0, started = 0;
  int active = 0;
  uint64_t t0 = now_ns (), stop_at = t0 + (uint64_t) (secs * 1e9);
  bool stopping = false;

  for (int i = 0; i < inflight; i++)
    {
      start (t, &slots[i]);
      started++;
      active++;
    }
  while (active > 0)
    {
      grpc_event ev = grpc_completion_queue_next (cq, gpr_inf_future (GPR_CLOCK_MONOTONIC), NULL);
      slot_t *s;
      uint64_t now;

      if (ev.type != GRPC_OP_COMPLETE)
        die ("unexpected completion queue event");
      now = now_ns ();
      s = ev.tag;
      finish (t, s, ev.success);
      active--;
      if (done == *cap)
        {
          *cap = *cap ? *cap * 2 : 65536;
          *lat = realloc (*lat, *cap * sizeof **lat);
          if (*lat == NULL)
            die ("out of memory");
        }
      (*lat)[done++] = now - s->t0;
      if (count ? started >= count : now >= stop_at)
        stopping = true;
      if (!stopping)
        {
          start (t, s);
          started++;
          active++;
        }
    }
  *elapsed_s = (double) (now_ns () - t0) / 1e9;
  return done;
}

static void
report (const target_t *t, const char *mode, int inflight, int round, uint64_t *lat, size_t n, double elapsed)
{
  qsort (lat, n, sizeof *lat, cmp_u64);
  printf ("{\"target\":\"%s\",\"mode\":\"%s\",\"inflight\":%d,\"round\":%d,\"n\":%zu,\"seconds\":%.3f,"
          "\"qps\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f}\n",
          t->name, mode, inflight, round, n, elapsed, (double) n / elapsed, quantile_us (lat, n, 0.50),
          quantile_us (lat, n, 0.90), quantile_us (lat, n, 0.99), quantile_us (lat, n, 1.0));
  fflush (stdout);
}

int
main (int argc, char **argv)
{
  target_t targets[MAX_TARGETS];
  size_t ntargets = 0, serial = 20000, cap = 0;
  int levels[8] = { 1, 4, 16 }, nlevels = 3, rounds = 3;
  double seconds = 3;
  uint64_t *lat = NULL;
  grpc_channel_credentials *creds;

  for (int i = 1; i < argc; i++)
    {
      if (strcmp (argv[i], "--serial") == 0 && i + 1 < argc)
        serial = strtoul (argv[++i], NULL, 10);
      else if (strcmp (argv[i], "--seconds") == 0 && i + 1 < argc)
        seconds = strtod (argv[++i], NULL);
      else if (strcmp (argv[i], "--rounds") == 0 && i + 1 < argc)
        rounds = atoi (argv[++i]);
      else if (strcmp (argv[i], "--payload") == 0 && i + 1 < argc)
        payload_len = strtoul (argv[++i], NULL, 10);
      else if (strcmp (argv[i], "--inflight") == 0 && i + 1 < argc)
        {
          char *p = argv[++i];
          nlevels = 0;
          while (*p && nlevels < 8)
            {
              levels[nlevels] = (int) strtol (p, &p, 10);
              if (levels[nlevels] < 1 || levels[nlevels] > MAX_INFLIGHT)
                die ("--inflight: each level must be 1..256");
              nlevels++;
              if (*p == ',')
                p++;
            }
        }
      else if (strchr (argv[i], '=') && ntargets < MAX_TARGETS)
        {
          target_t *t = &targets[ntargets++];
          char *eq = strchr (argv[i], '='), *slash;
          memset (t, 0, sizeof *t);
          *eq = '\0';
          t->name = argv[i];
          t->endpoint = "echo";
          /* NAME=ADDR/ENDPOINT; a unix: address keeps its slashes (no endpoint suffix then) */
          slash = strncmp (eq + 1, "unix:", 5) != 0 ? strrchr (eq + 1, '/') : NULL;
          if (slash)
            {
              *slash = '\0';
              t->endpoint = slash + 1;
            }
          snprintf (t->addr, sizeof t->addr, "%s", eq + 1);
        }
      else
        {
          fprintf (stderr, "usage: bench-invoke-load [--serial N] [--seconds S] [--rounds R] [--inflight 1,4,16] "
                           "[--payload BYTES] NAME=ADDR[/ENDPOINT] ...\n");
          return 2;
        }
    }
  if (ntargets == 0)
    die ("no target given");

  payload = malloc (payload_len ? payload_len : 1);
  for (size_t i = 0; i < payload_len; i++)
    payload[i] = (uint8_t) ('a' + i % 26);

  grpc_init ();
  cq = grpc_completion_queue_create_for_next (NULL);
  creds = grpc_insecure_credentials_create ();
  for (size_t k = 0; k < ntargets; k++)
    {
      target_t *t = &targets[k];
      Flint__V1__InvokeRequest req = FLINT__V1__INVOKE_REQUEST__INIT;
      double el;

      t->channel = grpc_channel_create (t->addr, creds, NULL);
      req.endpoint = (char *) t->endpoint;
      req.payload.data = payload;
      req.payload.len = payload_len;
      t->request = grpc_slice_malloc (flint__v1__invoke_request__get_packed_size (&req));
      flint__v1__invoke_request__pack (&req, GRPC_SLICE_START_PTR (t->request));
      /* warm-up: connection, HTTP/2 windows, the server's first replica */
      run (t, 1, 2000, 0, &lat, &cap, &el);
      run (t, levels[nlevels - 1], 4000, 0, &lat, &cap, &el);
    }
  grpc_channel_credentials_release (creds);

  for (int round = 0; round < rounds; round++)
    {
      for (size_t k = 0; k < ntargets; k++)
        {
          double el;
          size_t n = run (&targets[k], 1, serial, 0, &lat, &cap, &el);
          report (&targets[k], "serial", 1, round, lat, n, el);
        }
      for (int l = 0; l < nlevels; l++)
        for (size_t k = 0; k < ntargets; k++)
          {
            double el;
            size_t n = run (&targets[k], levels[l], 0, seconds, &lat, &cap, &el);
            report (&targets[k], "load", levels[l], round, lat, n, el);
          }
    }

  for (size_t k = 0; k < ntargets; k++)
    {
      grpc_channel_destroy (targets[k].channel);
      grpc_slice_unref (targets[k].request);
    }
  grpc_completion_queue_shutdown (cq);
  while (grpc_completion_queue_next (cq, gpr_inf_future (GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN)
    ;
  grpc_completion_queue_destroy (cq);
  free (lat);
  free (payload);
  grpc_shutdown ();
  return 0;
}
