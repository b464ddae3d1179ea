/* Reflection over protobuf-c descriptors to render JSON. See pbjson.h. */
#include "flint/pbjson.h"

#include <math.h>
#include <string.h>

void
flint_base64_encode (const uint8_t *data, size_t len, flint_buf_t *out)
{
  static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i;

  flint_buf_reserve (out, (len + 2) / 3 * 4);
  for (i = 0; i + 2 < len; i += 3)
    {
      uint32_t v = (uint32_t) data[i] << 16 | (uint32_t) data[i + 1] << 8 | data[i + 2];
      char q[4] = { tbl[v >> 18], tbl[(v >> 12) & 63], tbl[(v >> 6) & 63], tbl[v & 63] };
      flint_buf_append (out, q, 4);
    }
  if (i < len)
    {
      uint32_t v = (uint32_t) data[i] << 16 | (i + 1 < len ? (uint32_t) data[i + 1] << 8 : 0);
      char q[4] = { tbl[v >> 18], tbl[(v >> 12) & 63], i + 1 < len ? tbl[(v >> 6) & 63] : '=', '=' };
      flint_buf_append (out, q, 4);
    }
}

static void render_value (const ProtobufCFieldDescriptor *f, const void *p, flint_buf_t *out);

static void
render_double (double v, flint_buf_t *out)
{
  if (isnan (v))
    flint_buf_puts (out, "\"NaN\"");
  else if (isinf (v))
    flint_buf_puts (out, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
  else
    flint_buf_printf (out, "%.17g", v);
}

static void
render_value (const ProtobufCFieldDescriptor *f, const void *p, flint_buf_t *out)
{
  switch (f->type)
    {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
      flint_buf_printf (out, "%d", *(const int32_t *) p);
      break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
      flint_buf_printf (out, "%u", *(const uint32_t *) p);
      break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
      flint_buf_printf (out, "%lld", (long long) *(const int64_t *) p);
      break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
      flint_buf_printf (out, "%llu", (unsigned long long) *(const uint64_t *) p);
      break;
    case PROTOBUF_C_TYPE_FLOAT:
      render_double (*(const float *) p, out);
      break;
    case PROTOBUF_C_TYPE_DOUBLE:
      render_double (*(const double *) p, out);
      break;
    case PROTOBUF_C_TYPE_BOOL:
      flint_buf_puts (out, *(const protobuf_c_boolean *) p ? "true" : "false");
      break;
    case PROTOBUF_C_TYPE_ENUM:
      {
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value (f->descriptor, *(const int *) p);
        if (ev)
          flint_buf_json_string (out, ev->name, strlen (ev->name));
        else
          flint_buf_printf (out, "%d", *(const int *) p);
        break;
      }
    case PROTOBUF_C_TYPE_STRING:
      {
        const char *s = *(char *const *) p;
        flint_buf_json_string (out, s ? s : "", s ? strlen (s) : 0);
        break;
      }
    case PROTOBUF_C_TYPE_BYTES:
      {
        const ProtobufCBinaryData *b = p;
        flint_buf_putc (out, '"');
        flint_base64_encode (b->data, b->len, out);
        flint_buf_putc (out, '"');
        break;
      }
    case PROTOBUF_C_TYPE_MESSAGE:
      {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *) p;
        if (m)
          flint_pbjson_render (m, out);
        else
          flint_buf_puts (out, "null");
        break;
      }
    }
}

static size_t
type_size (ProtobufCType t)
{
  switch (t)
    {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
      return 8;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
      return sizeof (void *);
    case PROTOBUF_C_TYPE_BYTES:
      return sizeof (ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_BOOL:
      return sizeof (protobuf_c_boolean);
    default:
      return 4;
    }
}

/* A map field is a repeated message of an *Entry type whose descriptor has key and value. */
static int
is_map_entry (const ProtobufCFieldDescriptor *f)
{
  const ProtobufCMessageDescriptor *d = f->descriptor;
  size_t n;
  if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label != PROTOBUF_C_LABEL_REPEATED)
    return 0;
  n = strlen (d->name);
  return n > 5 && strcmp (d->name + n - 5, "Entry") == 0 && d->n_fields == 2
         && strcmp (d->fields[0].name, "key") == 0 && strcmp (d->fields[1].name, "value") == 0;
}

void
flint_pbjson_render (const ProtobufCMessage *msg, flint_buf_t *out)
{
  const ProtobufCMessageDescriptor *d = msg->descriptor;
  const char *base = (const char *) msg;
  int first = 1;

  flint_buf_putc (out, '{');
  for (unsigned i = 0; i < d->n_fields; i++)
    {
      const ProtobufCFieldDescriptor *f = &d->fields[i];
      const void *member = base + f->offset;

      if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        {
          uint32_t which = *(const uint32_t *) (base + f->quantifier_offset);
          if (which != f->id)
            continue;
        }
      if (!first)
        flint_buf_putc (out, ',');
      first = 0;
      flint_buf_json_string (out, f->name, strlen (f->name));
      flint_buf_putc (out, ':');
      if (f->label == PROTOBUF_C_LABEL_REPEATED)
        {
          size_t n = *(const size_t *) (base + f->quantifier_offset);
          const char *arr = *(char *const *) member;
          if (is_map_entry (f))
            {
              const ProtobufCMessageDescriptor *ed = f->descriptor;
              flint_buf_putc (out, '{');
              for (size_t k = 0; k < n; k++)
                {
                  const char *entry = ((char *const *) arr)[k];
                  const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
                  if (k)
                    flint_buf_putc (out, ',');
                  if (kf->type == PROTOBUF_C_TYPE_STRING)
                    render_value (kf, entry + kf->offset, out);
                  else
                    {
                      flint_buf_t tmp = FLINT_BUF_INIT;
                      render_value (kf, entry + kf->offset, &tmp);
                      flint_buf_json_string (out, tmp.data, tmp.len);
                      flint_buf_free (&tmp);
                    }
                  flint_buf_putc (out, ':');
                  render_value (vf, entry + vf->offset, out);
                }
              flint_buf_putc (out, '}');
              continue;
            }
          flint_buf_putc (out, '[');
          for (size_t k = 0; k < n; k++)
            {
              if (k)
                flint_buf_putc (out, ',');
              render_value (f, arr + k * type_size (f->type), out);
            }
          flint_buf_putc (out, ']');
          continue;
        }
      render_value (f, member, out);
    }
  flint_buf_putc (out, '}');
}
