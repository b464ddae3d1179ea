/* The CUDA driver API loaded at run time (see flint/cudadrv.h).
 *
 * One process-wide table, filled under pthread_once: the driver must be initialised once per
 * process, and every CUDA user in a process shares the same library instance (the CUDA runtime
 * linked into the engine dlopens the same libcuda.so.1, so contexts are shared too). */
#include "flint/cudadrv.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static flint_cudadrv_t drv;
static flint_error_t load_err = FLINT_ERROR_INIT;
static bool loaded;
static pthread_once_t once = PTHREAD_ONCE_INIT;

#define XSTR(x) STR (x)
#define STR(x) #x

/* Required entry points: their absence makes the driver unusable for flint. */
#define REQUIRED(X)                                                                                    \
  X (cuInit)                                                                                           \
  X (cuDriverGetVersion)                                                                               \
  X (cuGetErrorName)                                                                                   \
  X (cuGetErrorString)                                                                                 \
  X (cuDeviceGetCount)                                                                                 \
  X (cuDeviceGet)                                                                                      \
  X (cuDeviceGetName)                                                                                  \
  X (cuDeviceGetUuid)                                                                                  \
  X (cuDeviceTotalMem)                                                                                 \
  X (cuDeviceGetAttribute)                                                                             \
  X (cuDevicePrimaryCtxRetain)                                                                         \
  X (cuDevicePrimaryCtxRelease)                                                                        \
  X (cuCtxSetCurrent)                                                                                  \
  X (cuCtxGetCurrent)                                                                                  \
  X (cuMemGetInfo)                                                                                     \
  X (cuMemGetAllocationGranularity)                                                                    \
  X (cuMemAddressReserve)                                                                              \
  X (cuMemAddressFree)                                                                                 \
  X (cuMemCreate)                                                                                      \
  X (cuMemRelease)                                                                                     \
  X (cuMemMap)                                                                                         \
  X (cuMemUnmap)                                                                                       \
  X (cuMemSetAccess)

#define OPTIONAL(X)                                                                                    \
  X (cuCheckpointProcessLock)                                                                          \
  X (cuCheckpointProcessCheckpoint)                                                                    \
  X (cuCheckpointProcessRestore)                                                                       \
  X (cuCheckpointProcessUnlock)                                                                        \
  X (cuCheckpointProcessGetState)                                                                      \
  X (cuCheckpointProcessGetRestoreThreadId)

/* Where drivers put libcuda when the loader's cache does not list it (containers that mount
 * the driver, as the NVIDIA container toolkit does, under /usr/local/nvidia). */
static const char *const fallback_paths[] = {
  "/usr/local/nvidia/lib64/libcuda.so.1",
  "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
  "/usr/lib64/libcuda.so.1",
};

static void
load_once (void)
{
  const char *path = getenv ("FLINT_LIBCUDA");
  char first[512];
  void *lib;
  CUresult r;

  if (path == NULL || path[0] == '\0')
    path = "libcuda.so.1";
  lib = dlopen (path, RTLD_NOW | RTLD_GLOBAL);
  snprintf (first, sizeof first, "%s", lib ? "" : dlerror ());
  for (size_t i = 0; lib == NULL && getenv ("FLINT_LIBCUDA") == NULL && i < sizeof fallback_paths / sizeof fallback_paths[0];
       i++)
    if ((lib = dlopen (fallback_paths[i], RTLD_NOW | RTLD_GLOBAL)) != NULL)
      path = fallback_paths[i];
  if (lib == NULL)
    {
      flint_error_set (&load_err, FLINT_EPRECONDITION, "no NVIDIA driver: %s", first);
      return;
    }
  /* dlsym returns void *; the table's types are cuda.h's prototypes */
#define LOAD_REQ(f)                                                                                    \
  *(void **) (&drv.f) = dlsym (lib, XSTR (f));                                                         \
  if (drv.f == NULL)                                                                                   \
    {                                                                                                  \
      flint_error_set (&load_err, FLINT_EPRECONDITION, "the NVIDIA driver `%s` lacks `%s` (too old?)", path, \
                       XSTR (f));                                                                      \
      dlclose (lib);                                                                                   \
      memset (&drv, 0, sizeof drv);                                                                    \
      return;                                                                                          \
    }
#define LOAD_OPT(f) *(void **) (&drv.f) = dlsym (lib, XSTR (f));
  REQUIRED (LOAD_REQ)
  OPTIONAL (LOAD_OPT)
#undef LOAD_REQ
#undef LOAD_OPT
  drv.lib = lib;
  r = drv.cuInit (0);
  if (r != CUDA_SUCCESS)
    {
      flint_error_set (&load_err, FLINT_EPRECONDITION, "cuInit: %s", flint_cudadrv_strerror (&drv, r));
      return;
    }
  if (drv.cuDriverGetVersion (&drv.driver_version) != CUDA_SUCCESS)
    drv.driver_version = 0;
  loaded = true;
}

const flint_cudadrv_t *
flint_cudadrv_load (flint_error_t *err)
{
  pthread_once (&once, load_once);
  if (!loaded)
    {
      flint_error_set (err, load_err.code, "%s", load_err.msg);
      return NULL;
    }
  return &drv;
}

/* The results a driver that cannot name them (the toolkit's stub library) is likely to give. */
static const struct {
  CUresult r;
  const char *name, *text;
} known[] = {
  { CUDA_ERROR_STUB_LIBRARY, "CUDA_ERROR_STUB_LIBRARY", "libcuda is the toolkit's stub, not a driver" },
  { CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected" },
  { CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error" },
  { CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory" },
  { CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported" },
};

const char *
flint_cudadrv_strerror (const flint_cudadrv_t *d, CUresult r)
{
  static __thread char buf[256];
  const char *name = NULL, *text = NULL;

  if (d && d->cuGetErrorName && d->cuGetErrorName (r, &name) != CUDA_SUCCESS)
    name = NULL;
  if (d && d->cuGetErrorString && d->cuGetErrorString (r, &text) != CUDA_SUCCESS)
    text = NULL;
  for (size_t i = 0; name == NULL && i < sizeof known / sizeof known[0]; i++)
    if (known[i].r == r)
      {
        name = known[i].name;
        text = known[i].text;
      }
  if (name && text)
    snprintf (buf, sizeof buf, "%s: %s", name, text);
  else if (name)
    snprintf (buf, sizeof buf, "%s", name);
  else
    snprintf (buf, sizeof buf, "CUDA driver error %d", (int) r);
  return buf;
}

bool
flint_cudadrv_has_checkpoint (const flint_cudadrv_t *d)
{
  return d && d->cuCheckpointProcessLock && d->cuCheckpointProcessCheckpoint && d->cuCheckpointProcessRestore
         && d->cuCheckpointProcessUnlock && d->cuCheckpointProcessGetState;
}
