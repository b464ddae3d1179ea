/* A framed, non-blocking stream socket on flintd's loop: the link to one worker, the spawner
 * or the snapshotter. Frames are those of common/frame.h.
 *
 * flint_channel_send() writes at once (the common case completes without queuing or a poll
 * round trip); only what the kernel does not take is queued and flushed when the socket is
 * writable. flint_channel_send_soon() holds the frame until the end of the current loop
 * iteration and sends everything held for the channel in one write: the request path uses it
 * so that a burst of requests to one worker costs one write here and one wake-up there.
 * Frames leave in the order they were sent, whichever of the two sent them. Frames received are delivered in order to `frame_cb`; end of stream or an error
 * is delivered once to `close_cb`, after which the channel delivers nothing more. The owner
 * frees it with flint_channel_close() (also from inside its callbacks). */
#ifndef FLINT_CHANNEL_H
#define FLINT_CHANNEL_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct flint_channel_s flint_channel_t;

typedef void (*flint_channel_frame_cb) (flint_channel_t *ch, const uint8_t *payload, size_t len, void *data);
/* `error` is 0 for a clean end of stream, -errno otherwise (-EMSGSIZE: oversized frame). */
typedef void (*flint_channel_close_cb) (flint_channel_t *ch, int error, void *data);

/* Takes ownership of `fd` (made non-blocking). Returns 0 or -errno. */
int flint_channel_new (uv_loop_t *loop, int fd, size_t max_frame, flint_channel_frame_cb frame_cb,
                       flint_channel_close_cb close_cb, void *data, flint_channel_t **out);

/* Sends `msg` as one frame, with `fds` (not closed; they are duplicated if the send has to be
 * queued). Returns 0, or -errno when the channel is closed or broken. */
int flint_channel_send (flint_channel_t *ch, const ProtobufCMessage *msg, const int *fds, size_t nfds);

/* Like flint_channel_send() without fds, but the frame waits for the end of the current loop
 * iteration (a uv_prepare callback, just before the loop polls) and leaves together with the
 * other frames sent to this channel meanwhile. Returns 0, or -errno when the channel is closed
 * (a write error later is reported like any other: through close_cb). */
int flint_channel_send_soon (flint_channel_t *ch, const ProtobufCMessage *msg);

/* Takes the oldest file descriptor received with the frames delivered so far (SCM_RIGHTS), or
 * -1 when none is left. The caller owns it. Peers attach fds to the frame that needs them, so a
 * frame handler takes exactly the fds its message announces. */
int flint_channel_take_fd (flint_channel_t *ch);

/* Bytes queued and not yet accepted by the kernel. */
size_t flint_channel_pending (const flint_channel_t *ch);

/* Stops delivery, closes the fd and frees the channel (asynchronously). Accepts NULL. */
void flint_channel_close (flint_channel_t *ch);

#endif
