/* Synchronous gRPC client on a pluck completion queue. See client.h. */
#include "client.h"
#include "flint/util.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdlib.h>
#include <string.h>

struct flint_client_s {
  grpc_channel *channel;
  grpc_completion_queue *cq;
};

struct flint_client_call_s {
  flint_client_t *c;
  grpc_call *call;
  bool broken;
};

int
flint_client_new (const char *addr, flint_client_t **out, flint_error_t *err)
{
  flint_client_t *c = calloc (1, sizeof *c);
  grpc_channel_credentials *creds;
  grpc_arg args[2];
  grpc_channel_args cargs = { .num_args = 2, .args = args };

  if (c == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  grpc_init ();
  memset (args, 0, sizeof args);
  args[0].type = GRPC_ARG_INTEGER;
  args[0].key = (char *) GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
  args[0].value.integer = (1 << 30) + (1 << 20);
  args[1].type = GRPC_ARG_INTEGER;
  args[1].key = (char *) GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
  args[1].value.integer = (1 << 30) + (1 << 20);
  creds = grpc_insecure_credentials_create ();
  c->channel = grpc_channel_create (addr, creds, &cargs);
  grpc_channel_credentials_release (creds);
  c->cq = grpc_completion_queue_create_for_pluck (NULL);
  if (c->channel == NULL || c->cq == NULL)
    {
      flint_client_free (c);
      return flint_error_set (err, FLINT_EINTERNAL, "cannot create a channel to `%s`", addr);
    }
  *out = c;
  return 0;
}

void
flint_client_free (flint_client_t *c)
{
  if (c == NULL)
    return;
  if (c->channel)
    grpc_channel_destroy (c->channel);
  if (c->cq)
    {
      grpc_completion_queue_shutdown (c->cq);
      while (grpc_completion_queue_pluck (c->cq, NULL, gpr_inf_future (GPR_CLOCK_REALTIME), NULL).type
             != GRPC_QUEUE_SHUTDOWN)
        ;
      grpc_completion_queue_destroy (c->cq);
    }
  free (c);
  grpc_shutdown ();
}

static gpr_timespec
deadline_of (uint64_t timeout_ms)
{
  if (timeout_ms == 0)
    return gpr_inf_future (GPR_CLOCK_REALTIME);
  return gpr_time_add (gpr_now (GPR_CLOCK_REALTIME), gpr_time_from_millis ((int64_t) timeout_ms, GPR_TIMESPAN));
}

static grpc_call *
new_call (flint_client_t *c, const char *method, uint64_t timeout_ms)
{
  grpc_slice m = grpc_slice_from_copied_string (method);
  grpc_call *call = grpc_channel_create_call (c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, m, NULL,
                                              deadline_of (timeout_ms), NULL);
  grpc_slice_unref (m);
  return call;
}

static bool
run_batch (flint_client_t *c, grpc_call *call, grpc_op *ops, size_t n, void *tag)
{
  grpc_event ev;
  if (grpc_call_start_batch (call, ops, n, tag, NULL) != GRPC_CALL_OK)
    return false;
  ev = grpc_completion_queue_pluck (c->cq, tag, gpr_inf_future (GPR_CLOCK_REALTIME), NULL);
  return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static uint8_t *
flatten (grpc_byte_buffer *bb, size_t *len_out)
{
  grpc_byte_buffer_reader rd;
  grpc_slice s;
  uint8_t *buf;

  *len_out = 0;
  if (bb == NULL || !grpc_byte_buffer_reader_init (&rd, bb))
    return calloc (1, 1);
  s = grpc_byte_buffer_reader_readall (&rd);
  grpc_byte_buffer_reader_destroy (&rd);
  *len_out = GRPC_SLICE_LENGTH (s);
  buf = malloc (*len_out ? *len_out : 1);
  if (buf)
    memcpy (buf, GRPC_SLICE_START_PTR (s), *len_out);
  grpc_slice_unref (s);
  return buf;
}

static int
status_to_err (grpc_status_code status, grpc_slice details, flint_error_t *err)
{
  char *d = grpc_slice_to_c_string (details);
  int r = 0;

  if (status != GRPC_STATUS_OK)
    {
      if (status == GRPC_STATUS_UNAVAILABLE && (d == NULL || *d == '\0' || strstr (d, "failed to connect")
                                                || strstr (d, "Connection refused") || strstr (d, "No such file")))
        r = flint_error_set (err, FLINT_EUNAVAILABLE, "cannot reach flintd (%s): is it running?", d ? d : "");
      else
        r = flint_error_set (err, (flint_status_t) status, "%s", d && *d ? d : flint_status_name ((flint_status_t) status));
    }
  gpr_free (d);
  return r;
}

int
flint_client_unary (flint_client_t *c, const char *method, const void *req, size_t len, uint64_t timeout_ms,
                    uint8_t **resp_out, size_t *resp_len_out, flint_error_t *err)
{
  grpc_call *call = new_call (c, method, timeout_ms);
  grpc_slice s = grpc_slice_from_copied_buffer (req, len);
  grpc_byte_buffer *send = grpc_raw_byte_buffer_create (&s, 1);
  grpc_byte_buffer *recv = NULL;
  grpc_metadata_array md_initial, md_trailing;
  grpc_status_code status = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice ();
  grpc_op ops[6];
  int r;

  grpc_slice_unref (s);
  grpc_metadata_array_init (&md_initial);
  grpc_metadata_array_init (&md_trailing);
  memset (ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = send;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_initial;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &recv;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.status = &status;
  ops[5].data.recv_status_on_client.status_details = &details;
  ops[5].data.recv_status_on_client.trailing_metadata = &md_trailing;
  run_batch (c, call, ops, 6, (void *) 1);
  r = status_to_err (status, details, err);
  if (r == 0)
    {
      *resp_out = flatten (recv, resp_len_out);
      if (*resp_out == NULL)
        r = flint_error_set (err, FLINT_EINTERNAL, "out of memory");
    }
  if (recv)
    grpc_byte_buffer_destroy (recv);
  grpc_byte_buffer_destroy (send);
  grpc_slice_unref (details);
  grpc_metadata_array_destroy (&md_initial);
  grpc_metadata_array_destroy (&md_trailing);
  grpc_call_unref (call);
  return r;
}

int
flint_client_server_stream (flint_client_t *c, const char *method, const void *req, size_t len,
                            uint64_t timeout_ms, flint_client_msg_cb cb, void *ud, flint_error_t *err)
{
  grpc_call *call = new_call (c, method, timeout_ms);
  grpc_slice s = grpc_slice_from_copied_buffer (req, len);
  grpc_byte_buffer *send = grpc_raw_byte_buffer_create (&s, 1);
  grpc_metadata_array md_initial, md_trailing;
  grpc_status_code status = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice ();
  grpc_op ops[4];
  int r;

  grpc_slice_unref (s);
  grpc_metadata_array_init (&md_initial);
  grpc_metadata_array_init (&md_trailing);
  memset (ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = send;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_initial;
  run_batch (c, call, ops, 4, (void *) 1);
  for (;;)
    {
      grpc_byte_buffer *recv = NULL;
      grpc_op op;
      uint8_t *msg;
      size_t mlen;

      memset (&op, 0, sizeof op);
      op.op = GRPC_OP_RECV_MESSAGE;
      op.data.recv_message.recv_message = &recv;
      if (!run_batch (c, call, &op, 1, (void *) 2) || recv == NULL)
        break;
      msg = flatten (recv, &mlen);
      grpc_byte_buffer_destroy (recv);
      if (msg == NULL || cb (msg, mlen, ud) < 0)
        {
          free (msg);
          grpc_call_cancel (call, NULL);
          break;
        }
      free (msg);
    }
  memset (ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[0].data.recv_status_on_client.status = &status;
  ops[0].data.recv_status_on_client.status_details = &details;
  ops[0].data.recv_status_on_client.trailing_metadata = &md_trailing;
  run_batch (c, call, ops, 1, (void *) 3);
  r = status == GRPC_STATUS_CANCELLED ? 0 : status_to_err (status, details, err);
  grpc_byte_buffer_destroy (send);
  grpc_slice_unref (details);
  grpc_metadata_array_destroy (&md_initial);
  grpc_metadata_array_destroy (&md_trailing);
  grpc_call_unref (call);
  return r;
}

int
flint_client_stream_open (flint_client_t *c, const char *method, uint64_t timeout_ms, flint_client_call_t **out,
                          flint_error_t *err)
{
  flint_client_call_t *call = calloc (1, sizeof *call);
  grpc_op op;

  if (call == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  call->c = c;
  call->call = new_call (c, method, timeout_ms);
  memset (&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_INITIAL_METADATA;
  if (!run_batch (c, call->call, &op, 1, (void *) 1))
    call->broken = true;
  *out = call;
  return 0;
}

int
flint_client_stream_send (flint_client_call_t *call, const void *msg, size_t len)
{
  grpc_slice s;
  grpc_byte_buffer *bb;
  grpc_op op;
  bool ok;

  if (call->broken)
    return -1;
  s = grpc_slice_from_copied_buffer (msg, len);
  bb = grpc_raw_byte_buffer_create (&s, 1);
  grpc_slice_unref (s);
  memset (&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_MESSAGE;
  op.data.send_message.send_message = bb;
  ok = run_batch (call->c, call->call, &op, 1, (void *) 2);
  grpc_byte_buffer_destroy (bb);
  if (!ok)
    call->broken = true;
  return ok ? 0 : -1;
}

int
flint_client_stream_finish (flint_client_call_t *call, uint8_t **resp_out, size_t *resp_len_out, flint_error_t *err)
{
  grpc_byte_buffer *recv = NULL;
  grpc_metadata_array md_initial, md_trailing;
  grpc_status_code status = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice ();
  grpc_op ops[4];
  size_t n = 0;
  int r;

  grpc_metadata_array_init (&md_initial);
  grpc_metadata_array_init (&md_trailing);
  memset (ops, 0, sizeof ops);
  if (!call->broken)
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[n++].data.recv_initial_metadata.recv_initial_metadata = &md_initial;
  ops[n].op = GRPC_OP_RECV_MESSAGE;
  ops[n++].data.recv_message.recv_message = &recv;
  ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[n].data.recv_status_on_client.status = &status;
  ops[n].data.recv_status_on_client.status_details = &details;
  ops[n++].data.recv_status_on_client.trailing_metadata = &md_trailing;
  if (!run_batch (call->c, call->call, ops, n, (void *) 3) && status == GRPC_STATUS_UNKNOWN)
    {
      /* a batch refused as a whole (the call already ended): ask for the status alone */
      memset (ops, 0, sizeof ops);
      ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
      ops[0].data.recv_status_on_client.status = &status;
      ops[0].data.recv_status_on_client.status_details = &details;
      ops[0].data.recv_status_on_client.trailing_metadata = &md_trailing;
      run_batch (call->c, call->call, ops, 1, (void *) 4);
    }
  r = status_to_err (status, details, err);
  if (r == 0)
    *resp_out = flatten (recv, resp_len_out);
  if (recv)
    grpc_byte_buffer_destroy (recv);
  grpc_slice_unref (details);
  grpc_metadata_array_destroy (&md_initial);
  grpc_metadata_array_destroy (&md_trailing);
  grpc_call_unref (call->call);
  free (call);
  return r;
}
