/* flint-spawner: creates sandboxed workers for flintd. Started by flintd with its socket at
 * fd 3; not meant to be run by hand. Options mirror flintd's sandbox settings. */
#include "spawner.h"
#include "flint/log.h"
#include "flint/util.h"
#include "flint-config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int
main (int argc, char **argv)
{
  flint_sandbox_options_t opts = { .isolate = true, .userns = true, .uid_base = 100000, .run_dir = "/run/flint/sandbox",
                                   .cgroup_parent = "flint", .uid = 65534, .gid = 65534 };
  int type;
  socklen_t len = sizeof type;

  flint_log_init ("spawner", FLINT_LOG_INFO);
  for (int i = 1; i < argc; i++)
    {
      if (strcmp (argv[i], "--no-isolation") == 0)
        opts.isolate = false;
      else if (strcmp (argv[i], "--no-userns") == 0)
        opts.userns = false;
      else if (strcmp (argv[i], "--run-dir") == 0 && i + 1 < argc)
        opts.run_dir = argv[++i];
      else if (strcmp (argv[i], "--cgroup-parent") == 0 && i + 1 < argc)
        opts.cgroup_parent = argv[++i];
      else if (strcmp (argv[i], "--version") == 0)
        {
          printf ("flint-spawner %s\n", FLINT_VERSION);
          return 0;
        }
      else
        {
          fprintf (stderr, "usage: flint-spawner [--no-isolation] [--no-userns] [--run-dir DIR] [--cgroup-parent NAME]\n"
                           "Started by flintd with its socket at fd 3.\n");
          return 2;
        }
    }
  if (getsockopt (3, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
    {
      fprintf (stderr, "flint-spawner: fd 3 is not a socket: flintd starts this program\n");
      return 2;
    }
  /* Hold nothing but stdio and the socket: descriptors flintd's own parent left open (libuv
   * only passes what it was told, but cannot close what the daemon inherited) would otherwise
   * live as long as every sandbox. */
  flint_set_cloexec (3, true);
  flint_close_fds_except (4, NULL, 0);
  return flint_spawner_main (3, &opts);
}
