/* The part of a node helper (flint-spawner, flint-snapshotter) that supervises sandboxes: the
 * socket to flintd, the sandboxes it owns by replica id and by pid, reaping (SIGCHLD through a
 * signalfd), Exited reports, Kill and Freeze requests, and killing everything when flintd goes.
 * Each helper adds its own requests through `handle`. Single-threaded. */
#ifndef FLINT_SUPERVISOR_H
#define FLINT_SUPERVISOR_H

#include "sandbox.h"
#include "flint/map.h"
#include "flint/node/v1/node.pb-c.h"

typedef struct flint_supervisor_s flint_supervisor_t;

/* Handles one frame the supervisor does not know (with its received fds, which the handler
 * must close or keep). */
typedef void (*flint_supervisor_handle_cb) (flint_supervisor_t *sv, Flint__Node__V1__NodeFrame *f, int *fds,
                                            size_t nfds, void *data);
/* Called for a reaped pid that is not a sandbox (criu swrk, slirp4netns, ...). */
typedef void (*flint_supervisor_reaped_cb) (flint_supervisor_t *sv, pid_t pid, int status, void *data);
/* Background work, run when no frame waits (the snapshotter refills its restore slots there, so
 * a burst of restores is served before any refill). Called while `idle_pending` is set; the
 * callback clears it when nothing is left. */
typedef void (*flint_supervisor_idle_cb) (flint_supervisor_t *sv, void *data);

struct flint_supervisor_s {
  int sock;
  flint_sandbox_node_t *node;
  flint_map_t by_id;    /* replica id → sandbox */
  flint_map_t by_pid;   /* decimal pid → sandbox */
  flint_supervisor_handle_cb handle;
  flint_supervisor_reaped_cb reaped;
  flint_supervisor_idle_cb idle;
  bool idle_pending;
  void *data;
};

/* Sends a frame (with fds, not closed) to flintd; logs a failure. */
void flint_supervisor_send (flint_supervisor_t *sv, Flint__Node__V1__NodeFrame *f, const int *fds, size_t nfds);

/* Reports the helper's status (first frame). */
void flint_supervisor_status (flint_supervisor_t *sv, bool ok, const char *message);

/* Takes ownership of a running sandbox under its id. */
void flint_supervisor_adopt (flint_supervisor_t *sv, flint_sandbox_t *sb);
flint_sandbox_t *flint_supervisor_find (flint_supervisor_t *sv, const char *id);

/* Serves until flintd closes the socket, then kills and reaps every sandbox; returns the exit
 * status. SIGCHLD must be blocked by the caller before any child exists. */
int flint_supervisor_run (flint_supervisor_t *sv, int sigchld_fd);

/* A signalfd for SIGCHLD (blocks the signal). */
int flint_supervisor_sigchld_fd (void);

#endif
