/* On-node storage of deployed content.
 *
 *   STATE/bundles/<sha256>/          extracted bundles, by digest of the bundle archive
 *   STATE/tmp/                       uploads in progress
 *   RUN/weights/objects/<sha256>     the node weight store: content-addressed files on tmpfs,
 *                                    mapped MAP_SHARED read-only by every replica
 *   RUN/weights/versions/<ep>-<v>/   one directory per version: hard links named after the
 *                                    manifest's weight names (mounted at /weights)
 *
 * Hard links make reference counting free: an object whose link count is 1 is used by no
 * version and can go. */
#ifndef FLINT_STORE_H
#define FLINT_STORE_H

#include "daemon.h"

/* Links the version's weights into RUN/weights/versions/<ep>-<v>/ (ingesting objects that are
 * not in the store yet) and sets v->weights_dir. Versions without weights get NULL. Blocking
 * (hashes and copies): run it off the loop for large weights. */
int flint__store_link_weights (const flint_daemon_config_t *cfg, const char *endpoint, uint64_t version,
                               const flint_manifest_t *m, const char *bundle_dir, char **weights_dir_out,
                               uint64_t *bytes_out, flint_error_t *err);

/* Removes a version's weight directory and objects nobody links any more. */
void flint__store_unlink_weights (const char *weights_dir, const flint_daemon_config_t *cfg);

/* Removes the bundle directory of `sha256` (when no version uses it any more). */
void flint__store_remove_bundle (const flint_daemon_config_t *cfg, const char *sha256);

#endif
