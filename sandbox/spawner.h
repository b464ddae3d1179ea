/* The spawner service loop (see spawner.c). */
#ifndef FLINT_SPAWNER_H
#define FLINT_SPAWNER_H

#include "sandbox.h"
#include "flint/node/v1/node.pb-c.h"

/* Serves node.proto Spawn/Kill frames on `sock` until it closes; then kills every sandbox it
 * created and returns the process exit status. Single-threaded; blocks SIGCHLD. */
int flint_spawner_main (int sock, const flint_sandbox_options_t *opts);

/* Fills `spec` from a SandboxSpec message (pointers into the message). `argv` and `env` are
 * caller-allocated with room for argc + 1 and ss->n_env + 1 entries. */
void flint_sandbox_spec_from_proto (const Flint__Node__V1__SandboxSpec *ss, const char *id, char **argv_in,
                                    size_t argc, char **argv, char **env, flint_sandbox_spec_t *spec);

#endif
