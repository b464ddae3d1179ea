/* The gRPC C-core server bridged into flintd's libuv loop.
 *
 * gRPC's completion queue has two pollers, one at a time. While traffic flows, the loop thread
 * polls it without blocking from an idle handle and handles every completion itself: a call
 * arrives, is dispatched and answered with no thread hop at all. After a few hundred
 * microseconds without a gRPC event the loop hands polling to a dedicated "CQ thread" and
 * sleeps in epoll, so an idle flintd costs nothing; the CQ thread does gRPC's housekeeping
 * (re-arming call requests, tracking closure, pacing streamed writes, freeing calls) and sends
 * the loop only what it must see (a call arrived with its request flattened, a call was
 * cancelled, a client-streamed message) through one mutex-protected queue and a coalescing
 * uv_async; the first such event makes the loop take polling back. A unary call starts
 * watching for the client's cancel only when it is still unanswered after about a millisecond
 * (one answered sooner receives its close with the reply, one gRPC batch fewer): a cancel
 * reaches the loop at most that much later than it happened. Replies are started from
 * the loop thread directly (grpc_call_start_batch is thread-safe), so a reply leaves in the
 * loop iteration that produced it: one TCP sendmsg per reply, as in a bare C-core server. The
 * measurements behind the design: docs/BENCHMARKS.md (invoke) and ../shared/notes/grpc-core.md.
 *
 * Ownership: a flint_rpc_t belongs to the loop from its arrival callback until the loop calls
 * flint_rpc_finish() on it (exactly once); after that the loop must not touch it. The bridge
 * frees it once gRPC is done with it too. */
#ifndef FLINT_GRPC_SERVER_H
#define FLINT_GRPC_SERVER_H

#include "flint/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct flint_grpc_server_s flint_grpc_server_t;
typedef struct flint_rpc_s flint_rpc_t;

typedef enum flint_rpc_kind_e {
  FLINT_RPC_UNARY,
  FLINT_RPC_SERVER_STREAM,
  FLINT_RPC_CLIENT_STREAM,
} flint_rpc_kind_t;

/* Loop-thread callbacks. */
typedef void (*flint_rpc_arrived_cb) (flint_rpc_t *rpc, void *method_data);
typedef void (*flint_rpc_cancel_cb) (flint_rpc_t *rpc, void *data);
/* A client-streamed message (`end` false) or the end of the client's stream (`end` true,
 * msg NULL). `ok` false: the stream broke (the call is cancelled; finish it). */
typedef void (*flint_rpc_recv_cb) (flint_rpc_t *rpc, const uint8_t *msg, size_t len, bool end, bool ok, void *data);

typedef struct flint_grpc_opts_s {
  size_t max_recv_message;   /* bytes; larger requests are refused with RESOURCE_EXHAUSTED */
  size_t max_send_message;
} flint_grpc_opts_t;

/* Initialises gRPC and creates a server whose events are delivered on `loop`. Must be called
 * before any thread that needs a namespace is forked (see docs/ARCHITECTURE.md). */
int flint_grpc_server_new (uv_loop_t *loop, const flint_grpc_opts_t *opts, flint_grpc_server_t **out,
                           flint_error_t *err);

/* Registers the handler of one method ("/flint.v1.Flint/Invoke"). Before start only. */
int flint_grpc_server_add_method (flint_grpc_server_t *srv, const char *path, flint_rpc_kind_t kind,
                                  flint_rpc_arrived_cb cb, void *method_data, flint_error_t *err);

/* Adds a listening address: "unix:/path" or "127.0.0.1:50051". Before start only.
 * SO_REUSEPORT is turned off, so a second flintd on the same port fails instead of sharing. */
int flint_grpc_server_listen (flint_grpc_server_t *srv, const char *addr, flint_error_t *err);

/* Starts serving and the CQ thread. */
int flint_grpc_server_start (flint_grpc_server_t *srv, flint_error_t *err);

/* Stops accepting calls, cancels the ones in progress, waits for gRPC to let go of them, joins
 * the CQ thread and frees everything (gRPC shut down too). Calls the loop still owns must have
 * been finished first. Blocks for at most a few hundred milliseconds. Accepts NULL. */
void flint_grpc_server_free (flint_grpc_server_t *srv);

/* The request message of a unary or server-streaming call (valid until finish). */
const uint8_t *flint_rpc_request (const flint_rpc_t *rpc, size_t *len_out);
/* Absolute CLOCK_MONOTONIC deadline in ns (flint_now_ns scale), or 0 when the client set none. */
uint64_t flint_rpc_deadline_ns (const flint_rpc_t *rpc);
/* The gRPC method path, for logs. */
const char *flint_rpc_method (const flint_rpc_t *rpc);
/* True once the client has cancelled (or the call otherwise ended before finish); for a unary
 * call, noticed only once it has been running for about a millisecond. */
bool flint_rpc_cancelled (const flint_rpc_t *rpc);

void flint_rpc_set_data (flint_rpc_t *rpc, void *data);
void *flint_rpc_data (const flint_rpc_t *rpc);

/* Called on the loop if the client cancels before finish. At most once. For a unary call, a
 * cancel in its first millisecond is reported when that millisecond is over. */
void flint_rpc_on_cancel (flint_rpc_t *rpc, flint_rpc_cancel_cb cb, void *data);

/* Client streaming: asks for the next message; `cb` runs on the loop with it. One outstanding
 * request at a time (that is the backpressure). */
void flint_rpc_recv (flint_rpc_t *rpc, flint_rpc_recv_cb cb, void *data);

/* Server streaming: queues one message (copied). Messages go out in order, one write in flight
 * at a time, paced by the CQ thread. Returns 0, or -1 when the call is already gone. */
int flint_rpc_write (flint_rpc_t *rpc, const void *msg, size_t len);

/* Ends the call: for unary calls `reply` (may be NULL for an error) is the response message;
 * for streams it must be NULL. `code` is a gRPC status code (0 = OK) and `details` its message.
 * Transfers the rpc back to the bridge: the loop must not use it afterwards. */
void flint_rpc_finish (flint_rpc_t *rpc, int code, const char *details, const void *reply, size_t len);

#endif
