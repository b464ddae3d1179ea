/* A small synchronous gRPC client over the C core, for the `flint` CLI, the benchmarks and the
 * C tests. One call at a time per client; each operation blocks until gRPC completes it.
 * Errors come back in `err` with the gRPC status code (flint_status_t values) and the server's
 * message. */
#ifndef FLINT_CLIENT_H
#define FLINT_CLIENT_H

#include "flint/error.h"

#include <stddef.h>
#include <stdint.h>

typedef struct flint_client_s flint_client_t;
typedef struct flint_client_call_s flint_client_call_t;

/* `addr`: "unix:/run/flint/flintd.sock", "127.0.0.1:7470", ... Connection happens lazily. */
int flint_client_new (const char *addr, flint_client_t **out, flint_error_t *err);
void flint_client_free (flint_client_t *c);

/* Unary call. On success *resp_out is a heap buffer (caller frees). `timeout_ms` 0 = none. */
int flint_client_unary (flint_client_t *c, const char *method, const void *req, size_t len, uint64_t timeout_ms,
                        uint8_t **resp_out, size_t *resp_len_out, flint_error_t *err);

/* Server-streaming call: `cb` gets each message (borrowed); returning < 0 cancels the call. */
typedef int (*flint_client_msg_cb) (const uint8_t *msg, size_t len, void *ud);
int flint_client_server_stream (flint_client_t *c, const char *method, const void *req, size_t len,
                                uint64_t timeout_ms, flint_client_msg_cb cb, void *ud, flint_error_t *err);

/* Client-streaming call: open, send messages, then finish to get the reply. A send that fails
 * means the server already ended the call: call finish to learn why. */
int flint_client_stream_open (flint_client_t *c, const char *method, uint64_t timeout_ms, flint_client_call_t **out,
                              flint_error_t *err);
int flint_client_stream_send (flint_client_call_t *call, const void *msg, size_t len);
int flint_client_stream_finish (flint_client_call_t *call, uint8_t **resp_out, size_t *resp_len_out,
                                flint_error_t *err);

#endif
