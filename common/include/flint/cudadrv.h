/* The CUDA driver API (libcuda.so.1), loaded at run time.
 *
 * flint binaries must start on machines without an NVIDIA driver: nothing links libcuda. The
 * model engine's CUDA backend and the snapshotter's device checkpoints call the driver through
 * this table instead, filled once by dlopen/dlsym. Built only when the CUDA toolkit's headers
 * were found (FLINT_HAVE_CUDA); the prototypes are cuda.h's own, so a driver API change shows
 * up as a compile error here rather than as a wrong call.
 *
 * Field names are the driver's entry points as cuda.h spells them after its versioning macros
 * (cuMemGetInfo is cuMemGetInfo_v2), so callers write `d->cuMemGetInfo (...)` exactly as they
 * would call the function. */
#ifndef FLINT_CUDADRV_H
#define FLINT_CUDADRV_H

#include "flint/error.h"

#include <cuda.h>
#include <stdbool.h>

#define FLINT_CUDADRV_FN(f) __typeof__ (&f) f;

typedef struct flint_cudadrv_s {
  void *lib;
  int driver_version;          /* cuDriverGetVersion: 12080 = 12.8 */
  /* always present */
  FLINT_CUDADRV_FN (cuInit)
  FLINT_CUDADRV_FN (cuDriverGetVersion)
  FLINT_CUDADRV_FN (cuGetErrorName)
  FLINT_CUDADRV_FN (cuGetErrorString)
  FLINT_CUDADRV_FN (cuDeviceGetCount)
  FLINT_CUDADRV_FN (cuDeviceGet)
  FLINT_CUDADRV_FN (cuDeviceGetName)
  FLINT_CUDADRV_FN (cuDeviceGetUuid)
  FLINT_CUDADRV_FN (cuDeviceTotalMem)
  FLINT_CUDADRV_FN (cuDeviceGetAttribute)
  FLINT_CUDADRV_FN (cuDevicePrimaryCtxRetain)
  FLINT_CUDADRV_FN (cuDevicePrimaryCtxRelease)
  FLINT_CUDADRV_FN (cuCtxSetCurrent)
  FLINT_CUDADRV_FN (cuCtxGetCurrent)
  FLINT_CUDADRV_FN (cuMemGetInfo)
  /* virtual memory management */
  FLINT_CUDADRV_FN (cuMemGetAllocationGranularity)
  FLINT_CUDADRV_FN (cuMemAddressReserve)
  FLINT_CUDADRV_FN (cuMemAddressFree)
  FLINT_CUDADRV_FN (cuMemCreate)
  FLINT_CUDADRV_FN (cuMemRelease)
  FLINT_CUDADRV_FN (cuMemMap)
  FLINT_CUDADRV_FN (cuMemUnmap)
  FLINT_CUDADRV_FN (cuMemSetAccess)
  /* checkpoints (drivers >= 550; NULL when the driver lacks them) */
  FLINT_CUDADRV_FN (cuCheckpointProcessLock)
  FLINT_CUDADRV_FN (cuCheckpointProcessCheckpoint)
  FLINT_CUDADRV_FN (cuCheckpointProcessRestore)
  FLINT_CUDADRV_FN (cuCheckpointProcessUnlock)
  FLINT_CUDADRV_FN (cuCheckpointProcessGetState)
  FLINT_CUDADRV_FN (cuCheckpointProcessGetRestoreThreadId)
} flint_cudadrv_t;

#undef FLINT_CUDADRV_FN

/* Loads libcuda.so.1 (or the file named by FLINT_LIBCUDA; without it, also the usual driver
 * directories the loader's cache may not list) and calls cuInit(0), once per process; later calls return the same table. Returns the table, or NULL with `err`
 * (FLINT_EPRECONDITION) saying why no GPU can be used: no driver library ("libcuda.so.1: cannot
 * open shared object file"), a driver without an entry point flint needs, or cuInit's error
 * ("CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected"). Thread-safe. The table is
 * never freed (the driver stays loaded for the process's lifetime, as it must for CUDA). */
const flint_cudadrv_t *flint_cudadrv_load (flint_error_t *err);

/* "CUDA_ERROR_OUT_OF_MEMORY: out of memory" for `r` (static storage, or a number when the driver
 * cannot name it). */
const char *flint_cudadrv_strerror (const flint_cudadrv_t *d, CUresult r);

/* True when the driver has the checkpoint entry points (cuCheckpointProcess*). */
bool flint_cudadrv_has_checkpoint (const flint_cudadrv_t *d);

#endif
