/* flint-snapshotter: checkpoints and restores workers for flintd. Started by flintd with its
 * socket at fd 3; not meant to be run by hand. */
#include "snapshotter.h"
#include "flint/log.h"
#include "flint-config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *
find_criu (void)
{
  static const char *const candidates[] = { "/usr/local/sbin/criu", "/usr/sbin/criu", "/usr/local/bin/criu",
                                            "/usr/bin/criu" };
  for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++)
    if (access (candidates[i], X_OK) == 0)
      return candidates[i];
  return "/usr/local/sbin/criu";
}

int
main (int argc, char **argv)
{
  flint_snapshotter_options_t opts = { .run_dir = "/run/flint", .cgroup_parent = "flint-snap", .criu = NULL,
                                       .stage_dir = "/run/flint-snapshotter", .slots = 4, .userns = true };
  int type;
  socklen_t len = sizeof type;

  flint_log_init ("snapshotter", FLINT_LOG_INFO);
  for (int i = 1; i < argc; i++)
    {
      if (strcmp (argv[i], "--run-dir") == 0 && i + 1 < argc)
        opts.run_dir = argv[++i];
      else if (strcmp (argv[i], "--cgroup-parent") == 0 && i + 1 < argc)
        opts.cgroup_parent = argv[++i];
      else if (strcmp (argv[i], "--criu") == 0 && i + 1 < argc)
        opts.criu = argv[++i];
      else if (strcmp (argv[i], "--stage-dir") == 0 && i + 1 < argc)
        opts.stage_dir = argv[++i];
      else if (strcmp (argv[i], "--slots") == 0 && i + 1 < argc)
        opts.slots = (unsigned) atoi (argv[++i]);
      else if (strcmp (argv[i], "--no-userns") == 0)
        opts.userns = false;
      else if (strcmp (argv[i], "--version") == 0)
        {
          printf ("flint-snapshotter %s\n", FLINT_VERSION);
          return 0;
        }
      else
        {
          fprintf (stderr, "usage: flint-snapshotter [--run-dir DIR] [--cgroup-parent NAME] [--criu PATH] [--stage-dir DIR]\n"
                           "                         [--slots N] [--no-userns]\n"
                           "Started by flintd with its socket at fd 3.\n");
          return 2;
        }
    }
  if (opts.criu == NULL)
    opts.criu = find_criu ();
  if (opts.slots < 1)
    opts.slots = 1;
  if (getsockopt (3, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
    {
      fprintf (stderr, "flint-snapshotter: fd 3 is not a socket: flintd starts this program\n");
      return 2;
    }
  return flint_snapshotter_main (3, &opts);
}
