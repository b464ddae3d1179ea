/* The flint CLI as a library entry point (runtime/flint.c is its front-end). */
#ifndef FLINT_CLI_H
#define FLINT_CLI_H

/* Runs `flint` with argv; returns the exit code documented in cli.c. */
int flint_cli_main (int argc, char **argv);

#endif
