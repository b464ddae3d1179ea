/* Bundles: the deployable content of a directory, as a tar archive.
 *
 * `flint deploy DIR` packs DIR into a tar stream (regular files, directories, and relative
 * symlinks that stay inside DIR) and sends it with its SHA-256. flintd stores it by digest and
 * extracts it into a directory of its own. The archive is untrusted input on the flintd side:
 * extraction rejects absolute paths, "..", links leaving the bundle, device nodes, fifos,
 * setuid bits, and anything over the size limits; it never follows a symlink while writing. */
#ifndef FLINT_BUNDLE_H
#define FLINT_BUNDLE_H

#include "flint/error.h"
#include "flint/util.h"

#include <stdint.h>

typedef struct flint_bundle_limits_s {
  uint64_t max_total_bytes;  /* sum of extracted file sizes */
  uint64_t max_entries;
} flint_bundle_limits_t;

/* Writes a tar archive of `dir` into `out_fd` (not closed), computing its SHA-256 and size.
 * Entries are sorted by path and carry no owners or times, so the same directory always yields
 * the same digest (a redeploy of unchanged content is recognisable). Returns 0, or -1 with
 * `err` naming the offending path. */
int flint_bundle_pack (const char *dir, int out_fd, char sha256_out[FLINT_SHA256_HEX_LEN],
                       uint64_t *size_out, flint_error_t *err);

/* Extracts the archive at `tar_path` into the directory `dest` (created with mode 0755; must
 * not exist). On failure `dest` is removed and -1 returned with FLINT_EINVAL (bad archive) or
 * FLINT_EINTERNAL (I/O) in `err`. Files are written 0644 (0755 when executable by owner). */
int flint_bundle_extract (const char *tar_path, const char *dest, const flint_bundle_limits_t *limits,
                          flint_error_t *err);

/* Same as flint_bundle_extract() over an in-memory archive (the fuzz target's entry). */
int flint_bundle_extract_mem (const void *data, size_t len, const char *dest,
                              const flint_bundle_limits_t *limits, flint_error_t *err);

#endif
