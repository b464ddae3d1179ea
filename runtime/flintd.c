/* flintd: the flint control plane. Maps the command line onto flint_daemon_t and runs it. */
#include "daemon.h"
#include "flint/log.h"
#include "flint/util.h"
#include "flint-config.h"

#include <getopt.h>
#include <pthread.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
usage (FILE *f)
{
  fprintf (f,
           "usage: flintd [options]\n"
           "\n"
           "The flint control plane: serves the gRPC API and the HTTP front door, runs workers.\n"
           "\n"
           "  --state-dir DIR     durable state: registry, bundles, logs, secrets (/var/lib/flint)\n"
           "  --run-dir DIR       tmpfs for the weight store and snapshot images (/run/flint)\n"
           "  --socket PATH       gRPC unix socket (RUN_DIR/flintd.sock)\n"
           "  --listen ADDR       gRPC TCP address (127.0.0.1:7470; \"none\" to disable)\n"
           "  --http ADDR         HTTP front door (127.0.0.1:7471; \"none\" to disable)\n"
           "  --libexec-dir DIR   where flint-worker, flint-spawner and flint-snapshotter are\n"
           "  --no-sandbox        run workers without isolation (development only: INSECURE)\n"
           "  --no-snapshots      never checkpoint workers (every start is cold)\n"
           "  --max-bundle SIZE   largest bundle accepted (16Gi)\n"
           "  --log-level LEVEL   debug, info, warn or error (info)\n"
           "  --version, --help\n");
}

int
main (int argc, char **argv)
{
  static const struct option opts[] = {
    { "state-dir", required_argument, NULL, 's' },  { "run-dir", required_argument, NULL, 'r' },
    { "socket", required_argument, NULL, 'u' },     { "listen", required_argument, NULL, 'l' },
    { "http", required_argument, NULL, 'H' },       { "libexec-dir", required_argument, NULL, 'x' },
    { "no-sandbox", no_argument, NULL, 'N' },       { "no-snapshots", no_argument, NULL, 'S' },
    { "max-bundle", required_argument, NULL, 'b' }, { "log-level", required_argument, NULL, 'L' },
    { "version", no_argument, NULL, 'V' },          { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  flint_daemon_config_t cfg = {
    .state_dir = "/var/lib/flint",
    .run_dir = "/run/flint",
    .listen_addr = "127.0.0.1:7470",
    .http_addr = "127.0.0.1:7471",
    .isolate = true,
    .snapshots = true,
    .max_bundle_bytes = 16ull << 30,
  };
  char socket_buf[PATH_MAX];
  flint_log_level_t level = FLINT_LOG_INFO;
  flint_error_t err = FLINT_ERROR_INIT;
  flint_daemon_t *d = NULL;
  sigset_t block;
  int c, status;

  while ((c = getopt_long (argc, argv, "h", opts, NULL)) != -1)
    {
      switch (c)
        {
        case 's': cfg.state_dir = optarg; break;
        case 'r': cfg.run_dir = optarg; break;
        case 'u': cfg.socket_path = optarg; break;
        case 'l': cfg.listen_addr = strcmp (optarg, "none") == 0 ? "" : optarg; break;
        case 'H': cfg.http_addr = strcmp (optarg, "none") == 0 ? "" : optarg; break;
        case 'x': cfg.libexec_dir = optarg; break;
        case 'N': cfg.isolate = false; break;
        case 'S': cfg.snapshots = false; break;
        case 'b':
          if (flint_parse_size (optarg, &cfg.max_bundle_bytes) < 0)
            {
              fprintf (stderr, "flintd: --max-bundle: `%s` is not a size (e.g. 4Gi)\n", optarg);
              return 2;
            }
          break;
        case 'L':
          if (strcmp (optarg, "debug") == 0)
            level = FLINT_LOG_DEBUG;
          else if (strcmp (optarg, "info") == 0)
            level = FLINT_LOG_INFO;
          else if (strcmp (optarg, "warn") == 0)
            level = FLINT_LOG_WARN;
          else if (strcmp (optarg, "error") == 0)
            level = FLINT_LOG_ERROR;
          else
            {
              fprintf (stderr, "flintd: --log-level: expected debug, info, warn or error\n");
              return 2;
            }
          break;
        case 'V': printf ("flintd %s\n", FLINT_VERSION); return 0;
        case 'h': usage (stdout); return 0;
        default: usage (stderr); return 2;
        }
    }
  if (optind < argc)
    {
      fprintf (stderr, "flintd: unexpected argument `%s`\n", argv[optind]);
      usage (stderr);
      return 2;
    }
  if (cfg.socket_path == NULL)
    {
      snprintf (socket_buf, sizeof socket_buf, "%s/flintd.sock", cfg.run_dir);
      cfg.socket_path = socket_buf;
    }
  flint_log_init ("runtime", level);
  /* Signals are handled on the loop (uv_signal); block them before gRPC starts its threads so
   * none of those threads takes them. */
  sigemptyset (&block);
  sigaddset (&block, SIGPIPE);
  pthread_sigmask (SIG_BLOCK, &block, NULL);
  if (!cfg.isolate)
    flint_warn ("--no-sandbox: workers run WITHOUT isolation; never do this with untrusted code");

  if (flint_daemon_new (&cfg, &d, &err) < 0)
    {
      flint_err ("cannot start: %s", err.msg);
      flint_daemon_free (d);
      return 1;
    }
  flint_info ("flintd %s ready: grpc %s%s%s, state %s", FLINT_VERSION, cfg.socket_path,
              *cfg.listen_addr ? " and " : "", cfg.listen_addr, cfg.state_dir);
  status = flint_daemon_run (d);
  flint_daemon_free (d);
  flint_info ("stopped");
  return status;
}
