/* The spawner service loop (see spawner.c). */
#ifndef FLINT_SPAWNER_H
#define FLINT_SPAWNER_H

#include "sandbox.h"

/* Serves node.proto Spawn/Kill frames on `sock` until it closes; then kills every sandbox it
 * created and returns the process exit status. Single-threaded; blocks SIGCHLD. */
int flint_spawner_main (int sock, const flint_sandbox_options_t *opts);

#endif
