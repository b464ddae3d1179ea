/* Device checkpoints of GPU workers through the CUDA driver checkpoint API.
 *
 * The snapshotter is resident and initialises the driver once (flint_devckpt_probe at start):
 * cuCheckpointProcessRestore needs an initialised driver in the caller, and the anchors measured
 * ~2.7 s of driver start for every spawned cuda-checkpoint. libcuda is loaded with dlopen
 * (flint/cudadrv.h), so the same snapshotter runs on CPU-only nodes and only GPU workers are
 * refused there.
 *
 * The calls wrap CRIU's (see devckpt.h):
 *   checkpoint  cuCheckpointProcessLock (the process's CUDA calls block) then
 *               cuCheckpointProcessCheckpoint: the driver copies the process's device memory into
 *               its host memory and drops every device reference, so CRIU sees a plain process.
 *               The device memory this releases (free memory after minus before) is what a
 *               restore will need: describe() records it as gpu_mem_needed.
 *   resume      after the dump of a worker that keeps running: Restore, then Unlock.
 *   check       before anything is restored: same GPU model, same driver, enough free memory
 *               (flint_devckpt_gpu_match). A CUDA restore that runs out of memory leaves the
 *               process stuck, so it is never attempted on a hunch.
 *   restore     after CRIU restored (and resumed) the process: Restore, then Unlock.
 * With weights set aside (the llm hooks run before the checkpoint), the image holds activations,
 * the context and CUDA graphs, not the weights: that is what makes GPU restores fast.
 *
 * A `gpu` worker that never initialised CUDA (an llm that found no GPU and runs on the CPU) has
 * no CUDA state: every step is then a no-op and the image says cuda_process=no.
 *
 * Free device memory comes from NVML (libnvidia-ml.so.1, part of the driver), which needs no
 * CUDA context; without NVML the snapshotter retains the device's primary context for the
 * query and releases it again (slower, and only then does it hold device memory). The GPU is
 * device 0: one GPU per node for now. */
#include "devckpt.h"
#include "flint/cudadrv.h"
#include "flint/util.h"
#include "images.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCK_TIMEOUT_MS 10000
#define MAX_RECORDS 32

/* ---- NVML, declared here: its header is not part of the CUDA toolkit ------------------------ */

typedef struct nvml_memory_s {
  unsigned long long total, free, used;
} nvml_memory_t;
typedef void *nvml_device_t;

static struct {
  bool tried, ok;
  int (*init) (void);
  int (*by_index) (unsigned int, nvml_device_t *);
  int (*memory) (nvml_device_t, nvml_memory_t *);
  nvml_device_t dev;
} nvml;

static void
nvml_load (void)
{
  void *lib;
  if (nvml.tried)
    return;
  nvml.tried = true;
  lib = dlopen ("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL)
    return;
  *(void **) (&nvml.init) = dlsym (lib, "nvmlInit_v2");
  *(void **) (&nvml.by_index) = dlsym (lib, "nvmlDeviceGetHandleByIndex_v2");
  *(void **) (&nvml.memory) = dlsym (lib, "nvmlDeviceGetMemoryInfo");
  nvml.ok = nvml.init && nvml.by_index && nvml.memory && nvml.init () == 0 && nvml.by_index (0, &nvml.dev) == 0;
}

/* ---- the node's GPU -------------------------------------------------------------------------- */

static struct {
  bool probed;
  const flint_cudadrv_t *drv;
  flint_error_t why;              /* when drv is NULL or lacks the checkpoint API */
  CUdevice dev;
  char model[96];
  char uuid[40];
  size_t total;
} g;

/* What each checkpointed process needed (describe() runs after the dump). */
static struct {
  pid_t pid;
  bool cuda;
  unsigned long long need;
} rec[MAX_RECORDS];
static size_t rec_next;

static void
probe_once (void)
{
  CUuuid u;
  CUresult r;

  if (g.probed)
    return;
  g.probed = true;
  g.drv = flint_cudadrv_load (&g.why);
  if (g.drv == NULL)
    return;
  if (!flint_cudadrv_has_checkpoint (g.drv))
    {
      flint_error_set (&g.why, FLINT_EPRECONDITION, "the NVIDIA driver (%d.%d) has no checkpoint API (cuCheckpointProcess*, "
                       "drivers >= 550)", g.drv->driver_version / 1000, g.drv->driver_version % 1000 / 10);
      g.drv = NULL;
      return;
    }
  if ((r = g.drv->cuDeviceGet (&g.dev, 0)) != CUDA_SUCCESS
      || (r = g.drv->cuDeviceGetName (g.model, sizeof g.model, g.dev)) != CUDA_SUCCESS)
    {
      flint_error_set (&g.why, FLINT_EPRECONDITION, "no CUDA device 0: %s", flint_cudadrv_strerror (g.drv, r));
      g.drv = NULL;
      return;
    }
  g.drv->cuDeviceTotalMem (&g.total, g.dev);
  if (g.drv->cuDeviceGetUuid (&u, g.dev) == CUDA_SUCCESS)
    for (int i = 0; i < 16; i++)
      snprintf (g.uuid + 2 * i, sizeof g.uuid - 2 * i, "%02x", (unsigned char) u.bytes[i]);
  nvml_load ();
}

/* Free device memory now; 0 and `err` when it cannot be read. */
static int
free_memory (unsigned long long *out, flint_error_t *err)
{
  CUcontext ctx = NULL;
  size_t fr = 0, tot = 0;
  CUresult r;

  if (nvml.ok)
    {
      nvml_memory_t m;
      if (nvml.memory (nvml.dev, &m) == 0)
        {
          *out = m.free;
          return 0;
        }
    }
  r = g.drv->cuDevicePrimaryCtxRetain (&ctx, g.dev);
  if (r == CUDA_SUCCESS && (r = g.drv->cuCtxSetCurrent (ctx)) == CUDA_SUCCESS)
    r = g.drv->cuMemGetInfo (&fr, &tot);
  if (ctx)
    {
      g.drv->cuCtxSetCurrent (NULL);
      g.drv->cuDevicePrimaryCtxRelease (g.dev);
    }
  if (r != CUDA_SUCCESS)
    return flint_error_set (err, FLINT_EINTERNAL, "read the GPU's free memory: %s", flint_cudadrv_strerror (g.drv, r));
  *out = fr;
  return 0;
}

static const char *
state_name (CUprocessState s)
{
  switch (s)
    {
    case CU_PROCESS_STATE_RUNNING: return "running";
    case CU_PROCESS_STATE_LOCKED: return "locked";
    case CU_PROCESS_STATE_CHECKPOINTED: return "checkpointed";
    case CU_PROCESS_STATE_FAILED: return "failed";
    default: return "unknown";
    }
}

/* The CUDA state of `pid`; false when it has none (it never initialised CUDA). */
static bool
cuda_state (pid_t pid, CUprocessState *out)
{
  return g.drv->cuCheckpointProcessGetState ((int) pid, out) == CUDA_SUCCESS;
}

static void
remember (pid_t pid, bool cuda, unsigned long long need)
{
  for (size_t i = 0; i < MAX_RECORDS; i++)
    if (rec[i].pid == pid)
      {
        rec[i].cuda = cuda;
        rec[i].need = need;
        return;
      }
  rec[rec_next] = (typeof (rec[0])) { pid, cuda, need };
  rec_next = (rec_next + 1) % MAX_RECORDS;
}

static bool
recall (pid_t pid, unsigned long long *need)
{
  for (size_t i = 0; i < MAX_RECORDS; i++)
    if (rec[i].pid == pid)
      {
        *need = rec[i].need;
        return rec[i].cuda;
      }
  *need = 0;
  return false;
}

static int
cuda_fail (flint_error_t *err, const char *what, pid_t pid, CUresult r)
{
  CUprocessState st = CU_PROCESS_STATE_FAILED;
  int tid = 0;
  bool have = cuda_state (pid, &st);
  if (g.drv->cuCheckpointProcessGetRestoreThreadId)
    g.drv->cuCheckpointProcessGetRestoreThreadId ((int) pid, &tid);
  return flint_error_set (err, FLINT_EINTERNAL, "%s of pid %d: %s (its CUDA state is now %s, restore thread %d)", what,
                          (int) pid, flint_cudadrv_strerror (g.drv, r), have ? state_name (st) : "unknown", tid);
}

/* ---- the table ------------------------------------------------------------------------------- */

static size_t
cuda_describe (pid_t pid, flint_devckpt_kv_t *out, size_t max)
{
  unsigned long long need = 0;
  bool cuda = recall (pid, &need);
  size_t n = 0;

#define PUT(k, ...)                                                                                    \
  do                                                                                                   \
    if (n < max)                                                                                       \
      {                                                                                                \
        snprintf (out[n].key, sizeof out[n].key, "%s", k);                                             \
        snprintf (out[n].value, sizeof out[n].value, __VA_ARGS__);                                     \
        n++;                                                                                           \
      }                                                                                                \
  while (0)
  PUT ("cuda_process", "%s", cuda ? "yes" : "no");
  PUT ("gpu_model", "%s", g.model);
  PUT ("gpu_uuid", "%s", g.uuid);
  PUT ("cuda_driver", "%d", g.drv->driver_version);
  PUT ("gpu_mem_needed", "%llu", need);
  PUT ("gpu_mem_total", "%llu", (unsigned long long) g.total);
#undef PUT
  return n;
}

static int
cuda_checkpoint (pid_t pid, flint_error_t *err)
{
  CUcheckpointLockArgs la;
  CUcheckpointCheckpointArgs ca;
  CUprocessState st;
  unsigned long long f0 = 0, f1 = 0;
  CUresult r;

  if (!cuda_state (pid, &st))
    {
      remember (pid, false, 0);
      return 0;
    }
  if (st != CU_PROCESS_STATE_RUNNING)
    return flint_error_set (err, FLINT_EPRECONDITION, "the worker's CUDA state is %s, not running", state_name (st));
  if (free_memory (&f0, err) < 0)
    return -1;
  memset (&la, 0, sizeof la);
  la.timeoutMs = LOCK_TIMEOUT_MS;
  r = g.drv->cuCheckpointProcessLock ((int) pid, &la);
  if (r != CUDA_SUCCESS)
    return cuda_fail (err, "cuCheckpointProcessLock (in-flight CUDA work did not finish in 10 s?)", pid, r);
  memset (&ca, 0, sizeof ca);
  r = g.drv->cuCheckpointProcessCheckpoint ((int) pid, &ca);
  if (r != CUDA_SUCCESS)
    {
      cuda_fail (err, "cuCheckpointProcessCheckpoint", pid, r);
      {
        CUcheckpointUnlockArgs ua;
        memset (&ua, 0, sizeof ua);
        g.drv->cuCheckpointProcessUnlock ((int) pid, &ua);
      }
      return -1;
    }
  if (free_memory (&f1, err) < 0)
    f1 = f0; /* the checkpoint stands; the image then records 0 and check() demands the margin only */
  remember (pid, true, f1 > f0 ? f1 - f0 : 0);
  return 0;
}

/* Restore + Unlock of a checkpointed (or just locked) process. */
static int
bring_back (pid_t pid, flint_error_t *err)
{
  CUcheckpointRestoreArgs ra;
  CUcheckpointUnlockArgs ua;
  CUprocessState st;
  CUresult r;

  if (!cuda_state (pid, &st))
    return 0; /* no CUDA state: a `gpu` worker that runs on the CPU */
  if (st == CU_PROCESS_STATE_CHECKPOINTED)
    {
      memset (&ra, 0, sizeof ra);
      r = g.drv->cuCheckpointProcessRestore ((int) pid, &ra);
      if (r != CUDA_SUCCESS)
        return cuda_fail (err, "cuCheckpointProcessRestore", pid, r);
      st = CU_PROCESS_STATE_LOCKED;
    }
  if (st == CU_PROCESS_STATE_LOCKED)
    {
      memset (&ua, 0, sizeof ua);
      r = g.drv->cuCheckpointProcessUnlock ((int) pid, &ua);
      if (r != CUDA_SUCCESS)
        return cuda_fail (err, "cuCheckpointProcessUnlock", pid, r);
      return 0;
    }
  if (st != CU_PROCESS_STATE_RUNNING)
    return flint_error_set (err, FLINT_EINTERNAL, "the restored worker's CUDA state is %s", state_name (st));
  return 0;
}

static int
cuda_check (const char *image_dir, flint_error_t *err)
{
  char cuda[8] = "", model[128] = "", driver[32] = "", need[32] = "";
  flint_error_t e2 = FLINT_ERROR_INIT;
  flint_devckpt_gpu_t node = { 0 };

  flint_image_meta_get (image_dir, "cuda_process", cuda, sizeof cuda, &e2);
  if (strcmp (cuda, "no") == 0)
    return 0;
  flint_image_meta_get (image_dir, "gpu_model", model, sizeof model, &e2);
  flint_image_meta_get (image_dir, "cuda_driver", driver, sizeof driver, &e2);
  flint_image_meta_get (image_dir, "gpu_mem_needed", need, sizeof need, &e2);
  snprintf (node.model, sizeof node.model, "%s", g.model);
  node.driver = g.drv->driver_version;
  if (free_memory (&node.free_bytes, err) < 0)
    return -1;
  return flint_devckpt_gpu_match (model, driver, need, &node, err);
}

static const flint_devckpt_ops_t cuda_ops = {
  .name = "cuda",
  .describe = cuda_describe,
  .checkpoint = cuda_checkpoint,
  .resume = bring_back,
  .check = cuda_check,
  .restore = bring_back,
};

const flint_devckpt_ops_t *
flint__devckpt_cuda (flint_error_t *err)
{
  probe_once ();
  if (g.drv == NULL)
    {
      flint_error_set (err, FLINT_EPRECONDITION, "GPU workers cannot be snapshotted on this node: %s", g.why.msg);
      return NULL;
    }
  return &cuda_ops;
}

void
flint__devckpt_cuda_probe (char *summary, size_t len)
{
  uint64_t t0 = flint_now_ns ();
  probe_once ();
  if (g.drv == NULL)
    snprintf (summary, len, "GPU workers are not snapshotted here: %s", g.why.msg);
  else
    snprintf (summary, len, "CUDA driver %d.%d initialised in %.0f ms, GPU `%s` (%.0f GiB), free memory from %s",
              g.drv->driver_version / 1000, g.drv->driver_version % 1000 / 10, (double) (flint_now_ns () - t0) / 1e6,
              g.model, (double) g.total / (1u << 30), nvml.ok ? "NVML" : "cuMemGetInfo");
}
