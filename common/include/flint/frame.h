/* Length-prefixed protobuf frames over stream sockets: the wire format between flintd and its
 * workers, its spawner and its snapshotter (proto/flint/worker/v1, proto/flint/node/v1).
 *
 * A frame is a 4-byte little-endian length followed by that many bytes of one serialized
 * message. File descriptors ride along as SCM_RIGHTS on the first byte of a frame. Receivers
 * always enforce a maximum frame size before allocating. */
#ifndef FLINT_FRAME_H
#define FLINT_FRAME_H

#include "flint/buf.h"

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#define FLINT_FRAME_HEADER 4u
#define FLINT_FRAME_MAX_FDS 8u

/* Serializes `msg` behind a frame header into a new heap buffer owned by the caller.
 * Returns 0 or -ENOMEM / -EMSGSIZE (over `max`). */
int flint_frame_encode (const ProtobufCMessage *msg, size_t max, uint8_t **buf_out, size_t *len_out);

/* Serializes `msg` as one frame appended to `b`, so that several frames leave in one write.
 * Returns 0 or -EMSGSIZE (over `max`; `b` unchanged). */
int flint_frame_encode_append (const ProtobufCMessage *msg, size_t max, flint_buf_t *b);

/* Blocking send of one frame with optional fds (not closed). Returns 0 or -errno. */
int flint_frame_send (int sock, const ProtobufCMessage *msg, const int *fds, size_t nfds);

/* Blocking receive of one frame. On success returns 1, stores a heap buffer (caller frees)
 * holding the message bytes, and up to *nfds_inout received fds (owned by the caller, made
 * close-on-exec); *nfds_inout is set to the count received. Returns 0 on EOF before a frame
 * started, -EMSGSIZE when the announced length exceeds `max`, -EPROTO on EOF inside a frame,
 * -errno otherwise. Extra fds beyond the caller's room are closed. */
int flint_frame_recv (int sock, size_t max, uint8_t **buf_out, size_t *len_out, int *fds_out,
                      size_t *nfds_inout);

/* Incremental decoder for non-blocking readers (flintd's channels). */
typedef struct flint_frame_reader_s {
  uint8_t *buf;
  size_t len;     /* bytes buffered */
  size_t off;     /* bytes consumed by frames already returned */
  size_t cap;
  size_t max;     /* largest frame accepted */
} flint_frame_reader_t;

void flint_frame_reader_init (flint_frame_reader_t *r, size_t max);
void flint_frame_reader_free (flint_frame_reader_t *r);

/* Room to read into: at least `want` bytes at *ptr_out. Returns 0 or -ENOMEM. */
int flint_frame_reader_space (flint_frame_reader_t *r, size_t want, uint8_t **ptr_out, size_t *len_out);
/* Records that `n` bytes were read into the space returned above. */
void flint_frame_reader_commit (flint_frame_reader_t *r, size_t n);

/* Returns 1 and the next complete frame's payload (valid until the next call to any reader
 * function), 0 when more bytes are needed, -EMSGSIZE when the peer announced an oversized frame
 * (the stream is unusable after that). */
int flint_frame_reader_next (flint_frame_reader_t *r, const uint8_t **payload_out, size_t *len_out);

#endif
