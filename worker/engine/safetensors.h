/* safetensors: the header parser of Hugging Face's tensor file format.
 *
 *   [u64 little-endian N][N bytes of JSON header][data section]
 *   header: {"name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [begin, end]}, ...,
 *            "__metadata__": {"key": "value"}}     offsets relative to the data section
 *
 * The file is untrusted input: the parser checks every number for overflow, every offset against
 * the file size, that the tensors neither overlap nor leave holes (the format's own rule), that
 * each tensor's byte size matches dtype x shape, and that names are unique. It never copies
 * tensor data: tensors point into the caller's buffer (a MAP_SHARED mapping of the weight store).
 * Errors name the file and the field: "`model.safetensors`: tensor `x`: field `shape`: ...". */
#ifndef FLINT_ENGINE_SAFETENSORS_H
#define FLINT_ENGINE_SAFETENSORS_H

#include "flint/error.h"

#include <stddef.h>
#include <stdint.h>

/* Element types. The engine computes with F32, F16 and BF16 weights; the others are parsed (a
 * file may hold them) and refused where a model uses them. */
typedef enum flint_dtype_e {
  FLINT_DTYPE_F32,
  FLINT_DTYPE_F16,
  FLINT_DTYPE_BF16,
  FLINT_DTYPE_F64,
  FLINT_DTYPE_I64,
  FLINT_DTYPE_I32,
  FLINT_DTYPE_I16,
  FLINT_DTYPE_I8,
  FLINT_DTYPE_U8,
  FLINT_DTYPE_BOOL,
  FLINT_DTYPE_F8_E4M3,
  FLINT_DTYPE_F8_E5M2,
  FLINT_DTYPE_U16,
  FLINT_DTYPE_U32,
  FLINT_DTYPE_U64,
} flint_dtype_t;

#define FLINT_ST_MAX_DIMS 8
/* Headers above this are refused (real ones are well under 1 MiB; the format caps at 100 MB). */
#define FLINT_ST_MAX_HEADER (100u << 20)

typedef struct flint_st_tensor_s {
  char *name;
  flint_dtype_t dtype;
  uint32_t ndim;
  uint64_t shape[FLINT_ST_MAX_DIMS];
  uint64_t nelem;
  uint64_t offset;       /* from the start of the data section */
  uint64_t bytes;
  const void *data;      /* into the caller's buffer */
} flint_st_tensor_t;

typedef struct flint_st_file_s {
  char *name;            /* for messages (the file name) */
  const uint8_t *base;   /* the whole file, as given */
  size_t len;
  const uint8_t *data;   /* the data section */
  uint64_t data_len;
  flint_st_tensor_t *tensors;  /* sorted by offset */
  size_t n;
} flint_st_file_t;

/* Bytes per element of `dtype`. */
size_t flint_dtype_size (flint_dtype_t dtype);
/* "BF16", "F32", ...: the safetensors spelling. */
const char *flint_dtype_name (flint_dtype_t dtype);

/* Parses the header of the safetensors file held in `data` (`len` bytes, e.g. a mapping of the
 * file). `name` appears in error messages. On success returns 0 and a table owned by the caller
 * (flint_st_free) whose tensors point into `data`, which must outlive it. On failure returns -1
 * with FLINT_EPRECONDITION and a message naming the file and the field. Cost: linear in the
 * header size; the data section is never read. */
int flint_st_parse (const char *name, const void *data, size_t len, flint_st_file_t **out, flint_error_t *err);
void flint_st_free (flint_st_file_t *f);

/* The tensor called `name`, or NULL. Cost: a binary search of a name index built by parse. */
const flint_st_tensor_t *flint_st_find (const flint_st_file_t *f, const char *name);

#endif
