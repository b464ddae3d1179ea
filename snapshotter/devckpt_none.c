/* Device checkpoints for CPU workers: there is no device state, every step succeeds at once.
 * Also the choice of table per worker, and the GPU checks that need no driver (so that they are
 * tested everywhere); the CUDA table itself is devckpt_cuda.c. */
#include "devckpt.h"
#include "flint-config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t
none_describe (pid_t pid, flint_devckpt_kv_t *out, size_t max)
{
  (void) pid;
  (void) out;
  (void) max;
  return 0;
}

static int
none_pid (pid_t pid, flint_error_t *err)
{
  (void) pid;
  (void) err;
  return 0;
}

static int
none_check (const char *image_dir, flint_error_t *err)
{
  (void) image_dir;
  (void) err;
  return 0;
}

const flint_devckpt_ops_t flint_devckpt_none = {
  .name = "none",
  .describe = none_describe,
  .checkpoint = none_pid,
  .resume = none_pid,
  .check = none_check,
  .restore = none_pid,
};

const flint_devckpt_ops_t *
flint_devckpt_for (bool gpu, flint_error_t *err)
{
  if (gpu)
    {
#if FLINT_HAVE_CUDA
      return flint__devckpt_cuda (err);
#else
      flint_error_set (err, FLINT_EUNIMPLEMENTED,
                       "GPU workers are not snapshotted: this snapshotter was built without the CUDA toolkit");
      return NULL;
#endif
    }
  return &flint_devckpt_none;
}

void
flint_devckpt_probe (char *summary, size_t len)
{
#if FLINT_HAVE_CUDA
  flint__devckpt_cuda_probe (summary, len);
#else
  snprintf (summary, len, "GPU workers are not snapshotted (built without the CUDA toolkit)");
#endif
}

static const char *
gib (unsigned long long b, char *buf, size_t len)
{
  snprintf (buf, len, "%.1f GiB", (double) b / (1024.0 * 1024 * 1024));
  return buf;
}

int
flint_devckpt_gpu_match (const char *model, const char *driver, const char *need, const flint_devckpt_gpu_t *gpu,
                         flint_error_t *err)
{
  unsigned long long n;
  char *end, a[32], b[32];
  long drv;

  if (model == NULL || model[0] == '\0' || driver == NULL || driver[0] == '\0' || need == NULL || need[0] == '\0')
    return flint_error_set (err, FLINT_EPRECONDITION, "the image's meta lacks its GPU record (gpu_model, cuda_driver, "
                            "gpu_mem_needed): it was not taken by a CUDA snapshotter");
  if (strcmp (model, gpu->model) != 0)
    return flint_error_set (err, FLINT_EPRECONDITION, "the image was taken on `%s`, this node has `%s`", model,
                            gpu->model);
  errno = 0;
  drv = strtol (driver, &end, 10);
  if (errno || *end || drv != gpu->driver)
    return flint_error_set (err, FLINT_EPRECONDITION,
                            "the image was taken with CUDA driver %s, this node runs %d.%d (a CUDA restore needs the "
                            "same driver)", driver, gpu->driver / 1000, gpu->driver % 1000 / 10);
  errno = 0;
  n = strtoull (need, &end, 10);
  if (errno || *end)
    return flint_error_set (err, FLINT_EPRECONDITION, "the image's gpu_mem_needed `%s` is not a number", need);
  if (gpu->free_bytes < n + FLINT_DEVCKPT_GPU_MARGIN)
    return flint_error_set (err, FLINT_EPRECONDITION,
                            "the image needs %s of GPU memory (plus %llu MiB of margin), %s are free: not restoring "
                            "(a CUDA restore that runs out of memory leaves the process stuck)",
                            gib (n, a, sizeof a), FLINT_DEVCKPT_GPU_MARGIN >> 20, gib (gpu->free_bytes, b, sizeof b));
  return 0;
}
