/* flint-worker: hosts one function inside a sandbox. Started by flintd's spawner (or restored
 * by the snapshotter); talks to flintd over the socket at fd 3. Not meant to be run by hand. */
#include "worker.h"
#include "flint-config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static void
usage (FILE *f)
{
  fprintf (f, "usage: flint-worker [--fd N]\n"
              "Hosts one flint function; speaks proto/flint/worker/v1 frames on fd N (default 3).\n"
              "flintd starts workers itself: there is no reason to run this by hand.\n");
}

int
main (int argc, char **argv)
{
  int fd = 3;
  int type;
  socklen_t len = sizeof type;

  for (int i = 1; i < argc; i++)
    {
      if (strcmp (argv[i], "--fd") == 0 && i + 1 < argc)
        fd = atoi (argv[++i]);
      else if (strcmp (argv[i], "--version") == 0)
        {
          printf ("flint-worker %s\n", FLINT_VERSION);
          return 0;
        }
      else if (strcmp (argv[i], "--help") == 0)
        {
          usage (stdout);
          return 0;
        }
      else
        {
          usage (stderr);
          return 2;
        }
    }
  if (getsockopt (fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
    {
      fprintf (stderr, "flint-worker: fd %d is not a socket: run by flintd, not by hand\n", fd);
      return 2;
    }
  return flint_worker_run (fd);
}
