/* Device checkpoints for CPU workers: there is no device state, every step succeeds at once.
 * See devckpt.h for where the CUDA implementation goes. */
#include "devckpt.h"

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
      flint_error_set (err, FLINT_EUNIMPLEMENTED,
                       "GPU workers are not snapshotted yet: this snapshotter has no CUDA checkpoint support");
      return NULL;
    }
  return &flint_devckpt_none;
}
