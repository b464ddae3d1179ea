/* The baseline of the invoke benchmark: the smallest gRPC C-core server of flint.v1.Flint/Invoke
 * that does the same protocol work as flintd (unpack the InvokeRequest, pack an InvokeResponse
 * carrying the payload back) and nothing else: no event loop, no worker, no sandbox.
 *
 * One thread drains the completion queue and does everything inline, the fastest shape a C-core
 * server takes on a small machine (docs/ARCHITECTURE.md, "the gRPC bridge"). Each call is one
 * batch: send initial metadata + message + status and receive the close, so a call costs one
 * completion.
 *
 * With --spin the thread polls the queue without blocking for 300 µs after each event before it
 * blocks again: the adaptive polling flintd's bridge does (runtime/grpc_server.c). On a virtual
 * machine a blocked thread pays the host's wake-up latency per request; the spinning baseline
 * shows how much of a difference between flintd and the plain server is that policy rather than
 * flintd's work.
 *
 * usage: bench-bare-server [--spin] ADDR  (e.g. 127.0.0.1:0; prints "listening on PORT" once
 *                                          ready, serves until SIGTERM / SIGINT, then prints the
 *                                          count of calls it answered) */
#include "flint/v1/flint.pb-c.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARMED 64

typedef struct call_s {
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array md;
  grpc_byte_buffer *req;
  grpc_byte_buffer *resp;
  int cancelled;
  bool replying;     /* the tag now stands for the reply batch, not the arrival */
} call_t;

static grpc_server *server;
static grpc_completion_queue *cq;
static void *method;
static volatile sig_atomic_t stopping;
static uint64_t answered, failed;

static void
arm (call_t *c)
{
  memset (c, 0, sizeof *c);
  grpc_metadata_array_init (&c->md);
  if (grpc_server_request_registered_call (server, method, &c->call, &c->deadline, &c->md, &c->req, cq, cq, c)
      != GRPC_CALL_OK)
    {
      fprintf (stderr, "bench-bare-server: request_registered_call failed\n");
      exit (1);
    }
}

static void
reply (call_t *c)
{
  static const char replica[] = "bare";
  grpc_byte_buffer_reader rd;
  grpc_slice in, out;
  grpc_op ops[4];
  Flint__V1__InvokeRequest *req = NULL;
  Flint__V1__InvokeResponse resp = FLINT__V1__INVOKE_RESPONSE__INIT;
  grpc_status_code code = GRPC_STATUS_OK;

  in = grpc_empty_slice ();
  if (c->req && grpc_byte_buffer_reader_init (&rd, c->req))
    {
      in = grpc_byte_buffer_reader_readall (&rd);
      grpc_byte_buffer_reader_destroy (&rd);
    }
  req = flint__v1__invoke_request__unpack (NULL, GRPC_SLICE_LENGTH (in), GRPC_SLICE_START_PTR (in));
  if (req == NULL)
    code = GRPC_STATUS_INVALID_ARGUMENT;
  else
    {
      resp.payload = req->payload;
      resp.version = 1;
      resp.replica = (char *) replica;
    }
  out = grpc_slice_malloc (flint__v1__invoke_response__get_packed_size (&resp));
  flint__v1__invoke_response__pack (&resp, GRPC_SLICE_START_PTR (out));
  c->resp = grpc_raw_byte_buffer_create (&out, 1);
  grpc_slice_unref (out);
  grpc_slice_unref (in);
  if (req)
    flint__v1__invoke_request__free_unpacked (req, NULL);

  memset (ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = c->resp;
  ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[2].data.send_status_from_server.status = code;
  ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[3].data.recv_close_on_server.cancelled = &c->cancelled;
  c->replying = true;
  if (grpc_call_start_batch (c->call, ops, 4, c, NULL) != GRPC_CALL_OK)
    {
      fprintf (stderr, "bench-bare-server: start_batch failed\n");
      exit (1);
    }
}

static void
release (call_t *c)
{
  if (c->req)
    grpc_byte_buffer_destroy (c->req);
  if (c->resp)
    grpc_byte_buffer_destroy (c->resp);
  grpc_metadata_array_destroy (&c->md);
  if (c->call)
    grpc_call_unref (c->call);
}

static void
on_signal (int sig)
{
  (void) sig;
  stopping = 1;
}

int
main (int argc, char **argv)
{
  grpc_server_credentials *creds;
  grpc_arg arg = { .type = GRPC_ARG_INTEGER, .key = (char *) GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0 };
  grpc_channel_args args = { .num_args = 1, .args = &arg };
  call_t *calls;
  int port;
  bool shut = false;

  bool spin = argc == 3 && strcmp (argv[1], "--spin") == 0;
  uint64_t last_event_ns = 0;
  const char *addr = argv[argc - 1];

  if (argc != 2 && !spin)
    {
      fprintf (stderr, "usage: bench-bare-server [--spin] ADDR\n");
      return 2;
    }
  signal (SIGTERM, on_signal);
  signal (SIGINT, on_signal);
  grpc_init ();
  cq = grpc_completion_queue_create_for_next (NULL);
  server = grpc_server_create (&args, NULL);
  grpc_server_register_completion_queue (server, cq, NULL);
  method = grpc_server_register_method (server, "/flint.v1.Flint/Invoke", NULL,
                                        GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
  creds = grpc_insecure_server_credentials_create ();
  port = grpc_server_add_http2_port (server, addr, creds);
  grpc_server_credentials_release (creds);
  if (port == 0)
    {
      fprintf (stderr, "bench-bare-server: cannot listen on %s\n", addr);
      return 1;
    }
  grpc_server_start (server);
  calls = calloc (ARMED, sizeof *calls);
  if (calls == NULL)
    return 1;
  for (int i = 0; i < ARMED; i++)
    arm (&calls[i]);
  printf ("listening on %d\n", port);
  fflush (stdout);

  for (;;)
    {
      /* a finite wait so that a signal is noticed; none while spinning */
      gpr_timespec now = gpr_now (GPR_CLOCK_MONOTONIC);
      uint64_t now_ns = (uint64_t) now.tv_sec * 1000000000ull + (uint64_t) now.tv_nsec;
      gpr_timespec until = spin && now_ns - last_event_ns < 300000 ? gpr_inf_past (GPR_CLOCK_MONOTONIC)
                                                                 : gpr_time_add (now, gpr_time_from_millis (200, GPR_TIMESPAN));
      grpc_event ev = grpc_completion_queue_next (cq, until, NULL);
      call_t *c;

      if (ev.type == GRPC_OP_COMPLETE)
        last_event_ns = now_ns;

      if (stopping && !shut)
        {
          shut = true;
          grpc_server_shutdown_and_notify (server, cq, NULL);
          grpc_server_cancel_all_calls (server);
        }
      if (ev.type == GRPC_QUEUE_SHUTDOWN)
        break;
      if (ev.type != GRPC_OP_COMPLETE)
        continue;
      if (ev.tag == NULL)
        {
          /* server shutdown done: nothing more can arrive */
          grpc_completion_queue_shutdown (cq);
          continue;
        }
      c = ev.tag;
      if (!c->replying)
        {
          if (!ev.success)
            {
              release (c); /* a pending request dropped by shutdown */
              continue;
            }
          reply (c);
          continue;
        }
      if (ev.success && !c->cancelled)
        answered++;
      else
        failed++;
      release (c);
      if (!shut)
        arm (c);
    }
  grpc_server_destroy (server);
  grpc_completion_queue_destroy (cq);
  free (calls);
  grpc_shutdown ();
  printf ("answered %llu failed %llu\n", (unsigned long long) answered, (unsigned long long) failed);
  return 0;
}
