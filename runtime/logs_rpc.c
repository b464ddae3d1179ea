/* The Logs RPC: the kept records of an endpoint, then (with `follow`) new ones as they come. */
#include "api.h"
#include "flint/util.h"

#include <stdlib.h>
#include <string.h>

typedef struct log_stream_s {
  flint_log_follower_t follower;
  flint_list_t link;          /* in d->log_streams */
  flint_rpc_t *rpc;
  flint_daemon_t *d;
  char endpoint[64];
} log_stream_t;

static void
send_record (flint_rpc_t *rpc, const char *endpoint, const flint_log_record_t *rec)
{
  Flint__V1__LogRecord m = FLINT__V1__LOG_RECORD__INIT;
  uint8_t stackbuf[FLINT_LOG_LINE_MAX + 256];
  size_t n;

  m.time_ms = rec->time_ms;
  m.endpoint = (char *) endpoint;
  m.version = rec->version;
  m.replica = (char *) rec->replica;
  m.stream = (char *) rec->stream;
  m.line = rec->line;
  n = flint__v1__log_record__get_packed_size (&m);
  if (n > sizeof stackbuf)
    return;
  flint__v1__log_record__pack (&m, stackbuf);
  flint_rpc_write (rpc, stackbuf, n);
}

typedef struct each_ctx_s {
  flint_rpc_t *rpc;
  const char *endpoint;
} each_ctx_t;

static void
each_cb (const flint_log_record_t *rec, void *data)
{
  each_ctx_t *c = data;
  send_record (c->rpc, c->endpoint, rec);
}

static void
stream_end (log_stream_t *ls, int code, const char *msg)
{
  flint_list_remove (&ls->link);
  flint_rpc_finish (ls->rpc, code, msg, NULL, 0);
  free (ls);
}

static void
follower_cb (flint_log_follower_t *f, const flint_log_record_t *rec)
{
  log_stream_t *ls = f->data;
  if (rec == NULL)
    {
      stream_end (ls, 0, NULL); /* the endpoint is gone: the log ends */
      return;
    }
  send_record (ls->rpc, ls->endpoint, rec);
}

static void
cancel_cb (flint_rpc_t *rpc, void *data)
{
  log_stream_t *ls = data;
  (void) rpc;
  flint_logbook_unfollow (&ls->follower);
  stream_end (ls, 1, "cancelled");
}

void
flint__logs_rpc (flint_rpc_t *rpc, void *daemon)
{
  flint_daemon_t *d = daemon;
  size_t len;
  const uint8_t *buf = flint_rpc_request (rpc, &len);
  Flint__V1__LogsRequest *in = flint__v1__logs_request__unpack (NULL, len, buf);
  flint_endpoint_t *ep;
  each_ctx_t ctx = { .rpc = rpc };

  if (in == NULL)
    {
      flint_rpc_finish (rpc, FLINT_EINVAL, "malformed request message", NULL, 0);
      return;
    }
  ep = flint__endpoint_get (d, in->name);
  if (ep == NULL || ep->deleting)
    {
      char msg[200];
      snprintf (msg, sizeof msg, "endpoint `%s` not found", in->name);
      flint_rpc_finish (rpc, FLINT_ENOTFOUND, msg, NULL, 0);
      flint__v1__logs_request__free_unpacked (in, NULL);
      return;
    }
  ctx.endpoint = ep->name;
  flint_logbook_each (ep->logbook, in->since_ms, in->tail, each_cb, &ctx);
  if (!in->follow)
    flint_rpc_finish (rpc, 0, NULL, NULL, 0);
  else
    {
      log_stream_t *ls = calloc (1, sizeof *ls);
      if (ls == NULL)
        abort ();
      ls->rpc = rpc;
      ls->d = d;
      snprintf (ls->endpoint, sizeof ls->endpoint, "%s", ep->name);
      ls->follower.cb = follower_cb;
      ls->follower.data = ls;
      flint_list_insert_tail (&d->log_streams, &ls->link);
      flint_logbook_follow (ep->logbook, &ls->follower);
      flint_rpc_on_cancel (rpc, cancel_cb, ls);
    }
  flint__v1__logs_request__free_unpacked (in, NULL);
}

void
flint__logs_rpc_shutdown (flint_daemon_t *d)
{
  while (!flint_list_empty (&d->log_streams))
    {
      log_stream_t *ls = flint_list_entry (d->log_streams.next, log_stream_t, link);
      flint_logbook_unfollow (&ls->follower);
      stream_end (ls, FLINT_EUNAVAILABLE, "flintd is shutting down");
    }
}
