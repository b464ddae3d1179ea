/* flint: the command line client. See runtime/cli.c. */
#include "cli.h"

int
main (int argc, char **argv)
{
  return flint_cli_main (argc, argv);
}
