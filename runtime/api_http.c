/* HTTP/JSON front door (libh2o): see issue 5. */
#include "daemon.h"

int
flint__http_start (flint_daemon_t *d, flint_error_t *err)
{
  (void) d;
  (void) err;
  return 0;
}

void
flint__http_stop (flint_daemon_t *d)
{
  (void) d;
}
