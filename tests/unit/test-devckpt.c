/* Device checkpoints without a GPU: the checks a CUDA restore must pass before it is attempted
 * (flint_devckpt_gpu_match: GPU model, driver, free memory), the table choice per worker, and the
 * probe's account of why GPU workers cannot be snapshotted on this machine. The driver calls
 * themselves run only on a GPU (tests/gpu/run-on-device). */
#include "tap.h"
#include "devckpt.h"
#include "flint-config.h"

static void
test_match (void)
{
  flint_devckpt_gpu_t h100 = { "NVIDIA H100 80GB HBM3", 12080, 40ull << 30 };
  flint_error_t err = FLINT_ERROR_INIT;

  ok (flint_devckpt_gpu_match ("NVIDIA H100 80GB HBM3", "12080", "9000000000", &h100, &err) == 0,
      "same GPU, same driver, room to spare: restore");
  flint_error_clear (&err);
  ok (flint_devckpt_gpu_match ("NVIDIA A100-SXM4-80GB", "12080", "1000", &h100, &err) < 0 && err.code == FLINT_EPRECONDITION,
      "another GPU model is refused");
  contains (err.msg, "`NVIDIA A100-SXM4-80GB`", "the message names the image's GPU");
  contains (err.msg, "`NVIDIA H100 80GB HBM3`", "and the node's");
  flint_error_clear (&err);
  ok (flint_devckpt_gpu_match ("NVIDIA H100 80GB HBM3", "12020", "1000", &h100, &err) < 0, "another driver is refused");
  contains (err.msg, "12020", "the message names the image's driver");
  contains (err.msg, "12.8", "and the node's");
  flint_error_clear (&err);
  ok (flint_devckpt_gpu_match ("NVIDIA H100 80GB HBM3", "12080", "42949672960", &h100, &err) < 0,
      "an image that needs all the free memory is refused (the margin)");
  contains (err.msg, "40.0 GiB", "the message says what the image needs");
  contains (err.msg, "stuck", "and why restoring anyway is not an option");
  flint_error_clear (&err);
  {
    flint_devckpt_gpu_t tight = h100;
    tight.free_bytes = (1ull << 30) + FLINT_DEVCKPT_GPU_MARGIN;
    ok (flint_devckpt_gpu_match ("NVIDIA H100 80GB HBM3", "12080", "1073741824", &tight, &err) == 0,
        "exactly the need plus the margin fits");
    tight.free_bytes--;
    ok (flint_devckpt_gpu_match ("NVIDIA H100 80GB HBM3", "12080", "1073741824", &tight, &err) < 0,
        "one byte less does not");
  }
  flint_error_clear (&err);
  ok (flint_devckpt_gpu_match ("", "", "", &h100, &err) < 0, "an image without a GPU record is refused");
  contains (err.msg, "gpu_model", "naming the missing fields");
  flint_error_clear (&err);
  ok (flint_devckpt_gpu_match ("NVIDIA H100 80GB HBM3", "12080", "12x", &h100, &err) < 0, "a garbled size is refused");
}

static void
test_tables (void)
{
  flint_error_t err = FLINT_ERROR_INIT;
  const flint_devckpt_ops_t *cpu = flint_devckpt_for (false, &err), *gpu;
  char summary[512];

  ok (cpu == &flint_devckpt_none, "CPU workers get the no-op table");
  flint_devckpt_probe (summary, sizeof summary);
  printf ("# probe: %s\n", summary);
  gpu = flint_devckpt_for (true, &err);
  if (gpu == NULL)
    {
      /* this machine has no GPU: the refusal must say so, and the probe must agree */
      ok (err.msg[0] != '\0', "GPU workers are refused with a reason here: %s", err.msg);
      contains (summary, "not snapshotted", "the probe's status line says GPU workers are not snapshotted");
#if FLINT_HAVE_CUDA
      contains (err.msg, "cannot be snapshotted on this node", "the reason is the node's, not the build's");
#endif
    }
  else
    {
      ok (gpu->name && strcmp (gpu->name, "cuda") == 0, "a GPU node gets the CUDA table");
      contains (summary, "initialised", "the probe initialised the driver");
    }
}

int
main (void)
{
  test_match ();
  test_tables ();
  return tap_done ();
}
