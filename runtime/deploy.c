/* The Deploy RPC: receive a manifest and a bundle, store it, start the new version's first
 * replica, snapshot it, and switch the endpoint to it once ready.
 *
 *   header ─▶ validate manifest ─▶ chunks (hashed and written off the loop) ─▶ verify digest
 *     ─▶ extract (off the loop) ─▶ registry: version N "deploying" ─▶ link weights (off loop)
 *     ─▶ start a replica ─▶ ready ─▶ [snapshot] ─▶ version N "ready", endpoint → N ─▶ reply
 *
 * Any failure replies with a status naming the phase and leaves the endpoint on its previous
 * version; the failed version stays in the registry with its error for `flint status`. Blocking
 * steps (disk writes, hashing, extraction, weight copies) run on libuv's thread pool so the
 * loop keeps serving invokes during a deploy. */
#include "daemon.h"
#include "bundle.h"
#include "grpc_server.h"
#include "store.h"
#include "flint/cleanup.h"
#include "flint/log.h"
#include "flint/util.h"
#include "flint/v1/flint.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

enum { PH_UPLOAD, PH_EXTRACT, PH_WEIGHTS, PH_START, PH_SNAPSHOT, PH_TOTAL, PH_COUNT };
static const char *const phase_names[PH_COUNT] = { "upload", "extract", "weights", "start", "snapshot", "total" };

struct flint_deploy_s {
  flint_daemon_t *d;
  flint_list_t link;          /* in d->deploys */
  flint_rpc_t *rpc;
  bool client_gone;
  bool replied;
  flint_manifest_t *manifest;
  char *manifest_text;
  char *manifest_path;
  uint64_t expected_size;
  char expected_sha[FLINT_SHA256_HEX_LEN];
  char sha[FLINT_SHA256_HEX_LEN];
  char tmp_path[PATH_MAX];
  int tmp_fd;
  flint_sha256_t *hasher;
  uint64_t received;
  uv_work_t work;
  uint8_t *chunk;            /* being written by the thread pool */
  size_t chunk_len;
  flint_error_t err;          /* set by thread-pool steps */
  flint_endpoint_t *ep;
  flint_version_t *v;
  uint64_t t0, t_phase;
  double phases[PH_COUNT];
  char *weights_dir;
  uint64_t weight_bytes;
};

static void deploy_free (flint_deploy_t *dep);

/* ---- replying -------------------------------------------------------------------------- */

static void
reply_error (flint_deploy_t *dep, flint_status_t code, const char *msg)
{
  if (dep->replied)
    return;
  dep->replied = true;
  if (!dep->client_gone)
    flint_rpc_finish (dep->rpc, (int) code, msg, NULL, 0);
  else
    flint_rpc_finish (dep->rpc, (int) FLINT_ECANCELLED, "client went away", NULL, 0);
}

static void
reply_ok (flint_deploy_t *dep, const char *snapshot_error)
{
  Flint__V1__DeployResponse resp = FLINT__V1__DEPLOY_RESPONSE__INIT;
  Flint__V1__DeployResponse__PhasesMsEntry e[PH_COUNT], *ep[PH_COUNT];
  uint8_t *buf;
  size_t len;

  if (dep->replied)
    return;
  dep->replied = true;
  resp.endpoint = dep->ep->name;
  resp.version = dep->v->number;
  resp.bundle_sha256 = dep->sha;
  resp.snapshot_error = (char *) (snapshot_error ? snapshot_error : "");
  resp.snapshot = flint__snapshot_proto (dep->ep, dep->v);
  for (int i = 0; i < PH_COUNT; i++)
    {
      flint__v1__deploy_response__phases_ms_entry__init (&e[i]);
      e[i].key = (char *) phase_names[i];
      e[i].value = dep->phases[i];
      ep[i] = &e[i];
    }
  resp.n_phases_ms = PH_COUNT;
  resp.phases_ms = ep;
  len = flint__v1__deploy_response__get_packed_size (&resp);
  buf = malloc (len ? len : 1);
  if (buf == NULL)
    abort ();
  flint__v1__deploy_response__pack (&resp, buf);
  flint__v1__snapshot__free_unpacked (resp.snapshot, NULL);
  flint_rpc_finish (dep->rpc, 0, NULL, buf, len);
  free (buf);
}

static void
phase_end (flint_deploy_t *dep, int phase)
{
  uint64_t now = flint_now_ns ();
  dep->phases[phase] = (double) (now - dep->t_phase) / 1e6;
  dep->t_phase = now;
}

/* Ends the deploy with an error: records it on the version (if one exists), replies, frees. */
static void
fail (flint_deploy_t *dep, flint_status_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
fail (flint_deploy_t *dep, flint_status_t code, const char *fmt, ...)
{
  char msg[1200];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  if (dep->v)
    {
      flint_error_t err = FLINT_ERROR_INIT;
      dep->v->state = FLINT_VERSION_FAILED;
      free (dep->v->error);
      dep->v->error = strdup (msg);
      if (flint_registry_set_version_state (dep->d->reg, dep->ep->name, dep->v->number, "failed", msg, &err) < 0)
        flint_err ("%s", err.msg);
    }
  if (dep->ep)
    {
      snprintf (dep->ep->last_error, sizeof dep->ep->last_error, "deploy failed: %s", msg);
      flint_warn ("deploy of `%s` failed: %s", dep->ep->name, msg);
    }
  reply_error (dep, code, msg);
  deploy_free (dep);
}

static void
deploy_free (flint_deploy_t *dep)
{
  flint_list_remove (&dep->link);
  if (dep->tmp_fd >= 0)
    close (dep->tmp_fd);
  if (dep->tmp_path[0])
    unlink (dep->tmp_path);
  if (dep->hasher)
    {
      char scratch[FLINT_SHA256_HEX_LEN];
      flint_sha256_final (dep->hasher, scratch);
    }
  if (dep->ep && dep->ep->deploying == dep)
    {
      dep->ep->deploying = NULL;
      dep->ep->deploying_version = NULL;
      /* a version that never became current is dropped from memory (now, or when its last
       * replica is gone) */
      if (dep->v)
        flint__version_maybe_free (dep->v);
      flint__endpoint_maybe_reap (dep->ep);
    }
  free (dep->weights_dir);
  flint_manifest_free (dep->manifest);
  free (dep->manifest_text);
  free (dep->manifest_path);
  free (dep->chunk);
  free (dep);
}

/* ---- after the upload -------------------------------------------------------------------- */

static void
version_ready (flint_deploy_t *dep, flint_replica_t *r, const char *snapshot_error)
{
  flint_error_t err = FLINT_ERROR_INIT;
  flint_endpoint_t *ep = dep->ep;

  if (flint_registry_set_version_state (dep->d->reg, ep->name, dep->v->number, "ready", "", &err) < 0
      || flint_registry_set_current (dep->d->reg, ep->name, dep->v->number, &err) < 0)
    {
      flint__replica_stop (r, "deploy failed");
      fail (dep, FLINT_EINTERNAL, "%s", err.msg);
      return;
    }
  flint__endpoint_switch (ep, dep->v);
  if (flint__endpoint_save_scale (ep, &err) < 0)
    flint_err ("%s", err.msg);
  ep->last_error[0] = '\0';
  phase_end (dep, PH_SNAPSHOT);
  dep->phases[PH_TOTAL] = (double) (flint_now_ns () - dep->t0) / 1e6;
  flint_info ("endpoint `%s` now serves version %llu (deploy %.0f ms)", ep->name,
              (unsigned long long) dep->v->number, dep->phases[PH_TOTAL]);
  {
    char line[200];
    snprintf (line, sizeof line, "version %llu deployed and serving", (unsigned long long) dep->v->number);
    flint_logbook_append (ep->logbook, dep->v->number, r->id, "flint", line, strlen (line));
  }
  reply_ok (dep, snapshot_error);
  /* The probe replica serves traffic from now on. */
  flint__dispatch_pump (ep);
  deploy_free (dep);
}

void
flint__deploy_replica_ready (flint_deploy_t *dep, flint_replica_t *r)
{
  phase_end (dep, PH_START);
  /* the snapshot step ends in flint__deploy_snapshot_done (at once when there is none) */
  flint__snapshot_take (dep, r);
}

void
flint__deploy_snapshot_done (flint_deploy_t *dep, flint_replica_t *r, const char *snapshot_error)
{
  if (r == NULL)
    {
      fail (dep, FLINT_EPRECONDITION, "endpoint `%s` version %llu: %s", dep->ep->name,
            (unsigned long long) dep->v->number, snapshot_error);
      return;
    }
  version_ready (dep, r, snapshot_error);
}

void
flint__deploy_replica_failed (flint_deploy_t *dep, flint_replica_t *r, flint_status_t code, const char *msg)
{
  (void) r;
  if (code == FLINT_EUNAVAILABLE || code == FLINT_EUNKNOWN || code == FLINT_EINTERNAL)
    code = FLINT_EPRECONDITION;
  fail (dep, code, "endpoint `%s` version %llu: the function failed to start: %s", dep->ep->name,
        (unsigned long long) dep->v->number, msg);
}

static void
weights_work_cb (uv_work_t *w)
{
  flint_deploy_t *dep = w->data;
  flint__store_link_weights (&dep->d->cfg, dep->ep->name, dep->v->number, dep->manifest, dep->v->bundle_dir,
                             &dep->weights_dir, &dep->weight_bytes, &dep->err);
}

static void
weights_done_cb (uv_work_t *w, int status)
{
  flint_deploy_t *dep = w->data;
  flint_error_t err = FLINT_ERROR_INIT;
  flint_replica_t *r;

  (void) status;
  if (dep->err.code != FLINT_OK)
    {
      fail (dep, dep->err.code, "%s", dep->err.msg);
      return;
    }
  dep->v->weights_dir = dep->weights_dir;
  dep->weights_dir = NULL;
  phase_end (dep, PH_WEIGHTS);
  if (dep->d->shutting_down)
    {
      fail (dep, FLINT_EUNAVAILABLE, "flintd is shutting down");
      return;
    }
  r = flint__replica_start (dep->ep, dep->v, &err);
  if (r == NULL)
    {
      fail (dep, err.code, "start the first replica: %s", err.msg);
      return;
    }
  r->deploy = dep;
}

/* Checks that what the manifest points at exists in the extracted bundle. */
static int
check_bundle (flint_deploy_t *dep, const char *dir, flint_error_t *err)
{
  const flint_manifest_t *m = dep->manifest;
  char path[PATH_MAX];
  struct stat st;

  if (m->kind == FLINT_KIND_LLM)
    {
      snprintf (path, sizeof path, "%s/%s/config.json", dir, m->model);
      if (stat (path, &st) < 0)
        return flint_error_set (err, FLINT_EPRECONDITION, "%s: field `model`: the bundle has no `%s/config.json`",
                                dep->manifest_path, m->model);
      snprintf (path, sizeof path, "%s/%s/config.json", dir, m->draft_model ? m->draft_model : m->model);
      if (stat (path, &st) < 0)
        return flint_error_set (err, FLINT_EPRECONDITION,
                                "%s: field `draft_model`: the bundle has no `%s/config.json`", dep->manifest_path,
                                m->draft_model);
      return 0;
    }
  snprintf (path, sizeof path, "%s/%s", dir, m->function);
  if (lstat (path, &st) < 0)
    return flint_error_set (err, FLINT_EPRECONDITION, "%s: field `function`: the bundle has no file `%s`%s",
                            dep->manifest_path, m->function,
                            m->kind == FLINT_KIND_NATIVE ? " (was the shared object built?)" : "");
  if (!S_ISREG (st.st_mode) && !S_ISLNK (st.st_mode))
    return flint_error_set (err, FLINT_EPRECONDITION, "%s: field `function`: `%s` is not a regular file",
                            dep->manifest_path, m->function);
  if (m->kind == FLINT_KIND_EXEC && !(st.st_mode & 0100))
    return flint_error_set (err, FLINT_EPRECONDITION, "%s: field `function`: `%s` is not executable (chmod +x)",
                            dep->manifest_path, m->function);
  for (size_t i = 0; i < m->n_weights; i++)
    {
      snprintf (path, sizeof path, "%s/%s", dir, m->weights[i].value);
      if (lstat (path, &st) < 0 || !S_ISREG (st.st_mode))
        return flint_error_set (err, FLINT_EPRECONDITION, "%s: field `weights`: `%s` is not a file in the bundle",
                                dep->manifest_path, m->weights[i].value);
    }
  return 0;
}

static void
extract_work_cb (uv_work_t *w)
{
  flint_deploy_t *dep = w->data;
  char final[PATH_MAX], tmp[PATH_MAX];
  flint_bundle_limits_t limits = { .max_total_bytes = dep->d->cfg.max_bundle_bytes * 2, .max_entries = 100000 };
  unsigned rnd = 0;

  snprintf (final, sizeof final, "%s/bundles/%s", dep->d->cfg.state_dir, dep->sha);
  if (access (final, F_OK) == 0)
    {
      check_bundle (dep, final, &dep->err);
      return; /* content-addressed: already there */
    }
  getrandom (&rnd, sizeof rnd, GRND_NONBLOCK);
  snprintf (tmp, sizeof tmp, "%s/tmp/extract-%s-%08x", dep->d->cfg.state_dir, dep->sha, rnd);
  if (flint_bundle_extract (dep->tmp_path, tmp, &limits, &dep->err) < 0)
    return;
  if (check_bundle (dep, tmp, &dep->err) < 0)
    {
      flint_rm_rf (tmp);
      return;
    }
  if (rename (tmp, final) < 0 && errno != EEXIST && errno != ENOTEMPTY)
    {
      flint_error_set_errno (&dep->err, FLINT_EINTERNAL, errno, "store bundle");
      flint_rm_rf (tmp);
      return;
    }
  flint_rm_rf (tmp); /* lost a race with an identical deploy: theirs is as good */
}

static void
extract_done_cb (uv_work_t *w, int status)
{
  flint_deploy_t *dep = w->data;
  flint_version_rec_t rec = { 0 };
  flint_error_t err = FLINT_ERROR_INIT;
  uint64_t number;

  (void) status;
  if (dep->err.code != FLINT_OK)
    {
      fail (dep, dep->err.code, "%s", dep->err.msg);
      return;
    }
  phase_end (dep, PH_EXTRACT);
  rec.endpoint = dep->ep->name;
  rec.state = (char *) "deploying";
  rec.manifest = dep->manifest_text;
  rec.manifest_path = dep->manifest_path;
  rec.bundle_sha256 = dep->sha;
  if (flint_registry_put_endpoint (dep->d->reg, dep->ep->name, "", &err) < 0
      || flint_registry_add_version (dep->d->reg, &rec, &number, &err) < 0)
    {
      fail (dep, FLINT_EINTERNAL, "%s", err.msg);
      return;
    }
  dep->v = flint__version_new (dep->ep, number, dep->manifest_text, dep->manifest_path, dep->sha, &err);
  if (dep->v == NULL)
    {
      fail (dep, FLINT_EINTERNAL, "%s", err.msg);
      return;
    }
  flint_list_insert_head (&dep->ep->versions, &dep->v->link);
  dep->ep->deploying_version = dep->v;
  if (dep->ep->current == NULL)
    dep->ep->scale = dep->manifest->scale; /* a first deploy's replica runs with its own knobs */
  unlink (dep->tmp_path);
  dep->tmp_path[0] = '\0';
  w->data = dep;
  uv_queue_work (dep->d->loop, &dep->work, weights_work_cb, weights_done_cb);
}

/* ---- the upload ------------------------------------------------------------------------ */

static void recv_cb (flint_rpc_t *rpc, const uint8_t *msg, size_t len, bool end, bool ok, void *data);

static void
chunk_work_cb (uv_work_t *w)
{
  flint_deploy_t *dep = w->data;
  int r = flint_write_all (dep->tmp_fd, dep->chunk, dep->chunk_len);
  if (r < 0)
    flint_error_set_errno (&dep->err, FLINT_EINTERNAL, r, "store the upload (disk full?)");
  else
    flint_sha256_update (dep->hasher, dep->chunk, dep->chunk_len);
}

static void
chunk_done_cb (uv_work_t *w, int status)
{
  flint_deploy_t *dep = w->data;

  (void) status;
  free (dep->chunk);
  dep->chunk = NULL;
  if (dep->err.code != FLINT_OK)
    {
      fail (dep, dep->err.code, "%s", dep->err.msg);
      return;
    }
  if (dep->client_gone)
    {
      fail (dep, FLINT_ECANCELLED, "the client went away during the upload");
      return;
    }
  flint_rpc_recv (dep->rpc, recv_cb, dep);
}

static void
upload_complete (flint_deploy_t *dep)
{
  flint_sha256_final (dep->hasher, dep->sha);
  dep->hasher = NULL;
  close (dep->tmp_fd);
  dep->tmp_fd = -1;
  if (dep->received != dep->expected_size)
    {
      fail (dep, FLINT_EDATALOSS, "bundle: received %llu bytes, the client announced %llu",
            (unsigned long long) dep->received, (unsigned long long) dep->expected_size);
      return;
    }
  if (strcmp (dep->sha, dep->expected_sha) != 0)
    {
      fail (dep, FLINT_EDATALOSS,
            "bundle digest mismatch: the client announced sha256 %s but the bytes received hash to %s "
            "(the upload was corrupted; nothing was deployed)",
            dep->expected_sha, dep->sha);
      return;
    }
  phase_end (dep, PH_UPLOAD);
  dep->work.data = dep;
  uv_queue_work (dep->d->loop, &dep->work, extract_work_cb, extract_done_cb);
}

static void
handle_header (flint_deploy_t *dep, const Flint__V1__DeployHeader *h)
{
  flint_daemon_t *d = dep->d;
  flint_error_t err = FLINT_ERROR_INIT;
  flint_endpoint_t *ep;
  unsigned rnd = 0;

  dep->manifest_path = strdup (h->manifest_path[0] ? h->manifest_path : "flint.yaml");
  dep->manifest_text = strdup (h->manifest);
  if (flint_manifest_parse (h->manifest, strlen (h->manifest), dep->manifest_path, &dep->manifest, &err) < 0)
    {
      fail (dep, FLINT_EINVAL, "%s", err.msg);
      return;
    }
  if (!flint_is_sha256_hex (h->bundle_sha256))
    {
      fail (dep, FLINT_EINVAL, "deploy header: bundle_sha256 must be 64 lowercase hex digits");
      return;
    }
  if (h->bundle_size > d->cfg.max_bundle_bytes)
    {
      fail (dep, FLINT_EEXHAUSTED, "bundle of %llu bytes exceeds this node's limit of %llu bytes",
            (unsigned long long) h->bundle_size, (unsigned long long) d->cfg.max_bundle_bytes);
      return;
    }
  ep = flint__endpoint_get (d, dep->manifest->name);
  if (ep && ep->deleting)
    {
      fail (dep, FLINT_EUNAVAILABLE, "endpoint `%s` is being deleted; deploy again in a moment", ep->name);
      return;
    }
  if (ep && ep->deploying)
    {
      fail (dep, FLINT_EABORTED, "a deploy of `%s` is already in progress", ep->name);
      return;
    }
  if (ep == NULL)
    ep = flint__endpoint_create (d, dep->manifest->name);
  dep->ep = ep;
  ep->deploying = dep;
  dep->expected_size = h->bundle_size;
  snprintf (dep->expected_sha, sizeof dep->expected_sha, "%s", h->bundle_sha256);
  getrandom (&rnd, sizeof rnd, GRND_NONBLOCK);
  snprintf (dep->tmp_path, sizeof dep->tmp_path, "%s/tmp/upload-%s-%08x.tar", d->cfg.state_dir, ep->name, rnd);
  dep->tmp_fd = open (dep->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (dep->tmp_fd < 0)
    {
      int e = errno;
      dep->tmp_path[0] = '\0';
      fail (dep, FLINT_EINTERNAL, "store the upload: %s", strerror (e));
      return;
    }
  dep->hasher = flint_sha256_new ();
  dep->t_phase = flint_now_ns ();
  flint_rpc_recv (dep->rpc, recv_cb, dep);
}

static void
recv_cb (flint_rpc_t *rpc, const uint8_t *msg, size_t len, bool end, bool ok, void *data)
{
  flint_deploy_t *dep = data;
  Flint__V1__DeployRequest *req;

  (void) rpc;
  if (!ok)
    {
      dep->client_gone = true;
      fail (dep, FLINT_ECANCELLED, "the deploy stream broke");
      return;
    }
  if (end)
    {
      if (dep->manifest == NULL)
        fail (dep, FLINT_EINVAL, "deploy: the stream ended before the header (manifest) arrived");
      else
        upload_complete (dep);
      return;
    }
  req = flint__v1__deploy_request__unpack (NULL, len, msg);
  if (req == NULL)
    {
      fail (dep, FLINT_EINVAL, "deploy: malformed DeployRequest message");
      return;
    }
  if (dep->manifest == NULL)
    {
      if (req->part_case != FLINT__V1__DEPLOY_REQUEST__PART_HEADER)
        fail (dep, FLINT_EINVAL, "deploy: the first message must be the header (manifest and bundle digest)");
      else
        handle_header (dep, req->header);
      flint__v1__deploy_request__free_unpacked (req, NULL);
      return;
    }
  if (req->part_case != FLINT__V1__DEPLOY_REQUEST__PART_CHUNK)
    {
      flint__v1__deploy_request__free_unpacked (req, NULL);
      fail (dep, FLINT_EINVAL, "deploy: only bundle chunks may follow the header");
      return;
    }
  if (dep->received + req->chunk.len > dep->expected_size)
    {
      flint__v1__deploy_request__free_unpacked (req, NULL);
      fail (dep, FLINT_EINVAL, "bundle: more bytes than the %llu announced", (unsigned long long) dep->expected_size);
      return;
    }
  dep->received += req->chunk.len;
  dep->chunk_len = req->chunk.len;
  dep->chunk = malloc (req->chunk.len ? req->chunk.len : 1);
  if (dep->chunk == NULL)
    abort ();
  memcpy (dep->chunk, req->chunk.data, req->chunk.len);
  flint__v1__deploy_request__free_unpacked (req, NULL);
  dep->work.data = dep;
  uv_queue_work (dep->d->loop, &dep->work, chunk_work_cb, chunk_done_cb);
}

static void
cancel_cb (flint_rpc_t *rpc, void *data)
{
  flint_deploy_t *dep = data;
  (void) rpc;
  /* Upload steps notice and stop; once the upload is done the deploy completes server-side. */
  dep->client_gone = true;
}

void flint__deploy_rpc (flint_rpc_t *rpc, void *method_data);
void
flint__deploy_rpc (flint_rpc_t *rpc, void *method_data)
{
  flint_daemon_t *d = method_data;
  flint_deploy_t *dep;

  if (d->shutting_down)
    {
      flint_rpc_finish (rpc, FLINT_EUNAVAILABLE, "flintd is shutting down", NULL, 0);
      return;
    }
  dep = calloc (1, sizeof *dep);
  if (dep == NULL)
    abort ();
  dep->d = d;
  dep->rpc = rpc;
  flint_list_insert_tail (&d->deploys, &dep->link);
  dep->tmp_fd = -1;
  dep->t0 = dep->t_phase = flint_now_ns ();
  flint_rpc_on_cancel (rpc, cancel_cb, dep);
  flint_rpc_recv (rpc, recv_cb, dep);
}

void
flint__deploys_shutdown (flint_daemon_t *d)
{
  for (flint_list_t *p = d->deploys.next; p != &d->deploys; p = p->next)
    reply_error (flint_list_entry (p, flint_deploy_t, link), FLINT_EUNAVAILABLE,
                 "flintd is shutting down; deploy again once it is back");
}
