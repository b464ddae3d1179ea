/* A test function that holds what CRIU cannot checkpoint by default: an established TCP
 * connection (over the sandbox's own loopback), opened in init and kept. Its deploy must end
 * without a snapshot, saying why, and it must keep working from the cold tier. Invokes echo. */
#include <flint/function.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

FLINT_FUNCTION_ABI;

static int conn[2] = { -1, -1 };

int
flint_init (flint_ctx_t *ctx)
{
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof sa;
  int lsk = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (lsk < 0 || bind (lsk, (struct sockaddr *) &sa, sizeof sa) < 0 || listen (lsk, 1) < 0
      || getsockname (lsk, (struct sockaddr *) &sa, &len) < 0)
    return flint_set_error (ctx, "listen on the loopback interface failed");
  conn[0] = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (conn[0] < 0 || connect (conn[0], (struct sockaddr *) &sa, sizeof sa) < 0)
    return flint_set_error (ctx, "connect over the loopback interface failed");
  conn[1] = accept4 (lsk, NULL, NULL, SOCK_CLOEXEC);
  close (lsk);
  return conn[1] < 0 ? flint_set_error (ctx, "accept failed") : 0;
}

int
flint_invoke (flint_ctx_t *ctx, const flint_input_t *in, flint_output_t *out)
{
  (void) ctx;
  return flint_output_write (out, in->data, in->len);
}
