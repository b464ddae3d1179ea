/* A CRIU RPC client (criu/rpc.proto over `criu swrk`), written for what flint needs and libcriu
 * cannot do: a pre-spawned swrk that restores with inherit_fd, rst_sibling and leave_stopped
 * (docs/SNAPSHOTS.md has the measurements: exec'ing criu per restore costs ~5 ms, a swrk forked
 * ahead costs 0.1 ms).
 *
 * A flint_criu_t is one `criu swrk` process and its SEQPACKET socket. The process is our child;
 * with rst_sibling, what it restores becomes our child too. */
#ifndef FLINT_CRIU_H
#define FLINT_CRIU_H

#include "flint/error.h"
#include "rpc.pb-c.h"

#include <stdbool.h>
#include <sys/types.h>

typedef struct flint_criu_s {
  pid_t pid;
  int sk;
} flint_criu_t;

/* Called in the forked child before exec (join a cgroup, ...). Async-signal-safe only.
 * Returns 0 or -errno (the child then exits with status 120). */
typedef int (*flint_criu_prep_cb) (void *data);

/* Forks and execs `criu swrk`, keeping `keep` fds open (without close-on-exec) in it.
 * Returns 0 or -1 with `err`. */
int flint_criu_spawn (const char *criu_bin, const int *keep, size_t nkeep, flint_criu_prep_cb prep, void *prep_data,
                      flint_criu_t *out, flint_error_t *err);

/* Sends `req` and waits for the response (answering CRIU's notifications). On success returns 0
 * and *resp_out (free with criu_resp__free_unpacked). */
int flint_criu_call (flint_criu_t *c, CriuReq *req, CriuResp **resp_out, flint_error_t *err);

/* Closes the socket (swrk exits) and reaps the process unless `reaped_elsewhere`. */
void flint_criu_close (flint_criu_t *c, bool reaped_elsewhere);

/* The version of the criu binary, through a VERSION request ("4.1.1"). */
int flint_criu_version (const char *criu_bin, char *out, size_t len, flint_error_t *err);

#endif
