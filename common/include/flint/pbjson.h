/* protobuf-c message → JSON, following the proto3 JSON mapping with proto field names kept
 * (snake_case), every field emitted (defaults included), bytes as base64, enums by name, maps as
 * objects. One documented deviation: 64-bit integers are emitted as JSON numbers, not strings
 * (none of flint's values come near 2^53). Used by the HTTP mirror and `flint ... --json`. */
#ifndef FLINT_PBJSON_H
#define FLINT_PBJSON_H

#include "flint/buf.h"

#include <protobuf-c/protobuf-c.h>

void flint_pbjson_render (const ProtobufCMessage *msg, flint_buf_t *out);

/* Base64 (RFC 4648, with padding). */
void flint_base64_encode (const uint8_t *data, size_t len, flint_buf_t *out);

#endif
