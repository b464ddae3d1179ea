/* Device checkpoints: the state a worker keeps outside its address space (GPU memory, driver
 * contexts) that CRIU cannot see, saved before the CRIU dump and brought back after the CRIU
 * restore.
 *
 * One small table of functions per kind of device, chosen per request (libuv's habit for
 * platform alternatives): devckpt_none.c for CPU workers, where every step is a no-op;
 * devckpt_cuda.c, the CUDA driver checkpoint API (cuCheckpointProcessLock/Checkpoint/Restore/
 * Unlock), for `resources: gpu` manifests. The snapshotter calls, in order:
 *
 *   dump:     checkpoint(pid) ─▶ CRIU dump ─▶ resume(pid) when the original keeps running
 *   restore:  check(meta) ─▶ CRIU restore ─▶ restore(pid)
 *
 * describe() adds what a restore must match (GPU model, driver version, device memory the image
 * needs) to the image's flint.meta; check() refuses, before anything is restored, an image
 * this node cannot take (a different GPU, too little free memory: a CUDA restore that runs out
 * of device memory leaves the process stuck). */
#ifndef FLINT_DEVCKPT_H
#define FLINT_DEVCKPT_H

#include "flint/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* One fact of the image's meta ("gpu_model" = "NVIDIA H100 80GB HBM3"). */
typedef struct flint_devckpt_kv_s {
  char key[32];
  char value[128];
} flint_devckpt_kv_t;

typedef struct flint_devckpt_ops_s {
  const char *name;  /* "none", "cuda": recorded as the image's `device` */
  /* Writes up to `max` facts describing the device state of `pid` (model, driver, memory it
   * uses) for the image's meta. Returns how many were written. */
  size_t (*describe) (pid_t pid, flint_devckpt_kv_t *out, size_t max);
  /* Quiesces the device work of `pid` and moves its device state into host memory (so CRIU
   * dumps it with the process). 0, or -1 with `err`. */
  int (*checkpoint) (pid_t pid, flint_error_t *err);
  /* After the dump of a process that keeps running: its device state goes back. */
  int (*resume) (pid_t pid, flint_error_t *err);
  /* Can this node restore the image whose flint.meta is in `image_dir`? 0, or -1 with `err`
   * (FLINT_EPRECONDITION, naming what does not match). Nothing has been restored yet. */
  int (*check) (const char *image_dir, flint_error_t *err);
  /* After the CRIU restore of `pid` (still stopped by nothing: CRIU resumed it): its device
   * state comes back. */
  int (*restore) (pid_t pid, flint_error_t *err);
} flint_devckpt_ops_t;

/* CPU workers: no device state. */
extern const flint_devckpt_ops_t flint_devckpt_none;

/* The table for a worker (`gpu` from its sandbox spec), or NULL with `err` when this build or
 * this node has no device checkpoint support for it (no CUDA toolkit at build time, no driver,
 * a driver without the checkpoint API). */
const flint_devckpt_ops_t *flint_devckpt_for (bool gpu, flint_error_t *err);

/* Probes device checkpoint support once, at the snapshotter's start: on a node with an NVIDIA
 * GPU this initialises the CUDA driver in the resident snapshotter (a CUDA restore needs an
 * initialised driver in the caller; a helper spawned per restore pays ~2.7 s for it). Writes one
 * line for the helper status: the GPU and driver, or why GPU workers cannot be snapshotted here.
 * Never fails: CPU workers need none of it. */
void flint_devckpt_probe (char *summary, size_t len);

/* devckpt_cuda.c (built with the CUDA toolkit): the CUDA table, NULL with `err` where the node
 * cannot checkpoint GPU workers; and the probe behind flint_devckpt_probe. */
const flint_devckpt_ops_t *flint__devckpt_cuda (flint_error_t *err);
void flint__devckpt_cuda_probe (char *summary, size_t len);

/* ---- the GPU checks, separate from the driver calls so that they are tested on any machine */

/* What a node offers a GPU image (devckpt_cuda.c fills it from the driver). */
typedef struct flint_devckpt_gpu_s {
  char model[96];             /* cuDeviceGetName */
  int driver;                 /* cuDriverGetVersion: 12080 = 12.8 */
  unsigned long long free_bytes;
} flint_devckpt_gpu_t;

/* Bytes kept free beyond what an image needs: the restored context's own allocations vary. */
#define FLINT_DEVCKPT_GPU_MARGIN (256ull << 20)

/* Can a node with `gpu` restore an image whose meta says `model`, `driver` (decimal, as
 * describe wrote it) and `need` bytes of device memory (decimal)? 0, or -1 with
 * FLINT_EPRECONDITION naming the mismatch ("the image was taken on `NVIDIA H100 80GB HBM3`, this
 * node has `NVIDIA A100-SXM4-80GB`", "... needs 9.1 GiB of GPU memory, 3.2 GiB are free").
 * Absent fields (empty strings) in the image are an error: a GPU image always has them. */
int flint_devckpt_gpu_match (const char *model, const char *driver, const char *need, const flint_devckpt_gpu_t *gpu,
                             flint_error_t *err);

#endif
