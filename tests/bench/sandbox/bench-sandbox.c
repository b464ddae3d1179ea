/* Benchmark: sandbox setup time, clone to function-init start, against a plain fork+exec of the
 * same worker measured in the same run.
 *
 * Each trial spawns flint-worker (through the sandbox library, exactly as the spawner does) and
 * stops the clock when the worker's Hello frame arrives on its channel: the worker is running
 * and about to load the function. Trials alternate between the two modes so that machine noise
 * hits both alike. Prints a Markdown table (and the per-phase breakdown of the sandbox).
 *
 * usage: bench-sandbox WORKER BUNDLE_DIR [TRIALS] */
#include "sandbox.h"
#include "flint/frame.h"
#include "flint/util.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

static double
pct (double *v, int n, double q)
{
  qsort (v, (size_t) n, sizeof *v, cmp_double);
  return v[(int) (q * (n - 1) + 0.5)];
}

static int
one (flint_sandbox_node_t *node, char *worker, const char *bundle, double *ms, flint_sandbox_timings_t *tm)
{
  int chan = -1, devnull = open ("/dev/null", O_WRONLY | O_CLOEXEC);
  char *argv[] = { worker, NULL };
  char *env[] = { (char *) "PATH=/usr/bin:/bin", NULL };
  flint_sandbox_spec_t spec = {
    .id = "bench", .bundle_dir = bundle, .argv = argv, .env = env, .memory_bytes = 256u << 20,
    .cpu_millis = 1000, .pids_max = 64, .tmp_bytes = 16u << 20, .nofile = 1024, .hostname = "bench",
  };
  flint_error_t err = FLINT_ERROR_INIT;
  flint_sandbox_t *sb;
  uint8_t *buf = NULL;
  size_t len, nfds = 0;
  uint64_t t0;
  int status;

  spec.stdout_fd = spec.stderr_fd = devnull;
  t0 = flint_now_ns ();
  if (flint_sandbox_spawn (node, &spec, &sb, &chan, tm, &err) < 0)
    {
      fprintf (stderr, "spawn: %s\n", err.msg);
      return -1;
    }
  if (flint_frame_recv (chan, 1 << 16, &buf, &len, NULL, &nfds) != 1)
    {
      fprintf (stderr, "no hello from the worker\n");
      return -1;
    }
  *ms = (double) (flint_now_ns () - t0) / 1e6;
  free (buf);
  close (chan); /* the worker exits when its channel closes */
  close (devnull);
  flint_sandbox_kill (sb);
  waitpid (flint_sandbox_pid (sb), &status, 0);
  flint_sandbox_finish (sb, status, NULL);
  return 0;
}

int
main (int argc, char **argv)
{
  flint_sandbox_options_t iso = { .isolate = true, .userns = true, .uid_base = 100000,
                                  .run_dir = "/dev/shm/flint-bench-sandbox", .cgroup_parent = "flint-bench",
                                  .uid = 65534, .gid = 65534 };
  flint_sandbox_options_t plain = iso;
  flint_sandbox_node_t *n_iso, *n_plain;
  flint_error_t err = FLINT_ERROR_INIT;
  int trials = argc > 3 ? atoi (argv[3]) : 200;
  double *a = calloc ((size_t) trials, sizeof *a), *b = calloc ((size_t) trials, sizeof *b);
  double ph[FLINT_SANDBOX_PHASES][4096];
  const char *names[FLINT_SANDBOX_PHASES] = { "clone", "cgroup", "mounts", "creds+seccomp", "exec", "spawn call" };

  if (argc < 3)
    {
      fprintf (stderr, "usage: %s WORKER BUNDLE_DIR [TRIALS]\n", argv[0]);
      return 2;
    }
  if (trials > 4096)
    trials = 4096;
  plain.isolate = false;
  signal (SIGPIPE, SIG_IGN);
  if (flint_sandbox_node_new (&iso, &n_iso, &err) < 0 || flint_sandbox_node_new (&plain, &n_plain, &err) < 0)
    {
      fprintf (stderr, "%s\n", err.msg);
      return 1;
    }
  for (int i = 0; i < 10; i++) /* warm caches */
    {
      flint_sandbox_timings_t tm;
      double x;
      if (one (n_iso, argv[1], argv[2], &x, &tm) < 0 || one (n_plain, argv[1], argv[2], &x, &tm) < 0)
        return 1;
    }
  for (int i = 0; i < trials; i++)
    {
      flint_sandbox_timings_t tm, tp;
      if (one (n_iso, argv[1], argv[2], &a[i], &tm) < 0 || one (n_plain, argv[1], argv[2], &b[i], &tp) < 0)
        return 1;
      ph[0][i] = tm.clone_ms, ph[1][i] = tm.cgroup_ms, ph[2][i] = tm.mounts_ms, ph[3][i] = tm.seccomp_ms;
      ph[4][i] = tm.exec_ms, ph[5][i] = tm.total_ms;
    }
  {
    double a50 = pct (a, trials, 0.5), a99 = pct (a, trials, 0.99);
    double b50 = pct (b, trials, 0.5), b99 = pct (b, trials, 0.99);
    printf ("| start of a worker (clone → worker running), %d trials each | p50 ms | p99 ms |\n", trials);
    printf ("|---|---:|---:|\n");
    printf ("| plain fork+exec (baseline, same run) | %.2f | %.2f |\n", b50, b99);
    printf ("| flint sandbox | %.2f | %.2f |\n", a50, a99);
    printf ("| **added by the sandbox** | **%.2f** | %.2f |\n\n", a50 - b50, a99 - b99);
    printf ("Goal: at most 5 ms added at p50 — %s.\n\n", a50 - b50 <= 5.0 ? "**met**" : "**not met**");
    printf ("Sandbox phases (p50 / p99 ms): ");
    for (int k = 0; k < FLINT_SANDBOX_PHASES; k++)
      printf ("%s%s %.2f / %.2f", k ? ", " : "", names[k], pct (ph[k], trials, 0.5), pct (ph[k], trials, 0.99));
    printf (".\n");
  }
  flint_sandbox_node_free (n_iso);
  flint_sandbox_node_free (n_plain);
  free (a);
  free (b);
  return 0;
}
