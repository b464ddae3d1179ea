/* The `flint` command line: deploy, invoke, ls, status, logs, scale, rm, secret.
 *
 * Exit codes (docs/CLI.md): 0 success; 1 the request failed (function or server error);
 * 2 usage error; 3 not found; 4 invalid input (manifest, bundle, payload, knob);
 * 5 flintd unreachable or unavailable; 6 deadline exceeded; 7 resource exhausted. */
#include "cli.h"
#include "bundle.h"
#include "client.h"
#include "manifest.h"
#include "flint/buf.h"
#include "flint/cleanup.h"
#include "flint/pbjson.h"
#include "flint/util.h"
#include "flint/v1/flint.pb-c.h"
#include "flint-config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum {
  EXIT_OK = 0,
  EXIT_FAILED = 1,
  EXIT_USAGE = 2,
  EXIT_NOTFOUND = 3,
  EXIT_INVALID = 4,
  EXIT_UNAVAILABLE = 5,
  EXIT_TIMEOUT = 6,
  EXIT_EXHAUSTED = 7,
};

typedef struct cli_s {
  const char *addr;
  flint_client_t *client;
  bool json;
} cli_t;

static int
exit_code_of (flint_status_t code)
{
  switch (code)
    {
    case FLINT_OK: return EXIT_OK;
    case FLINT_ENOTFOUND: return EXIT_NOTFOUND;
    case FLINT_EINVAL:
    case FLINT_EDATALOSS:
    case FLINT_EPRECONDITION:
    case FLINT_ERANGE: return EXIT_INVALID;
    case FLINT_EUNAVAILABLE: return EXIT_UNAVAILABLE;
    case FLINT_EDEADLINE: return EXIT_TIMEOUT;
    case FLINT_EEXHAUSTED: return EXIT_EXHAUSTED;
    default: return EXIT_FAILED;
    }
}

static int
report (const flint_error_t *err)
{
  fprintf (stderr, "flint: %s\n", err->msg);
  if (err->code == FLINT_EUNAVAILABLE && strstr (err->msg, "cannot reach flintd"))
    fprintf (stderr, "hint: start it with `flintd`, or point --addr / FLINT_ADDR at it\n");
  return exit_code_of (err->code);
}

static int
usage_error (const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
usage_error (const char *fmt, ...)
{
  va_list ap;
  fputs ("flint: ", stderr);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputs ("\nrun `flint help` for usage\n", stderr);
  return EXIT_USAGE;
}

static int
connect_client (cli_t *cli, flint_error_t *err)
{
  if (cli->client)
    return 0;
  return flint_client_new (cli->addr, &cli->client, err);
}

static int
unary (cli_t *cli, const char *method, const ProtobufCMessage *req, uint64_t timeout_ms, uint8_t **resp,
       size_t *resp_len, flint_error_t *err)
{
  size_t len = protobuf_c_message_get_packed_size (req);
  _cleanup_free_ uint8_t *buf = malloc (len ? len : 1);

  if (buf == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  protobuf_c_message_pack (req, buf);
  if (connect_client (cli, err) < 0)
    return -1;
  return flint_client_unary (cli->client, method, buf, len, timeout_ms, resp, resp_len, err);
}

static void
print_json (const ProtobufCMessage *msg)
{
  flint_buf_t b = FLINT_BUF_INIT;
  flint_pbjson_render (msg, &b);
  printf ("%s\n", b.data);
  flint_buf_free (&b);
}

/* ---- deploy ------------------------------------------------------------------------------ */

static void
progress (uint64_t done, uint64_t total, uint64_t t0)
{
  char a[32], b[32];
  double secs = (double) (flint_now_ns () - t0) / 1e9;
  int width = 30, filled = total ? (int) ((double) done / (double) total * width) : width;

  flint_format_size (done, a, sizeof a);
  flint_format_size (total, b, sizeof b);
  fprintf (stderr, "\r  uploading [%.*s%*s] %s / %s  %.1f MiB/s ", filled, "##############################",
           width - filled, "", a, b, secs > 0 ? (double) done / secs / (1 << 20) : 0.0);
}

static int
cmd_deploy (cli_t *cli, int argc, char **argv)
{
  const char *dir;
  char path[PATH_MAX], sha[FLINT_SHA256_HEX_LEN], size_s[32];
  _cleanup_free_ char *text = NULL;
  _cleanup_close_ int fd = -1;
  flint_manifest_t *m = NULL;
  flint_error_t err = FLINT_ERROR_INIT;
  flint_client_call_t *call = NULL;
  uint64_t size = 0, sent = 0, t0;
  size_t len;
  bool tty = isatty (STDERR_FILENO);
  _cleanup_free_ uint8_t *chunk = NULL, *msgbuf = NULL, *resp = NULL;
  size_t resp_len = 0;
  int r;

  if (argc != 2)
    return usage_error ("usage: flint deploy DIR");
  dir = argv[1];
  snprintf (path, sizeof path, "%s/flint.yaml", dir);
  r = flint_read_file (path, 1u << 20, &text, &len);
  if (r < 0)
    {
      fprintf (stderr, "flint: %s: %s\n", path,
               r == -ENOENT ? "no such file (a deploy directory needs a flint.yaml)" : strerror (-r));
      return EXIT_INVALID;
    }
  /* validate locally first: errors name file, line and column without a round trip */
  if (flint_manifest_parse (text, len, path, &m, &err) < 0)
    return report (&err);

  fd = open ("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0)
    {
      fprintf (stderr, "flint: cannot create a temporary file in /tmp: %s\n", strerror (errno));
      flint_manifest_free (m);
      return EXIT_FAILED;
    }
  if (tty)
    fprintf (stderr, "packing %s ...", dir);
  if (flint_bundle_pack (dir, fd, sha, &size, &err) < 0)
    {
      if (tty)
        fputc ('\n', stderr);
      flint_manifest_free (m);
      return report (&err);
    }
  flint_format_size (size, size_s, sizeof size_s);
  if (tty)
    fprintf (stderr, " %s, sha256 %.12s\n", size_s, sha);

  if (connect_client (cli, &err) < 0 || flint_client_stream_open (cli->client, "/flint.v1.Flint/Deploy", 0, &call, &err) < 0)
    {
      flint_manifest_free (m);
      return report (&err);
    }
  {
    Flint__V1__DeployHeader hdr = FLINT__V1__DEPLOY_HEADER__INIT;
    Flint__V1__DeployRequest req = FLINT__V1__DEPLOY_REQUEST__INIT;
    hdr.manifest = text;
    hdr.manifest_path = path;
    hdr.bundle_size = size;
    hdr.bundle_sha256 = sha;
    req.part_case = FLINT__V1__DEPLOY_REQUEST__PART_HEADER;
    req.header = &hdr;
    len = flint__v1__deploy_request__get_packed_size (&req);
    msgbuf = malloc (len);
    flint__v1__deploy_request__pack (&req, msgbuf);
    flint_client_stream_send (call, msgbuf, len);
  }
  chunk = malloc (1 << 20);
  free (msgbuf);
  msgbuf = malloc ((1 << 20) + 64);
  lseek (fd, 0, SEEK_SET);
  t0 = flint_now_ns ();
  while (sent < size)
    {
      Flint__V1__DeployRequest req = FLINT__V1__DEPLOY_REQUEST__INIT;
      ssize_t n = read (fd, chunk, 1 << 20);
      if (n <= 0)
        break;
      req.part_case = FLINT__V1__DEPLOY_REQUEST__PART_CHUNK;
      req.chunk.data = chunk;
      req.chunk.len = (size_t) n;
      len = flint__v1__deploy_request__pack (&req, msgbuf);
      if (flint_client_stream_send (call, msgbuf, len) < 0)
        break; /* the server ended the call early: finish tells why */
      sent += (uint64_t) n;
      if (tty)
        progress (sent, size, t0);
    }
  if (tty)
    fprintf (stderr, "\n  waiting for the new version to start ...\n");
  if (flint_client_stream_finish (call, &resp, &resp_len, &err) < 0)
    {
      flint_manifest_free (m);
      return report (&err);
    }
  {
    Flint__V1__DeployResponse *dr = flint__v1__deploy_response__unpack (NULL, resp_len, resp);
    if (dr == NULL)
      {
        fprintf (stderr, "flint: malformed reply from flintd\n");
        flint_manifest_free (m);
        return EXIT_FAILED;
      }
    if (cli->json)
      print_json (&dr->base);
    else
      {
        double total = 0;
        for (size_t i = 0; i < dr->n_phases_ms; i++)
          if (strcmp (dr->phases_ms[i]->key, "total") == 0)
            total = dr->phases_ms[i]->value;
        printf ("deployed %s version %llu (bundle %s, sha256 %.12s) in %.0f ms\n", dr->endpoint,
                (unsigned long long) dr->version, size_s, dr->bundle_sha256, total);
        if (dr->snapshot && dr->snapshot->size_bytes)
          {
            char ss[32];
            flint_format_size (dr->snapshot->size_bytes, ss, sizeof ss);
            printf ("snapshot: %s image taken in %.0f ms (tier %s)\n", ss, dr->snapshot->dump_ms, dr->snapshot->tier);
          }
        else if (dr->snapshot_error[0])
          printf ("snapshot: none (%s); cold starts only\n", dr->snapshot_error);
        printf ("invoke it: flint invoke %s --data '...'\n", dr->endpoint);
      }
    flint__v1__deploy_response__free_unpacked (dr, NULL);
  }
  flint_manifest_free (m);
  return EXIT_OK;
}

/* ---- invoke --------------------------------------------------------------------------------- */

static int
stream_chunk_cb (const uint8_t *msg, size_t len, void *ud)
{
  Flint__V1__InvokeChunk *c = flint__v1__invoke_chunk__unpack (NULL, len, msg);
  (void) ud;
  if (c == NULL)
    return -1;
  fwrite (c->data.data, 1, c->data.len, stdout);
  fflush (stdout);
  flint__v1__invoke_chunk__free_unpacked (c, NULL);
  return 0;
}

static int
read_all_fd (int fd, uint8_t **out, size_t *len)
{
  flint_buf_t b = FLINT_BUF_INIT;
  char tmp[65536];
  ssize_t n;
  while ((n = read (fd, tmp, sizeof tmp)) > 0)
    flint_buf_append (&b, tmp, (size_t) n);
  if (n < 0)
    {
      flint_buf_free (&b);
      return -errno;
    }
  *out = (uint8_t *) flint_buf_steal (&b, len);
  return 0;
}

static int
cmd_invoke (cli_t *cli, int argc, char **argv)
{
  static const struct option opts[] = {
    { "data", required_argument, NULL, 'd' }, { "file", required_argument, NULL, 'f' },
    { "stream", no_argument, NULL, 's' },     { "timeout", required_argument, NULL, 't' },
    { "json", no_argument, NULL, 'j' },       { NULL, 0, NULL, 0 },
  };
  Flint__V1__InvokeRequest req = FLINT__V1__INVOKE_REQUEST__INIT;
  flint_error_t err = FLINT_ERROR_INIT;
  _cleanup_free_ uint8_t *payload = NULL, *resp = NULL, *buf = NULL;
  size_t plen = 0, resp_len = 0, len;
  const char *data = NULL, *file = NULL;
  bool stream = false, from_stdin = false;
  uint64_t timeout_ms = 0;
  int c;

  optind = 1;
  while ((c = getopt_long (argc, argv, "d:f:st:", opts, NULL)) != -1)
    {
      switch (c)
        {
        case 'd': data = optarg; break;
        case 'f': file = optarg; break;
        case 's': stream = true; break;
        case 'j': cli->json = true; break;
        case 't':
          if (flint_parse_duration_ms (optarg, &timeout_ms) < 0)
            return usage_error ("--timeout: `%s` is not a duration (e.g. 30s)", optarg);
          break;
        default: return usage_error ("usage: flint invoke NAME [--data STRING | --file PATH | -] [--stream] [--timeout D]");
        }
    }
  if (optind >= argc)
    return usage_error ("usage: flint invoke NAME [--data STRING | --file PATH | -] [--stream] [--timeout D]");
  req.endpoint = argv[optind++];
  if (optind < argc && strcmp (argv[optind], "-") == 0)
    {
      from_stdin = true;
      optind++;
    }
  if (optind < argc)
    return usage_error ("unexpected argument `%s`", argv[optind]);
  if ((data != NULL) + (file != NULL) + from_stdin > 1)
    return usage_error ("give the payload once: --data, --file or - (stdin)");
  if (data)
    {
      plen = strlen (data);
      payload = (uint8_t *) strdup (data);
    }
  else if (file)
    {
      int r = flint_read_file (file, 1u << 30, (char **) &payload, &plen);
      if (r < 0)
        {
          fprintf (stderr, "flint: --file %s: %s\n", file, strerror (-r));
          return EXIT_INVALID;
        }
    }
  else if (from_stdin)
    {
      if (read_all_fd (STDIN_FILENO, &payload, &plen) < 0)
        {
          fprintf (stderr, "flint: reading stdin: %s\n", strerror (errno));
          return EXIT_INVALID;
        }
    }
  req.payload.data = payload;
  req.payload.len = plen;
  len = flint__v1__invoke_request__get_packed_size (&req);
  buf = malloc (len ? len : 1);
  flint__v1__invoke_request__pack (&req, buf);
  if (connect_client (cli, &err) < 0)
    return report (&err);
  if (stream)
    {
      if (flint_client_server_stream (cli->client, "/flint.v1.Flint/InvokeStream", buf, len, timeout_ms,
                                      stream_chunk_cb, NULL, &err)
          < 0)
        return report (&err);
      return EXIT_OK;
    }
  if (flint_client_unary (cli->client, "/flint.v1.Flint/Invoke", buf, len, timeout_ms, &resp, &resp_len, &err) < 0)
    return report (&err);
  {
    Flint__V1__InvokeResponse *ir = flint__v1__invoke_response__unpack (NULL, resp_len, resp);
    if (ir == NULL)
      {
        fprintf (stderr, "flint: malformed reply from flintd\n");
        return EXIT_FAILED;
      }
    if (cli->json)
      print_json (&ir->base);
    else
      {
        fwrite (ir->payload.data, 1, ir->payload.len, stdout);
        if (isatty (STDOUT_FILENO) && (ir->payload.len == 0 || ir->payload.data[ir->payload.len - 1] != '\n'))
          fputc ('\n', stdout);
      }
    flint__v1__invoke_response__free_unpacked (ir, NULL);
  }
  return EXIT_OK;
}

/* ---- ls / status / rm ---------------------------------------------------------------------- */

static int
cmd_ls (cli_t *cli, int argc, char **argv)
{
  Flint__V1__ListEndpointsRequest req = FLINT__V1__LIST_ENDPOINTS_REQUEST__INIT;
  Flint__V1__ListEndpointsResponse *resp;
  flint_error_t err = FLINT_ERROR_INIT;
  _cleanup_free_ uint8_t *buf = NULL;
  size_t len;

  for (int i = 1; i < argc; i++)
    if (strcmp (argv[i], "--json") == 0)
      cli->json = true;
    else
      return usage_error ("usage: flint ls [--json]");
  if (unary (cli, "/flint.v1.Flint/ListEndpoints", &req.base, 10000, &buf, &len, &err) < 0)
    return report (&err);
  resp = flint__v1__list_endpoints_response__unpack (NULL, len, buf);
  if (resp == NULL)
    return EXIT_FAILED;
  if (cli->json)
    print_json (&resp->base);
  else if (resp->n_endpoints == 0)
    printf ("no endpoints (deploy one with `flint deploy DIR`)\n");
  else
    {
      printf ("%-24s %-8s %-7s %-10s %-9s %-8s %10s %8s\n", "NAME", "VERSION", "KIND", "STATE", "REPLICAS", "SNAPSHOT",
              "REQUESTS", "FAILED");
      for (size_t i = 0; i < resp->n_endpoints; i++)
        {
          Flint__V1__Endpoint *e = resp->endpoints[i];
          size_t ready = 0;
          for (size_t k = 0; k < e->n_replicas; k++)
            if (strcmp (e->replicas[k]->state, "ready") == 0)
              ready++;
          printf ("%-24s %-8llu %-7s %-10s %zu/%-7zu %-8s %10llu %8llu\n", e->name, (unsigned long long) e->version,
                  e->kind, e->state, ready, e->n_replicas, e->snapshot ? e->snapshot->tier : "none",
                  (unsigned long long) e->requests_ok + e->requests_failed, (unsigned long long) e->requests_failed);
        }
    }
  flint__v1__list_endpoints_response__free_unpacked (resp, NULL);
  return EXIT_OK;
}

static void
print_duration (const char *label, uint64_t ms)
{
  if (ms % 1000 == 0)
    printf ("%s%llus", label, (unsigned long long) ms / 1000);
  else
    printf ("%s%llums", label, (unsigned long long) ms);
}

static int
get_endpoint (cli_t *cli, const char *name, Flint__V1__Endpoint **out, flint_error_t *err)
{
  Flint__V1__GetEndpointRequest req = FLINT__V1__GET_ENDPOINT_REQUEST__INIT;
  _cleanup_free_ uint8_t *buf = NULL;
  size_t len;

  req.name = (char *) name;
  if (unary (cli, "/flint.v1.Flint/GetEndpoint", &req.base, 10000, &buf, &len, err) < 0)
    return -1;
  *out = flint__v1__endpoint__unpack (NULL, len, buf);
  if (*out == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "malformed reply from flintd");
  return 0;
}


/* The engine's numbers of an llm endpoint (Endpoint.engine, see runtime/engine_stats.c). */
static const char *
engine_value (const Flint__V1__Endpoint *e, const char *key)
{
  for (size_t i = 0; i < e->n_engine; i++)
    if (strcmp (e->engine[i]->key, key) == 0)
      return e->engine[i]->value;
  return NULL;
}

static void
print_engine (const Flint__V1__Endpoint *e)
{
  const char *ttft50 = engine_value (e, "ttft_p50_ms"), *ttft99 = engine_value (e, "ttft_p99_ms");
  const char *itl50 = engine_value (e, "itl_p50_ms"), *itl99 = engine_value (e, "itl_p99_ms");
  const char *tps = engine_value (e, "tokens_per_s"), *kv = engine_value (e, "kv_used");
  const char *cap = engine_value (e, "kv_capacity_tokens"), *run = engine_value (e, "requests_running");
  const char *wait = engine_value (e, "requests_waiting"), *acc = engine_value (e, "spec_acceptance_length");
  const char *tot = engine_value (e, "tokens_total");

  if (ttft50 && ttft99 && itl50 && itl99 && tps && kv && cap && run && wait)
    {
      printf ("engine     first token p50 %s ms, p99 %s ms; inter-token p50 %s ms, p99 %s ms; %s tokens/s\n", ttft50,
              ttft99, itl50, itl99, tps);
      printf ("           KV cache %.1f%% of %s tokens; %s running, %s waiting; %s tokens generated", atof (kv) * 100,
              cap, run, wait, tot ? tot : "0");
      if (acc)
        printf ("; speculative acceptance length %s", acc);
      printf ("\n");
      return;
    }
  printf ("engine    ");
  for (size_t i = 0; i < e->n_engine; i++)
    printf (" %s=%s", e->engine[i]->key, e->engine[i]->value);
  printf ("\n");
}

static void
print_status (const Flint__V1__Endpoint *e)
{
  const Flint__V1__ScaleSettings *s = e->scale;

  printf ("endpoint   %s\n", e->name);
  printf ("state      %s, version %llu, kind %s\n", e->state, (unsigned long long) e->version, e->kind);
  if (e->last_error[0])
    printf ("last error %s\n", e->last_error);
  printf ("requests   %llu ok, %llu failed, %u queued; latency p50 %.2f ms, p99 %.2f ms\n",
          (unsigned long long) e->requests_ok, (unsigned long long) e->requests_failed, e->queue_length,
          e->latency_p50_ms, e->latency_p99_ms);
  if (s)
    {
      printf ("scaling    min %u, max %u, target concurrency %u, max concurrency %u, buffer %u, ", s->min_replicas,
              s->max_replicas, s->target_concurrency, s->max_concurrency, s->buffer_replicas);
      print_duration ("scaledown window ", s->scaledown_window_ms);
      print_duration (", timeout ", s->timeout_ms);
      printf (", retries %u\n", s->retries);
    }
  if (e->snapshot)
    {
      const Flint__V1__Snapshot *sn = e->snapshot;
      if (strcmp (sn->tier, "none") == 0)
        printf ("snapshot   none%s%s\n", sn->error[0] ? ": " : "", sn->error);
      else
        {
          char sz[32];
          flint_format_size (sn->size_bytes, sz, sizeof sz);
          char when[32] = "";
          if (sn->created_ms)
            {
              time_t t = (time_t) (sn->created_ms / 1000);
              struct tm tm;
              gmtime_r (&t, &tm);
              strftime (when, sizeof when, ", taken %Y-%m-%d %H:%M:%S UTC", &tm);
            }
          printf ("snapshot   tier %s, image %s, dump %.1f ms%s; %u/%u parked\n", sn->tier, sz, sn->dump_ms, when,
                  sn->parked, sn->parked_target);
          printf ("restores   image: %llu, p50 %.1f ms, p99 %.1f ms; parked: %llu, p50 %.1f ms, p99 %.1f ms; "
                  "fallbacks %llu\n",
                  (unsigned long long) sn->restores, sn->restore_p50_ms, sn->restore_p99_ms,
                  (unsigned long long) sn->unparks, sn->unpark_p50_ms, sn->unpark_p99_ms,
                  (unsigned long long) sn->fallbacks);
          if (sn->error[0])
            printf ("           %s\n", sn->error);
        }
    }
  if (e->n_cold_start_ms)
    {
      printf ("starts    ");
      for (size_t i = 0; i < e->n_cold_start_ms; i++)
        printf (" %s=%.1fms", e->cold_start_ms[i]->key, e->cold_start_ms[i]->value);
      printf ("\n");
    }
  if (e->n_engine)
    print_engine (e);
  if (e->n_secrets)
    {
      printf ("secrets   ");
      for (size_t i = 0; i < e->n_secrets; i++)
        printf (" %s", e->secrets[i]);
      printf ("\n");
    }
  printf ("replicas   %zu\n", e->n_replicas);
  for (size_t i = 0; i < e->n_replicas; i++)
    {
      const Flint__V1__Replica *r = e->replicas[i];
      printf ("  %-36s v%-4llu %-9s %-6s in-flight %u, %llu requests, p50 %.2f ms, p99 %.2f ms, started in %.1f ms\n",
              r->id, (unsigned long long) r->version, r->state, r->tier, r->in_flight, (unsigned long long) r->requests,
              r->p50_ms, r->p99_ms, r->start_ms);
    }
  if (e->n_versions)
    {
      printf ("versions\n");
      for (size_t i = 0; i < e->n_versions && i < 10; i++)
        {
          const Flint__V1__VersionInfo *v = e->versions[i];
          char when[32];
          time_t t = (time_t) (v->created_ms / 1000);
          struct tm tm;
          gmtime_r (&t, &tm);
          strftime (when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
          printf ("  v%-4llu %-9s %s UTC  sha256 %.12s%s%s\n", (unsigned long long) v->version, v->state, when,
                  v->bundle_sha256, v->error[0] ? "  " : "", v->error);
        }
    }
}

static int
cmd_status (cli_t *cli, int argc, char **argv)
{
  Flint__V1__Endpoint *e;
  flint_error_t err = FLINT_ERROR_INIT;
  const char *name = NULL;

  for (int i = 1; i < argc; i++)
    if (strcmp (argv[i], "--json") == 0)
      cli->json = true;
    else if (name == NULL && argv[i][0] != '-')
      name = argv[i];
    else
      return usage_error ("usage: flint status NAME [--json]");
  if (name == NULL)
    return usage_error ("usage: flint status NAME [--json]");
  if (get_endpoint (cli, name, &e, &err) < 0)
    return report (&err);
  if (cli->json)
    print_json (&e->base);
  else
    print_status (e);
  flint__v1__endpoint__free_unpacked (e, NULL);
  return EXIT_OK;
}

static int
cmd_rm (cli_t *cli, int argc, char **argv)
{
  Flint__V1__DeleteEndpointRequest req = FLINT__V1__DELETE_ENDPOINT_REQUEST__INIT;
  flint_error_t err = FLINT_ERROR_INIT;
  _cleanup_free_ uint8_t *buf = NULL;
  size_t len;

  if (argc != 2)
    return usage_error ("usage: flint rm NAME");
  req.name = argv[1];
  if (unary (cli, "/flint.v1.Flint/DeleteEndpoint", &req.base, 60000, &buf, &len, &err) < 0)
    return report (&err);
  printf ("deleted %s\n", argv[1]);
  return EXIT_OK;
}

static int
cmd_drain (cli_t *cli, int argc, char **argv)
{
  Flint__V1__DrainRequest req = FLINT__V1__DRAIN_REQUEST__INIT;
  Flint__V1__DrainResponse *resp;
  flint_error_t err = FLINT_ERROR_INIT;
  _cleanup_free_ uint8_t *buf = NULL;
  size_t len;

  if (argc != 2)
    return usage_error ("usage: flint drain NAME");
  req.name = argv[1];
  if (unary (cli, "/flint.v1.Flint/Drain", &req.base, 10000, &buf, &len, &err) < 0)
    return report (&err);
  resp = flint__v1__drain_response__unpack (NULL, len, buf);
  if (resp == NULL)
    return EXIT_FAILED;
  printf ("%s: %u replica%s stopped; the next request starts one by the fastest tier\n", argv[1], resp->stopped,
          resp->stopped == 1 ? "" : "s");
  flint__v1__drain_response__free_unpacked (resp, NULL);
  return EXIT_OK;
}

/* ---- scale ----------------------------------------------------------------------------------- */

static int
cmd_scale (cli_t *cli, int argc, char **argv)
{
  Flint__V1__ScaleRequest req = FLINT__V1__SCALE_REQUEST__INIT;
  Flint__V1__ScaleSettings set = FLINT__V1__SCALE_SETTINGS__INIT;
  flint_scale_t s;
  flint_error_t err = FLINT_ERROR_INIT;
  _cleanup_free_ uint8_t *buf = NULL;
  _cleanup_free_ char **keys = NULL;
  size_t len;

  if (argc < 3)
    return usage_error ("usage: flint scale NAME KNOB=VALUE... (e.g. min_replicas=1 max_replicas=8)");
  memset (&s, 0, sizeof s);
  keys = calloc ((size_t) argc, sizeof *keys);
  for (int i = 2; i < argc; i++)
    {
      char *eq = strchr (argv[i], '=');
      if (eq == NULL)
        return usage_error ("`%s`: knobs are given as KNOB=VALUE", argv[i]);
      *eq = '\0';
      if (flint_scale_set (&s, argv[i], eq + 1, &err) < 0)
        return report (&err);
      keys[req.n_set++] = argv[i];
    }
  set.min_replicas = s.min_replicas;
  set.max_replicas = s.max_replicas;
  set.target_concurrency = s.target_concurrency;
  set.max_concurrency = s.max_concurrency;
  set.buffer_replicas = s.buffer_replicas;
  set.scaledown_window_ms = s.scaledown_window_ms;
  set.timeout_ms = s.timeout_ms;
  set.startup_timeout_ms = s.startup_timeout_ms;
  set.retries = s.retries;
  set.queue_size = s.queue_size;
  set.parked_replicas = s.parked_replicas;
  req.name = argv[1];
  req.settings = &set;
  req.set = keys;
  if (unary (cli, "/flint.v1.Flint/Scale", &req.base, 10000, &buf, &len, &err) < 0)
    return report (&err);
  {
    Flint__V1__Endpoint *e = flint__v1__endpoint__unpack (NULL, len, buf);
    if (e && e->scale)
      {
        printf ("%s: min %u, max %u, target concurrency %u, max concurrency %u, buffer %u", e->name,
                e->scale->min_replicas, e->scale->max_replicas, e->scale->target_concurrency,
                e->scale->max_concurrency, e->scale->buffer_replicas);
        print_duration (", scaledown window ", e->scale->scaledown_window_ms);
        print_duration (", timeout ", e->scale->timeout_ms);
        printf (", retries %u, queue %u, parked %u\n", e->scale->retries, e->scale->queue_size,
                e->scale->parked_replicas);
      }
    if (e)
      flint__v1__endpoint__free_unpacked (e, NULL);
  }
  return EXIT_OK;
}

/* ---- logs ------------------------------------------------------------------------------------ */

static volatile sig_atomic_t interrupted;

static void
on_sigint (int sig)
{
  (void) sig;
  interrupted = 1;
}

static int
log_cb (const uint8_t *msg, size_t len, void *ud)
{
  Flint__V1__LogRecord *r = flint__v1__log_record__unpack (NULL, len, msg);
  char when[32];
  time_t t;
  struct tm tm;
  (void) ud;
  if (r == NULL)
    return -1;
  t = (time_t) (r->time_ms / 1000);
  gmtime_r (&t, &tm);
  strftime (when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  printf ("%s.%03dZ v%llu %s %s: %s\n", when, (int) (r->time_ms % 1000), (unsigned long long) r->version, r->replica,
          r->stream, r->line);
  fflush (stdout);
  flint__v1__log_record__free_unpacked (r, NULL);
  return interrupted ? -1 : 0;
}

static int
cmd_logs (cli_t *cli, int argc, char **argv)
{
  static const struct option opts[] = {
    { "follow", no_argument, NULL, 'f' }, { "since", required_argument, NULL, 's' },
    { "tail", required_argument, NULL, 'n' }, { NULL, 0, NULL, 0 },
  };
  Flint__V1__LogsRequest req = FLINT__V1__LOGS_REQUEST__INIT;
  flint_error_t err = FLINT_ERROR_INIT;
  _cleanup_free_ uint8_t *buf = NULL;
  size_t len;
  int c;

  optind = 1;
  while ((c = getopt_long (argc, argv, "fs:n:", opts, NULL)) != -1)
    {
      switch (c)
        {
        case 'f': req.follow = 1; break;
        case 's':
          {
            uint64_t ms;
            if (flint_parse_duration_ms (optarg, &ms) < 0)
              return usage_error ("--since: `%s` is not a duration (e.g. 10m)", optarg);
            req.since_ms = flint_wall_ms () - (int64_t) ms;
            break;
          }
        case 'n': req.tail = (uint32_t) atoi (optarg); break;
        default: return usage_error ("usage: flint logs NAME [-f] [--since DURATION] [--tail N]");
        }
    }
  if (optind + 1 != argc)
    return usage_error ("usage: flint logs NAME [-f] [--since DURATION] [--tail N]");
  req.name = argv[optind];
  len = flint__v1__logs_request__get_packed_size (&req);
  buf = malloc (len ? len : 1);
  flint__v1__logs_request__pack (&req, buf);
  signal (SIGINT, on_sigint);
  if (connect_client (cli, &err) < 0
      || flint_client_server_stream (cli->client, "/flint.v1.Flint/Logs", buf, len, 0, log_cb, NULL, &err) < 0)
    return report (&err);
  return EXIT_OK;
}

/* ---- secrets --------------------------------------------------------------------------------- */

static int
cmd_secret (cli_t *cli, int argc, char **argv)
{
  flint_error_t err = FLINT_ERROR_INIT;
  _cleanup_free_ uint8_t *buf = NULL;
  size_t len;

  if (argc < 2)
    return usage_error ("usage: flint secret set NAME KEY=VALUE... | flint secret ls | flint secret rm NAME");
  if (strcmp (argv[1], "set") == 0)
    {
      Flint__V1__SetSecretRequest req = FLINT__V1__SET_SECRET_REQUEST__INIT;
      _cleanup_free_ Flint__V1__SetSecretRequest__ValuesEntry *entries = NULL;
      _cleanup_free_ Flint__V1__SetSecretRequest__ValuesEntry **ptrs = NULL;
      if (argc < 4)
        return usage_error ("usage: flint secret set NAME KEY=VALUE...");
      entries = calloc ((size_t) argc, sizeof *entries);
      ptrs = calloc ((size_t) argc, sizeof *ptrs);
      for (int i = 3; i < argc; i++)
        {
          char *eq = strchr (argv[i], '=');
          if (eq == NULL || eq == argv[i])
            return usage_error ("`%s`: secrets are given as KEY=VALUE", argv[i]);
          *eq = '\0';
          flint__v1__set_secret_request__values_entry__init (&entries[req.n_values]);
          entries[req.n_values].key = argv[i];
          entries[req.n_values].value = eq + 1;
          ptrs[req.n_values] = &entries[req.n_values];
          req.n_values++;
        }
      req.name = argv[2];
      req.values = ptrs;
      if (unary (cli, "/flint.v1.Flint/SetSecret", &req.base, 10000, &buf, &len, &err) < 0)
        return report (&err);
      printf ("secret %s set (%zu key%s)\n", argv[2], req.n_values, req.n_values == 1 ? "" : "s");
      return EXIT_OK;
    }
  if (strcmp (argv[1], "ls") == 0)
    {
      Flint__V1__ListSecretsRequest req = FLINT__V1__LIST_SECRETS_REQUEST__INIT;
      Flint__V1__ListSecretsResponse *resp;
      if (unary (cli, "/flint.v1.Flint/ListSecrets", &req.base, 10000, &buf, &len, &err) < 0)
        return report (&err);
      resp = flint__v1__list_secrets_response__unpack (NULL, len, buf);
      if (resp == NULL)
        return EXIT_FAILED;
      if (resp->n_secrets == 0)
        printf ("no secrets\n");
      else
        printf ("%-24s %s\n", "NAME", "KEYS");
      for (size_t i = 0; i < resp->n_secrets; i++)
        {
          printf ("%-24s", resp->secrets[i]->name);
          for (size_t k = 0; k < resp->secrets[i]->n_keys; k++)
            printf ("%s%s", k ? ", " : " ", resp->secrets[i]->keys[k]);
          printf ("\n");
        }
      flint__v1__list_secrets_response__free_unpacked (resp, NULL);
      return EXIT_OK;
    }
  if (strcmp (argv[1], "rm") == 0)
    {
      Flint__V1__DeleteSecretRequest req = FLINT__V1__DELETE_SECRET_REQUEST__INIT;
      if (argc != 3)
        return usage_error ("usage: flint secret rm NAME");
      req.name = argv[2];
      if (unary (cli, "/flint.v1.Flint/DeleteSecret", &req.base, 10000, &buf, &len, &err) < 0)
        return report (&err);
      printf ("secret %s deleted\n", argv[2]);
      return EXIT_OK;
    }
  return usage_error ("unknown secret command `%s` (set, ls, rm)", argv[1]);
}

/* ---- main ------------------------------------------------------------------------------------- */

static void
usage (FILE *f)
{
  fprintf (f,
           "usage: flint [--addr ADDR] COMMAND ...\n"
           "\n"
           "  deploy DIR                      deploy DIR/flint.yaml and the directory's content\n"
           "  invoke NAME [--data S | --file P | -] [--stream] [--timeout D]\n"
           "                                  call an endpoint; the reply goes to stdout\n"
           "  ls [--json]                     list endpoints\n"
           "  status NAME [--json]            one endpoint: replicas, snapshot, latency, errors\n"
           "  logs NAME [-f] [--since D] [--tail N]\n"
           "                                  the endpoint's captured worker output\n"
           "  scale NAME KNOB=VALUE...        change autoscaling knobs live\n"
           "  drain NAME                      stop its running replicas now (parked ones stay)\n"
           "  rm NAME                         delete an endpoint\n"
           "  secret set NAME KEY=VALUE...    create or replace a secret\n"
           "  secret ls | secret rm NAME\n"
           "\n"
           "ADDR defaults to $FLINT_ADDR, else unix:/run/flint/flintd.sock.\n"
           "Exit codes: 0 ok, 1 failed, 2 usage, 3 not found, 4 invalid input, 5 unavailable,\n"
           "6 timed out, 7 resource exhausted.\n");
}

int
flint_cli_main (int argc, char **argv)
{
  cli_t cli = { 0 };
  const char *env = getenv ("FLINT_ADDR");
  int i = 1, r;

  cli.addr = env && *env ? env : "unix:/run/flint/flintd.sock";
  while (i < argc && argv[i][0] == '-')
    {
      if (strcmp (argv[i], "--addr") == 0 && i + 1 < argc)
        {
          cli.addr = argv[i + 1];
          i += 2;
        }
      else if (strcmp (argv[i], "--help") == 0 || strcmp (argv[i], "-h") == 0)
        {
          usage (stdout);
          return EXIT_OK;
        }
      else if (strcmp (argv[i], "--version") == 0)
        {
          printf ("flint %s\n", FLINT_VERSION);
          return EXIT_OK;
        }
      else
        return usage_error ("unknown option `%s`", argv[i]);
    }
  if (i >= argc)
    {
      usage (stderr);
      return EXIT_USAGE;
    }
  argc -= i;
  argv += i;
  signal (SIGPIPE, SIG_IGN);
  if (strcmp (argv[0], "deploy") == 0)
    r = cmd_deploy (&cli, argc, argv);
  else if (strcmp (argv[0], "invoke") == 0)
    r = cmd_invoke (&cli, argc, argv);
  else if (strcmp (argv[0], "ls") == 0)
    r = cmd_ls (&cli, argc, argv);
  else if (strcmp (argv[0], "status") == 0)
    r = cmd_status (&cli, argc, argv);
  else if (strcmp (argv[0], "rm") == 0)
    r = cmd_rm (&cli, argc, argv);
  else if (strcmp (argv[0], "scale") == 0)
    r = cmd_scale (&cli, argc, argv);
  else if (strcmp (argv[0], "drain") == 0)
    r = cmd_drain (&cli, argc, argv);
  else if (strcmp (argv[0], "logs") == 0)
    r = cmd_logs (&cli, argc, argv);
  else if (strcmp (argv[0], "secret") == 0)
    r = cmd_secret (&cli, argc, argv);
  else if (strcmp (argv[0], "help") == 0)
    {
      usage (stdout);
      r = EXIT_OK;
    }
  else
    r = usage_error ("unknown command `%s`", argv[0]);
  flint_client_free (cli.client);
  fflush (stdout);
  return r;
}
