/* Snapshot images on the node: a directory per endpoint version under RUN/images (tmpfs,
 * 0700), holding CRIU's image files and flint's own `flint.meta`. Every image file's SHA-256 is
 * recorded in flintd's registry and checked again before it is used. */
#ifndef FLINT_IMAGES_H
#define FLINT_IMAGES_H

#include "flint/error.h"
#include "flint/util.h"

#include <stdbool.h>
#include <stdint.h>

#define FLINT_IMAGE_META "flint.meta"

typedef struct flint_image_file_s {
  char path[128];
  uint64_t size;
  char sha256[FLINT_SHA256_HEX_LEN];
} flint_image_file_t;

/* Lists the image files of `dir` (CRIU's *.img and flint.meta; not logs) with sizes and
 * digests, into a heap array (caller frees). Returns the count, or -1 with `err`. */
int flint_image_list (const char *dir, flint_image_file_t **files_out, uint64_t *total_out, flint_error_t *err);

/* Checks that `dir` holds exactly `files` with those digests. -1 with FLINT_EDATALOSS naming the
 * first mismatch. Cost: hashes every file (1.6 GB/s with SHA-NI); see flint_image_verify_cached. */
int flint_image_verify (const char *dir, const flint_image_file_t *files, size_t n, flint_error_t *err);

/* Like flint_image_verify, but remembers a verified directory by (inode, size, mtime) of each
 * file, so that a restore pays a few stat() calls instead of hashing again unless a file
 * changed. */
int flint_image_verify_cached (const char *dir, const flint_image_file_t *files, size_t n, flint_error_t *err);

/* flint.meta: key=value lines. */
int flint_image_meta_write (const char *dir, const char *const *keys, const char *const *values, size_t n,
                            flint_error_t *err);
/* Reads one value; returns 0 or -1 with `err`. */
int flint_image_meta_get (const char *dir, const char *key, char *out, size_t len, flint_error_t *err);

#endif
