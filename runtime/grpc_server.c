/* gRPC C-core ⇄ libuv bridge. See grpc_server.h for the threading contract.
 *
 * Every operation batch started on a call carries a `tag_t` embedded in the rpc; the tag says
 * which completion it is. An rpc is reference counted: one reference per batch in flight plus
 * one held by the loop between arrival and finish. Whichever thread drops the last one frees
 * the rpc (gRPC's call unref is thread-safe).
 *
 * Two pollers, one at a time. Completion-queue events are handled by handle_event() on
 * whichever thread drained them: the CQ thread (which hands the loop what it must see through
 * post()) or the loop itself (which delivers at once). While traffic flows the loop polls the
 * queue without blocking from an idle handle and the CQ thread is parked: no thread hop at all
 * on the hot path. After SPIN_NS without a gRPC event the loop hands polling back to the CQ
 * thread and sleeps in epoll, so an idle flintd burns nothing; the first event posted by the
 * CQ thread brings the loop back to polling. Handing over is lazy on the CQ thread's side (it
 * parks after the event it is blocked on), and both threads may drain the queue for that
 * moment: everything handle_event() touches is safe from either thread, and a cancellation
 * that overtakes its call's arrival is held until the arrival has been delivered.
 *
 * A unary call answered within WATCH_MS costs two batches, as in a bare C-core server: the
 * armed request, and the reply (initial metadata, message, status) carrying the call's
 * RECV_CLOSE_ON_SERVER. Only a call still running after WATCH_MS starts RECV_CLOSE_ON_SERVER on
 * its own (watch_cb), so that a client's cancel reaches a request that waits in the activator
 * queue or runs in a worker; streaming calls start it at arrival. Starting it at arrival for
 * every call cost an extra batch and completion per call: measured at 16 calls in flight, about
 * a fifth of the throughput (docs/BENCHMARKS.md, invoke). With it, flintd's gRPC side costs
 * about what the bare server's does; C core's own work and one TCP sendmsg per reply dominate
 * both. While the loop polls, an iteration that finds nothing costs an epoll_wait in libuv, one
 * inside gRPC and a sched_yield; under saturation such iterations vanish (about two system
 * calls per call in all). */
#include "grpc_server.h"
#include "flint/cleanup.h"
#include "flint/list.h"
#include "flint/util.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_METHODS 32

/* How long the loop keeps polling the completion queue after the last gRPC event before it
 * hands polling back to the CQ thread. Longer than a client's think time between serial calls
 * on a loaded 2-core machine (tens of µs), short enough that an idle flintd spins for
 * nothing noticeable. */
#define SPIN_NS 300000ull

/* A unary call still unanswered this long after its arrival starts watching for the client's
 * cancel (RECV_CLOSE_ON_SERVER); one answered sooner receives the close with its reply. */
#define WATCH_MS 1

typedef enum tag_kind_e {
  TAG_NEW,       /* request_registered_call completed: a call arrived */
  TAG_CLOSE,     /* RECV_CLOSE_ON_SERVER completed: the call is over (maybe cancelled) */
  TAG_SEND,      /* a send batch completed */
  TAG_RECV,      /* a RECV_MESSAGE completed (client streaming) */
  TAG_SHUTDOWN,  /* server shutdown completed */
} tag_kind_t;

typedef struct tag_s {
  tag_kind_t kind;
  flint_rpc_t *rpc;
} tag_t;

typedef struct method_s {
  flint_grpc_server_t *srv;
  char *path;
  void *handle;             /* from grpc_server_register_method */
  flint_rpc_kind_t kind;
  flint_rpc_arrived_cb cb;
  void *data;
} method_t;

/* One queued outgoing message (streaming) or the final status. */
typedef struct send_item_s {
  struct send_item_s *next;
  grpc_byte_buffer *msg;    /* NULL for a status-only item */
  bool final;
  bool recv_close;          /* the call's RECV_CLOSE_ON_SERVER goes with this (final) batch */
  int code;
} send_item_t;

typedef enum ev_kind_e { EV_ARRIVED, EV_CANCELLED, EV_RECV } ev_kind_t;

typedef struct event_s {
  struct event_s *next;
  ev_kind_t kind;
  flint_rpc_t *rpc;
  uint8_t *msg;             /* EV_RECV: flattened message (owned) */
  size_t len;
  bool end, ok;
  bool embedded;            /* part of the rpc, not malloc'ed */
} event_t;

struct flint_rpc_s {
  flint_grpc_server_t *srv;
  method_t *method;
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array md;
  grpc_byte_buffer *payload;
  uint8_t *req;
  size_t req_len;
  atomic_int refs;
  int close_cancelled;      /* written by gRPC when TAG_CLOSE completes */
  atomic_bool closed;
  atomic_bool finished;     /* the loop called finish */

  tag_t tag_new, tag_close, tag_send, tag_recv;
  event_t ev_arrived, ev_cancelled;

  /* send pacing: protected by mu */
  pthread_mutex_t mu;
  send_item_t *sq_head, *sq_tail;
  send_item_t *in_flight;
  bool sent_initial_md;
  grpc_slice status_details;
  bool have_details;

  /* client streaming */
  grpc_byte_buffer *recv_buf;
  flint_rpc_recv_cb recv_cb;
  void *recv_data;

  flint_rpc_cancel_cb cancel_cb;
  void *cancel_data;
  void *data;

  /* loop thread only */
  bool close_armed;         /* RECV_CLOSE_ON_SERVER started (always, except for young unary calls) */
  flint_list_t watch_link;  /* in srv->watch while a unary call has not armed it yet */
  uint64_t arrived_ns;
  bool arrived;             /* the arrival callback ran */
  bool cancel_held;         /* a cancellation overtook the arrival (two pollers): deliver after */
};

struct flint_grpc_server_s {
  uv_loop_t *loop;
  grpc_server *server;
  grpc_completion_queue *cq;
  method_t methods[MAX_METHODS];
  size_t n_methods;
  pthread_t cq_thread;
  bool started;
  atomic_bool shutting_down;
  tag_t tag_shutdown;

  uv_async_t *async;        /* separately allocated: freed by its close callback */
  pthread_mutex_t evlock;
  event_t *ev_head, *ev_tail;
  atomic_int live_rpcs;

  /* who polls the completion queue: the loop (CQ thread parked) or the CQ thread */
  atomic_bool loop_polls;
  pthread_mutex_t park_mu;
  pthread_cond_t park_cv;
  uv_idle_t *idle;          /* the loop's polling; separately allocated like async */
  uint64_t last_event_ns;   /* loop thread: last gRPC event it handled */

  /* unary calls not yet watching for cancellation, oldest first (loop thread) */
  flint_list_t watch;
  uv_timer_t *watch_timer;  /* separately allocated like async */
};

/* ---- rpc lifetime -------------------------------------------------------------------- */

static void
rpc_ref (flint_rpc_t *rpc)
{
  atomic_fetch_add_explicit (&rpc->refs, 1, memory_order_relaxed);
}

static void
rpc_unref (flint_rpc_t *rpc)
{
  if (atomic_fetch_sub_explicit (&rpc->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (rpc->call)
    grpc_call_unref (rpc->call);
  grpc_metadata_array_destroy (&rpc->md);
  if (rpc->payload)
    grpc_byte_buffer_destroy (rpc->payload);
  if (rpc->recv_buf)
    grpc_byte_buffer_destroy (rpc->recv_buf);
  for (send_item_t *it = rpc->sq_head, *next; it; it = next)
    {
      next = it->next;
      if (it->msg)
        grpc_byte_buffer_destroy (it->msg);
      free (it);
    }
  if (rpc->in_flight)
    {
      if (rpc->in_flight->msg)
        grpc_byte_buffer_destroy (rpc->in_flight->msg);
      free (rpc->in_flight);
    }
  if (rpc->have_details)
    grpc_slice_unref (rpc->status_details);
  pthread_mutex_destroy (&rpc->mu);
  free (rpc->req);
  atomic_fetch_sub (&rpc->srv->live_rpcs, 1);
  free (rpc);
}

static flint_rpc_t *
rpc_new (method_t *m)
{
  flint_rpc_t *rpc = calloc (1, sizeof *rpc);
  if (rpc == NULL)
    abort ();
  rpc->srv = m->srv;
  rpc->method = m;
  grpc_metadata_array_init (&rpc->md);
  pthread_mutex_init (&rpc->mu, NULL);
  rpc->tag_new = (tag_t) { TAG_NEW, rpc };
  rpc->tag_close = (tag_t) { TAG_CLOSE, rpc };
  rpc->tag_send = (tag_t) { TAG_SEND, rpc };
  rpc->tag_recv = (tag_t) { TAG_RECV, rpc };
  rpc->ev_arrived = (event_t) { .kind = EV_ARRIVED, .rpc = rpc, .embedded = true };
  rpc->ev_cancelled = (event_t) { .kind = EV_CANCELLED, .rpc = rpc, .embedded = true };
  flint_list_init (&rpc->watch_link);
  atomic_init (&rpc->refs, 1); /* the pending request */
  atomic_fetch_add (&m->srv->live_rpcs, 1);
  return rpc;
}

/* Arms one request for a new call of method `m`. CQ thread or start. */
static void
request_call (method_t *m)
{
  flint_rpc_t *rpc;
  grpc_call_error e;

  if (atomic_load (&m->srv->shutting_down))
    return;
  rpc = rpc_new (m);
  e = grpc_server_request_registered_call (m->srv->server, m->handle, &rpc->call, &rpc->deadline, &rpc->md,
                                           m->kind == FLINT_RPC_CLIENT_STREAM ? NULL : &rpc->payload,
                                           m->srv->cq, m->srv->cq, &rpc->tag_new);
  if (e != GRPC_CALL_OK)
    rpc_unref (rpc);
}

/* ---- events to the loop -------------------------------------------------------------- */

static void loop_poll_begin (flint_grpc_server_t *srv);

/* Starts watching for closure / cancellation (RECV_CLOSE_ON_SERVER). Any thread for a new
 * streaming call; the loop thread for a unary one. */
static void
arm_close (flint_rpc_t *rpc)
{
  grpc_op op;

  rpc->close_armed = true;
  memset (&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &rpc->close_cancelled;
  rpc_ref (rpc);
  if (grpc_call_start_batch (rpc->call, &op, 1, &rpc->tag_close, NULL) != GRPC_CALL_OK)
    atomic_fetch_sub (&rpc->refs, 1);
}

/* Loop thread: arms the watch of every unary call older than WATCH_MS. */
static void
watch_cb (uv_timer_t *t)
{
  flint_grpc_server_t *srv = t->data;
  uint64_t now = flint_now_ns ();

  while (!flint_list_empty (&srv->watch))
    {
      flint_rpc_t *rpc = flint_list_entry (srv->watch.next, flint_rpc_t, watch_link);
      if (now - rpc->arrived_ns < WATCH_MS * 1000000ull)
        break;
      flint_list_remove (&rpc->watch_link);
      arm_close (rpc);
    }
  if (flint_list_empty (&srv->watch))
    uv_timer_stop (t);
}

/* Loop thread: a unary call starts its life unwatched (most are answered within WATCH_MS, and
 * then the close comes with the reply: one batch and one completion fewer per call). */
static void
watch_later (flint_rpc_t *rpc)
{
  flint_grpc_server_t *srv = rpc->srv;

  rpc->arrived_ns = flint_now_ns ();
  flint_list_insert_tail (&srv->watch, &rpc->watch_link);
  if (srv->watch_timer && !uv_is_active ((uv_handle_t *) srv->watch_timer))
    uv_timer_start (srv->watch_timer, watch_cb, WATCH_MS, WATCH_MS);
}

/* Runs one event's callback on the loop thread and drops the reference the event held. */
static void
deliver (event_t *ev)
{
  flint_rpc_t *rpc = ev->rpc;
  bool embedded = ev->embedded; /* the rpc, and an event inside it, may be freed below */

  switch (ev->kind)
    {
    case EV_ARRIVED:
      rpc->arrived = true;
      if (!rpc->close_armed)
        watch_later (rpc);
      if (!rpc->cancel_held)
        {
          rpc->method->cb (rpc, rpc->method->data); /* may finish, and so free, the rpc */
          break;
        }
      rpc_ref (rpc);
      rpc->method->cb (rpc, rpc->method->data);
      if (!atomic_load (&rpc->finished) && rpc->cancel_cb)
        {
          flint_rpc_cancel_cb cb = rpc->cancel_cb;
          rpc->cancel_cb = NULL;
          cb (rpc, rpc->cancel_data);
        }
      rpc_unref (rpc);
      break;
    case EV_CANCELLED:
      if (!rpc->arrived)
        rpc->cancel_held = true; /* the arrival holds a reference: the rpc outlives this */
      else if (!atomic_load (&rpc->finished) && rpc->cancel_cb)
        {
          flint_rpc_cancel_cb cb = rpc->cancel_cb;
          rpc->cancel_cb = NULL;
          cb (rpc, rpc->cancel_data);
        }
      rpc_unref (rpc);
      break;
    case EV_RECV:
      if (rpc->recv_cb && !atomic_load (&rpc->finished))
        {
          flint_rpc_recv_cb cb = rpc->recv_cb;
          rpc->recv_cb = NULL;
          cb (rpc, ev->msg, ev->len, ev->end, ev->ok, rpc->recv_data);
        }
      rpc_unref (rpc);
      break;
    }
  if (!embedded)
    {
      free (ev->msg);
      free (ev);
    }
}

/* From the CQ thread: queues the event for the loop. */
static void
post (flint_grpc_server_t *srv, event_t *ev)
{
  pthread_mutex_lock (&srv->evlock);
  ev->next = NULL;
  if (srv->ev_tail)
    srv->ev_tail->next = ev;
  else
    srv->ev_head = ev;
  srv->ev_tail = ev;
  pthread_mutex_unlock (&srv->evlock);
  uv_async_send (srv->async); /* libuv coalesces: one wake-up for a burst */
}

/* Where an event goes: straight to its callback when the loop itself drained it. */
static void
emit (flint_grpc_server_t *srv, event_t *ev, bool on_loop)
{
  if (on_loop)
    deliver (ev);
  else
    post (srv, ev);
}

/* Delivers what the CQ thread posted, in order. Returns the number of events. */
static size_t
drain_posted (flint_grpc_server_t *srv)
{
  event_t *ev;
  size_t n = 0;

  pthread_mutex_lock (&srv->evlock);
  ev = srv->ev_head;
  srv->ev_head = srv->ev_tail = NULL;
  pthread_mutex_unlock (&srv->evlock);
  while (ev)
    {
      event_t *next = ev->next;
      deliver (ev);
      ev = next;
      n++;
    }
  return n;
}

static void
async_cb (uv_async_t *h)
{
  flint_grpc_server_t *srv = h->data;

  /* Traffic reached the CQ thread: the loop takes the polling over for the burst. */
  if (drain_posted (srv) > 0 && !atomic_load (&srv->shutting_down))
    loop_poll_begin (srv);
}

/* ---- sending ------------------------------------------------------------------------- */

/* Starts the next queued send if none is in flight. Caller holds rpc->mu. */
static void
pump_sends_locked (flint_rpc_t *rpc)
{
  grpc_op ops[4];
  size_t n = 0;
  send_item_t *it;

  if (rpc->in_flight || rpc->sq_head == NULL)
    return;
  it = rpc->sq_head;
  rpc->sq_head = it->next;
  if (rpc->sq_head == NULL)
    rpc->sq_tail = NULL;
  memset (ops, 0, sizeof ops);
  if (!rpc->sent_initial_md)
    {
      ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
      n++;
      rpc->sent_initial_md = true;
    }
  if (it->msg)
    {
      ops[n].op = GRPC_OP_SEND_MESSAGE;
      ops[n].data.send_message.send_message = it->msg;
      n++;
    }
  if (it->final)
    {
      ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
      ops[n].data.send_status_from_server.status = (grpc_status_code) it->code;
      ops[n].data.send_status_from_server.status_details = rpc->have_details ? &rpc->status_details : NULL;
      n++;
    }
  if (it->recv_close)
    {
      ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
      ops[n].data.recv_close_on_server.cancelled = &rpc->close_cancelled;
      n++;
    }
  rpc->in_flight = it;
  rpc_ref (rpc);
  if (grpc_call_start_batch (rpc->call, ops, n, &rpc->tag_send, NULL) != GRPC_CALL_OK)
    {
      /* the call is unusable; drop everything queued */
      rpc->in_flight = NULL;
      if (it->msg)
        grpc_byte_buffer_destroy (it->msg);
      free (it);
      atomic_fetch_sub (&rpc->refs, 1); /* cannot be the last: the caller holds one */
    }
}

static void
enqueue_send (flint_rpc_t *rpc, send_item_t *it)
{
  pthread_mutex_lock (&rpc->mu);
  if (rpc->sq_tail)
    rpc->sq_tail->next = it;
  else
    rpc->sq_head = it;
  rpc->sq_tail = it;
  pump_sends_locked (rpc);
  pthread_mutex_unlock (&rpc->mu);
}

static grpc_byte_buffer *
make_buffer (const void *msg, size_t len)
{
  grpc_slice s = grpc_slice_from_copied_buffer (msg, len);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create (&s, 1);
  grpc_slice_unref (s);
  return bb;
}

/* ---- the CQ thread ------------------------------------------------------------------- */

static uint8_t *
flatten (grpc_byte_buffer *bb, size_t *len_out)
{
  grpc_byte_buffer_reader rd;
  grpc_slice s;
  uint8_t *buf;
  size_t len;

  if (bb == NULL || !grpc_byte_buffer_reader_init (&rd, bb))
    {
      *len_out = 0;
      buf = malloc (1);
      if (buf == NULL)
        abort ();
      return buf;
    }
  s = grpc_byte_buffer_reader_readall (&rd);
  grpc_byte_buffer_reader_destroy (&rd);
  len = GRPC_SLICE_LENGTH (s);
  buf = malloc (len ? len : 1);
  if (buf == NULL)
    abort ();
  memcpy (buf, GRPC_SLICE_START_PTR (s), len);
  grpc_slice_unref (s);
  *len_out = len;
  return buf;
}

static void
on_new_call (flint_rpc_t *rpc, bool ok, bool on_loop)
{
  method_t *m = rpc->method;

  if (!ok)
    {
      rpc_unref (rpc); /* server shutting down */
      return;
    }
  request_call (m); /* keep one request armed per arrival */

  /* Learn about closure / cancellation: streams at once, unary calls once the loop sees them
   * still running after WATCH_MS (watch_later), or with their reply. */
  if (m->kind != FLINT_RPC_UNARY)
    arm_close (rpc);

  if (m->kind != FLINT_RPC_CLIENT_STREAM)
    {
      rpc->req = flatten (rpc->payload, &rpc->req_len);
      if (rpc->payload)
        {
          grpc_byte_buffer_destroy (rpc->payload);
          rpc->payload = NULL;
        }
    }
  /* The reference of the pending request becomes the loop's reference. */
  emit (rpc->srv, &rpc->ev_arrived, on_loop);
}

static void
on_close (flint_rpc_t *rpc, bool on_loop)
{
  atomic_store (&rpc->closed, true);
  if (rpc->close_cancelled && !atomic_load (&rpc->finished))
    {
      rpc_ref (rpc);
      emit (rpc->srv, &rpc->ev_cancelled, on_loop);
    }
  rpc_unref (rpc);
}

static void
on_send_done (flint_rpc_t *rpc, bool ok)
{
  pthread_mutex_lock (&rpc->mu);
  if (rpc->in_flight)
    {
      if (rpc->in_flight->msg)
        grpc_byte_buffer_destroy (rpc->in_flight->msg);
      free (rpc->in_flight);
      rpc->in_flight = NULL;
    }
  if (ok)
    pump_sends_locked (rpc);
  pthread_mutex_unlock (&rpc->mu);
  rpc_unref (rpc);
}

static void
on_recv_done (flint_rpc_t *rpc, bool ok, bool on_loop)
{
  event_t *ev = calloc (1, sizeof *ev);
  if (ev == NULL)
    abort ();
  ev->kind = EV_RECV;
  ev->rpc = rpc; /* the batch's reference moves to the event */
  ev->ok = ok;
  if (ok && rpc->recv_buf == NULL)
    ev->end = true;
  else if (ok)
    ev->msg = flatten (rpc->recv_buf, &ev->len);
  if (rpc->recv_buf)
    {
      grpc_byte_buffer_destroy (rpc->recv_buf);
      rpc->recv_buf = NULL;
    }
  emit (rpc->srv, ev, on_loop);
}

/* One completion-queue event, on the CQ thread or on the loop (`on_loop`). */
static void
handle_event (const grpc_event *ev, bool on_loop)
{
  tag_t *tag = ev->tag;

  switch (tag->kind)
    {
    case TAG_NEW: on_new_call (tag->rpc, ev->success, on_loop); break;
    case TAG_CLOSE: on_close (tag->rpc, on_loop); break;
    case TAG_SEND: on_send_done (tag->rpc, ev->success); break;
    case TAG_RECV: on_recv_done (tag->rpc, ev->success, on_loop); break;
    case TAG_SHUTDOWN: break;
    }
}

static void *
cq_thread_main (void *arg)
{
  flint_grpc_server_t *srv = arg;

  for (;;)
    {
      grpc_event ev;

      pthread_mutex_lock (&srv->park_mu);
      while (atomic_load (&srv->loop_polls))
        pthread_cond_wait (&srv->park_cv, &srv->park_mu);
      pthread_mutex_unlock (&srv->park_mu);
      ev = grpc_completion_queue_next (srv->cq, gpr_inf_future (GPR_CLOCK_MONOTONIC), NULL);
      if (ev.type == GRPC_QUEUE_SHUTDOWN)
        break;
      if (ev.type == GRPC_OP_COMPLETE)
        handle_event (&ev, false);
    }
  return NULL;
}

/* ---- the loop as the poller ------------------------------------------------------------ */

static void
loop_poll_end (flint_grpc_server_t *srv)
{
  if (!atomic_load (&srv->loop_polls))
    return;
  uv_idle_stop (srv->idle);
  pthread_mutex_lock (&srv->park_mu);
  atomic_store (&srv->loop_polls, false);
  pthread_cond_signal (&srv->park_cv);
  pthread_mutex_unlock (&srv->park_mu);
}

/* Each loop iteration while polling: what the CQ thread still posted, then whatever the queue
 * holds (gRPC reads the sockets inside this call, without blocking). */
static void
idle_cb (uv_idle_t *h)
{
  flint_grpc_server_t *srv = h->data;
  uint64_t now;
  bool busy = drain_posted (srv) > 0;

  for (int i = 0; i < 64; i++)
    {
      grpc_event ev = grpc_completion_queue_next (srv->cq, gpr_inf_past (GPR_CLOCK_MONOTONIC), NULL);
      if (ev.type != GRPC_OP_COMPLETE)
        break;
      handle_event (&ev, true);
      busy = true;
    }
  now = flint_now_ns ();
  if (busy)
    srv->last_event_ns = now;
  else if (now - srv->last_event_ns > SPIN_NS)
    loop_poll_end (srv);
  else
    /* nothing this round: the workers flintd is waiting for may need this core (returns at once
     * when nothing else is runnable here) */
    sched_yield ();
}

static void
loop_poll_begin (flint_grpc_server_t *srv)
{
  srv->last_event_ns = flint_now_ns ();
  if (atomic_load (&srv->loop_polls) || srv->idle == NULL)
    return;
  /* The CQ thread sees this after the event it is waiting for and parks; until then both
   * drain the queue, which handle_event() allows. */
  atomic_store (&srv->loop_polls, true);
  uv_idle_start (srv->idle, idle_cb);
}

/* ---- public API ---------------------------------------------------------------------- */

int
flint_grpc_server_new (uv_loop_t *loop, const flint_grpc_opts_t *opts, flint_grpc_server_t **out,
                       flint_error_t *err)
{
  flint_grpc_server_t *srv = calloc (1, sizeof *srv);
  grpc_arg args[3];
  grpc_channel_args cargs = { .num_args = 3, .args = args };

  if (srv == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  grpc_init ();
  srv->loop = loop;
  pthread_mutex_init (&srv->evlock, NULL);
  pthread_mutex_init (&srv->park_mu, NULL);
  pthread_cond_init (&srv->park_cv, NULL);
  memset (args, 0, sizeof args);
  args[0].type = GRPC_ARG_INTEGER;
  args[0].key = (char *) GRPC_ARG_ALLOW_REUSEPORT;
  args[0].value.integer = 0;
  args[1].type = GRPC_ARG_INTEGER;
  args[1].key = (char *) GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
  args[1].value.integer = (int) FLINT_MIN (opts->max_recv_message, (size_t) INT32_MAX);
  args[2].type = GRPC_ARG_INTEGER;
  args[2].key = (char *) GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
  args[2].value.integer = (int) FLINT_MIN (opts->max_send_message, (size_t) INT32_MAX);
  srv->cq = grpc_completion_queue_create_for_next (NULL);
  srv->server = grpc_server_create (&cargs, NULL);
  grpc_server_register_completion_queue (srv->server, srv->cq, NULL);
  srv->async = calloc (1, sizeof *srv->async);
  if (srv->async == NULL || uv_async_init (loop, srv->async, async_cb) < 0)
    {
      free (srv->async);
      srv->async = NULL;
      flint_grpc_server_free (srv);
      return flint_error_set (err, FLINT_EINTERNAL, "uv_async_init failed");
    }
  srv->async->data = srv;
  srv->idle = calloc (1, sizeof *srv->idle);
  if (srv->idle == NULL || uv_idle_init (loop, srv->idle) < 0)
    {
      free (srv->idle);
      srv->idle = NULL;
      flint_grpc_server_free (srv);
      return flint_error_set (err, FLINT_EINTERNAL, "uv_idle_init failed");
    }
  srv->idle->data = srv;
  flint_list_init (&srv->watch);
  srv->watch_timer = calloc (1, sizeof *srv->watch_timer);
  if (srv->watch_timer == NULL || uv_timer_init (loop, srv->watch_timer) < 0)
    {
      free (srv->watch_timer);
      srv->watch_timer = NULL;
      flint_grpc_server_free (srv);
      return flint_error_set (err, FLINT_EINTERNAL, "uv_timer_init failed");
    }
  srv->watch_timer->data = srv;
  *out = srv;
  return 0;
}

int
flint_grpc_server_add_method (flint_grpc_server_t *srv, const char *path, flint_rpc_kind_t kind,
                              flint_rpc_arrived_cb cb, void *method_data, flint_error_t *err)
{
  method_t *m;

  if (srv->n_methods == MAX_METHODS || srv->started)
    return flint_error_set (err, FLINT_EINTERNAL, "cannot register method %s", path);
  m = &srv->methods[srv->n_methods];
  m->srv = srv;
  m->path = strdup (path);
  m->kind = kind;
  m->cb = cb;
  m->data = method_data;
  m->handle = grpc_server_register_method (srv->server, path, NULL,
                                           kind == FLINT_RPC_CLIENT_STREAM ? GRPC_SRM_PAYLOAD_NONE
                                                                           : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                                           0);
  if (m->handle == NULL || m->path == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "grpc_server_register_method(%s) failed", path);
  srv->n_methods++;
  return 0;
}

int
flint_grpc_server_listen (flint_grpc_server_t *srv, const char *addr, flint_error_t *err)
{
  grpc_server_credentials *creds = grpc_insecure_server_credentials_create ();
  int port = grpc_server_add_http2_port (srv->server, addr, creds);

  grpc_server_credentials_release (creds);
  if (port == 0)
    return flint_error_set (err, FLINT_EUNAVAILABLE,
                            "cannot listen on `%s` (in use by another process, or not permitted)", addr);
  return 0;
}

int
flint_grpc_server_start (flint_grpc_server_t *srv, flint_error_t *err)
{
  int r;

  grpc_server_start (srv->server);
  srv->started = true;
  /* A few requests armed per method so that a burst does not wait for re-arming. */
  for (size_t i = 0; i < srv->n_methods; i++)
    for (int k = 0; k < 16; k++)
      request_call (&srv->methods[i]);
  r = pthread_create (&srv->cq_thread, NULL, cq_thread_main, srv);
  if (r != 0)
    return flint_error_set_errno (err, FLINT_EINTERNAL, r, "start the gRPC completion queue thread");
  return 0;
}

static void
handle_closed_cb (uv_handle_t *h)
{
  free (h);
}

void
flint_grpc_server_free (flint_grpc_server_t *srv)
{
  if (srv == NULL)
    return;
  atomic_store (&srv->shutting_down, true);
  if (srv->idle)
    loop_poll_end (srv); /* the CQ thread drains what shutting down completes */
  if (srv->watch_timer)
    {
      /* unary calls the loop still holds learn of their cancellation like the others */
      while (!flint_list_empty (&srv->watch))
        {
          flint_rpc_t *rpc = flint_list_entry (srv->watch.next, flint_rpc_t, watch_link);
          flint_list_remove (&rpc->watch_link);
          arm_close (rpc);
        }
      uv_timer_stop (srv->watch_timer);
    }
  if (srv->server)
    {
      srv->tag_shutdown.kind = TAG_SHUTDOWN;
      grpc_server_shutdown_and_notify (srv->server, srv->cq, &srv->tag_shutdown);
      grpc_server_cancel_all_calls (srv->server);
    }
  if (srv->cq)
    {
      if (srv->started)
        {
          /* Let in-flight completions (closures of cancelled calls) drain, delivering the
           * events they post so that the rpcs are released. */
          uint64_t until = flint_now_ns () + 500000000ull;
          while (atomic_load (&srv->live_rpcs) > 0 && flint_now_ns () < until)
            {
              async_cb (srv->async);
              usleep (1000);
            }
          async_cb (srv->async);
        }
      grpc_completion_queue_shutdown (srv->cq);
      if (srv->started)
        pthread_join (srv->cq_thread, NULL);
      else
        while (grpc_completion_queue_next (srv->cq, gpr_inf_past (GPR_CLOCK_MONOTONIC), NULL).type
               != GRPC_QUEUE_SHUTDOWN)
          ;
    }
  if (srv->server)
    grpc_server_destroy (srv->server);
  if (srv->cq)
    grpc_completion_queue_destroy (srv->cq);
  for (size_t i = 0; i < srv->n_methods; i++)
    free (srv->methods[i].path);
  if (srv->async)
    uv_close ((uv_handle_t *) srv->async, handle_closed_cb);
  if (srv->idle)
    uv_close ((uv_handle_t *) srv->idle, handle_closed_cb);
  if (srv->watch_timer)
    uv_close ((uv_handle_t *) srv->watch_timer, handle_closed_cb);
  pthread_mutex_destroy (&srv->evlock);
  pthread_mutex_destroy (&srv->park_mu);
  pthread_cond_destroy (&srv->park_cv);
  grpc_shutdown ();
  free (srv);
}

const uint8_t *
flint_rpc_request (const flint_rpc_t *rpc, size_t *len_out)
{
  *len_out = rpc->req_len;
  return rpc->req ? rpc->req : (const uint8_t *) "";
}

uint64_t
flint_rpc_deadline_ns (const flint_rpc_t *rpc)
{
  gpr_timespec now, dl;
  int64_t left_ns;

  if (rpc->deadline.tv_sec == INT64_MAX || rpc->deadline.clock_type == GPR_CLOCK_PRECISE)
    return 0;
  dl = gpr_convert_clock_type (rpc->deadline, GPR_CLOCK_MONOTONIC);
  if (dl.tv_sec == INT64_MAX)
    return 0;
  now = gpr_now (GPR_CLOCK_MONOTONIC);
  /* a deadline decades away (a client's "infinity") is none: no overflow in the product */
  if (dl.tv_sec - now.tv_sec > (int64_t) 1 << 30)
    return 0;
  left_ns = (dl.tv_sec - now.tv_sec) * 1000000000ll + (dl.tv_nsec - now.tv_nsec);
  if (left_ns < 1)
    left_ns = 1;
  return flint_now_ns () + (uint64_t) left_ns;
}

const char *
flint_rpc_method (const flint_rpc_t *rpc)
{
  return rpc->method->path;
}

bool
flint_rpc_cancelled (const flint_rpc_t *rpc)
{
  return atomic_load (&rpc->closed) && rpc->close_cancelled;
}

void
flint_rpc_set_data (flint_rpc_t *rpc, void *data)
{
  rpc->data = data;
}

void *
flint_rpc_data (const flint_rpc_t *rpc)
{
  return rpc->data;
}

void
flint_rpc_on_cancel (flint_rpc_t *rpc, flint_rpc_cancel_cb cb, void *data)
{
  rpc->cancel_cb = cb;
  rpc->cancel_data = data;
}

void
flint_rpc_recv (flint_rpc_t *rpc, flint_rpc_recv_cb cb, void *data)
{
  grpc_op op;

  rpc->recv_cb = cb;
  rpc->recv_data = data;
  memset (&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &rpc->recv_buf;
  rpc_ref (rpc);
  if (grpc_call_start_batch (rpc->call, &op, 1, &rpc->tag_recv, NULL) != GRPC_CALL_OK)
    {
      /* deliver a broken-stream event so the handler finishes the call */
      event_t *ev = calloc (1, sizeof *ev);
      if (ev == NULL)
        abort ();
      ev->kind = EV_RECV;
      ev->rpc = rpc;
      ev->ok = false;
      post (rpc->srv, ev);
    }
}

int
flint_rpc_write (flint_rpc_t *rpc, const void *msg, size_t len)
{
  send_item_t *it;

  if (atomic_load (&rpc->closed) || atomic_load (&rpc->finished))
    return -1;
  it = calloc (1, sizeof *it);
  if (it == NULL)
    abort ();
  it->msg = make_buffer (msg, len);
  enqueue_send (rpc, it);
  return 0;
}

void
flint_rpc_finish (flint_rpc_t *rpc, int code, const char *details, const void *reply, size_t len)
{
  send_item_t *it;

  if (atomic_exchange (&rpc->finished, true))
    return;
  it = calloc (1, sizeof *it);
  if (it == NULL)
    abort ();
  it->final = true;
  it->code = code;
  if (!rpc->close_armed)
    {
      /* never watched: the close is received with the reply */
      flint_list_remove (&rpc->watch_link);
      it->recv_close = true;
    }
  if (reply && code == 0)
    it->msg = make_buffer (reply, len);
  pthread_mutex_lock (&rpc->mu);
  if (details && *details)
    {
      rpc->status_details = grpc_slice_from_copied_string (details);
      rpc->have_details = true;
    }
  pthread_mutex_unlock (&rpc->mu);
  if (atomic_load (&rpc->closed))
    {
      /* nobody listens any more: just release */
      free (it);
    }
  else
    enqueue_send (rpc, it);
  rpc_unref (rpc); /* the loop's reference */
}
