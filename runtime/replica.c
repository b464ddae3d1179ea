/* Replicas: running workers of an endpoint version, from spawn to death.
 *
 *   STARTING ──Hello──▶ (Load sent) ──Loaded ok──▶ READY ──▶ DRAINING ──▶ STOPPING ──▶ DEAD
 *        └──────── Loaded failed / startup timeout / died ───────────────────────────▶ DEAD
 *
 * Replicas restored from a snapshot (tier image) or thawed (tier parked) take the same path
 * from STARTING on, driven by snapshot.c (Restored, RestoredAck, canary) instead of
 * Hello/Load; a failure before READY goes to snapshot.c, which falls back down the tiers.
 *
 * A replica is dead once both its channel has closed and its owner (spawner) reported the exit,
 * or the exit report did not come within EXIT_REPORT_WAIT_MS of the channel closing: the
 * report carries the cause ("exceeded memory limit 256 MiB") that failed requests then name. */
#include "daemon.h"
#include "flint/cleanup.h"
#include "flint/log.h"
#include "flint/util.h"
#include "flint/function.h"
#include "flint/node/v1/node.pb-c.h"
#include "flint/worker/v1/worker.pb-c.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#define EXIT_REPORT_WAIT_MS 300

typedef Flint__Worker__V1__Frame wframe_t;

const char *
flint__replica_state_name (flint_replica_state_t s)
{
  switch (s)
    {
    case FLINT_REPLICA_STARTING: return "starting";
    case FLINT_REPLICA_PARKED: return "parked";
    case FLINT_REPLICA_READY: return "ready";
    case FLINT_REPLICA_DRAINING: return "draining";
    case FLINT_REPLICA_STOPPING: return "stopping";
    case FLINT_REPLICA_DEAD: return "dead";
    }
  return "unknown";
}

const char *
flint__tier_name (flint_tier_t t)
{
  switch (t)
    {
    case FLINT_TIER_COLD: return "cold";
    case FLINT_TIER_IMAGE: return "image";
    case FLINT_TIER_PARKED: return "parked";
    }
  return "unknown";
}

/* A replica counts in ep->replicas_starting from its start (or unpark) until it is ready,
 * parked, failed or stopped: exactly once, whichever comes first. */
void
flint__replica_count_starting (flint_replica_t *r)
{
  if (!r->counted_starting)
    {
      r->counted_starting = true;
      r->ep->replicas_starting++;
    }
}

void
flint__replica_uncount_starting (flint_replica_t *r)
{
  if (r->counted_starting)
    {
      r->counted_starting = false;
      if (r->ep->replicas_starting > 0)
        r->ep->replicas_starting--;
    }
}

bool
flint__replica_has_room (const flint_replica_t *r)
{
  /* a worker whose channel closed is dead, even before its exit report arrives */
  return r->state == FLINT_REPLICA_READY && !r->channel_closed && r->inflight < r->ep->scale.max_concurrency;
}

static void finalize_ex (flint_replica_t *r, bool rescale);
#define finalize(r) finalize_ex ((r), true)

static void
replica_free_cb (uv_handle_t *h)
{
  flint_replica_t *r = h->data;
  free (h);
  free (r);
}

static void
replica_free (flint_replica_t *r)
{
  if (r->timer)
    {
      uv_timer_stop (r->timer);
      r->timer->data = r;
      uv_close ((uv_handle_t *) r->timer, replica_free_cb);
      /* freed (with the timer) by the close callback */
      r->timer = NULL;
      return;
    }
  free (r);
}

static uv_timer_t *
replica_timer (flint_replica_t *r)
{
  if (r->timer == NULL)
    {
      r->timer = calloc (1, sizeof *r->timer);
      if (r->timer == NULL)
        abort ();
      uv_timer_init (r->d->loop, r->timer);
      r->timer->data = r;
    }
  return r->timer;
}

/* ---- sending to the worker ------------------------------------------------------------- */

static int
send_worker (flint_replica_t *r, wframe_t *f)
{
  if (r->chan == NULL)
    return -EPIPE;
  return flint_channel_send (r->chan, &f->base, NULL, 0);
}

int
flint__replica_send (flint_replica_t *r, struct Flint__Worker__V1__Frame *f)
{
  return send_worker (r, f);
}

int
flint__replica_send_restored (flint_replica_t *r)
{
  Flint__Worker__V1__Restored rs = FLINT__WORKER__V1__RESTORED__INIT;
  wframe_t f = FLINT__WORKER__V1__FRAME__INIT;
  uint8_t seed[32];

  /* every replica restored from one image starts with the same RNG state: fresh entropy */
  if (getrandom (seed, sizeof seed, 0) != (ssize_t) sizeof seed)
    return -EIO;
  rs.replica_id = r->id;
  rs.seed.data = seed;
  rs.seed.len = sizeof seed;
  rs.wall_ms = flint_wall_ms ();
  f.msg_case = FLINT__WORKER__V1__FRAME__MSG_RESTORED;
  f.restored = &rs;
  r->resume_ns = flint_now_ns ();
  return send_worker (r, &f);
}

/* The files the weight store linked for an llm version (its model's and draft's safetensors,
 * see store.c): the worker maps them by these names. A NULL-terminated heap array. */
static char **
llm_weight_files (const char *weights_dir, size_t *n_out)
{
  DIR *d = weights_dir ? opendir (weights_dir) : NULL;
  struct dirent *de;
  char **names = NULL;
  size_t n = 0;

  *n_out = 0;
  if (d == NULL)
    return NULL;
  while ((de = readdir (d)) != NULL)
    {
      size_t l = strlen (de->d_name);
      if (de->d_name[0] == '.' || l < 12 || strcmp (de->d_name + l - 12, ".safetensors") != 0)
        continue;
      names = realloc (names, (n + 2) * sizeof *names);
      if (names == NULL || (names[n] = strdup (de->d_name)) == NULL)
        abort ();
      names[++n] = NULL;
    }
  closedir (d);
  *n_out = n;
  return names;
}

static void
send_load (flint_replica_t *r)
{
  flint_version_t *v = r->version;
  flint_manifest_t *m = v->manifest;
  Flint__Worker__V1__Load load = FLINT__WORKER__V1__LOAD__INIT;
  wframe_t f = FLINT__WORKER__V1__FRAME__INIT;
  size_t nc = m->n_config, nw = m->n_weights, nllm = 0;
  char **llm_files = m->kind == FLINT_KIND_LLM ? llm_weight_files (v->weights_dir, &nllm) : NULL;
  Flint__Worker__V1__Load__ConfigEntry *cfg = calloc (nc + 1, sizeof *cfg);
  Flint__Worker__V1__Load__ConfigEntry **cfgp = calloc (nc + 1, sizeof *cfgp);
  Flint__Worker__V1__Load__WeightsEntry *w = calloc (nw + nllm + 1, sizeof *w);
  Flint__Worker__V1__Load__WeightsEntry **wp = calloc (nw + nllm + 1, sizeof *wp);
  char **wpaths = calloc (nw + nllm + 1, sizeof *wpaths);
  char path[4200], draft[4200] = "";
  const char *root = r->d->cfg.isolate ? "/bundle" : v->bundle_dir;
  const char *wroot = r->d->cfg.isolate ? "/weights" : v->weights_dir;

  if (!cfg || !cfgp || !w || !wp || !wpaths)
    abort ();
  load.endpoint = r->ep->name;
  load.version = v->number;
  load.replica_id = r->id;
  switch (m->kind)
    {
    case FLINT_KIND_NATIVE: load.kind = FLINT__WORKER__V1__KIND__KIND_NATIVE; break;
    case FLINT_KIND_EXEC: load.kind = FLINT__WORKER__V1__KIND__KIND_EXEC; break;
    case FLINT_KIND_LLM: load.kind = FLINT__WORKER__V1__KIND__KIND_LLM; break;
    }
  snprintf (path, sizeof path, "%s/%s", root, m->kind == FLINT_KIND_LLM ? m->model : m->function);
  load.path = path;
  load.n_args = m->n_args;
  load.args = m->args;
  for (size_t i = 0; i < nc; i++)
    {
      flint__worker__v1__load__config_entry__init (&cfg[i]);
      cfg[i].key = m->config[i].key;
      cfg[i].value = m->config[i].value;
      cfgp[i] = &cfg[i];
    }
  load.n_config = nc;
  load.config = cfgp;
  for (size_t i = 0; i < nw; i++)
    {
      flint__worker__v1__load__weights_entry__init (&w[i]);
      w[i].key = m->weights[i].key;
      if (asprintf (&wpaths[i], "%s/%s", wroot ? wroot : root, m->weights[i].key) < 0)
        abort ();
      w[i].value = wpaths[i];
      wp[i] = &w[i];
    }
  for (size_t i = 0; i < nllm; i++)
    {
      flint__worker__v1__load__weights_entry__init (&w[nw + i]);
      w[nw + i].key = llm_files[i];
      if (asprintf (&wpaths[nw + i], "%s/%s", wroot, llm_files[i]) < 0)
        abort ();
      w[nw + i].value = wpaths[nw + i];
      wp[nw + i] = &w[nw + i];
    }
  load.n_weights = nw + nllm;
  load.weights = wp;
  if (m->kind == FLINT_KIND_LLM && m->draft_model)
    {
      snprintf (draft, sizeof draft, "%s/%s", root, m->draft_model);
      load.draft_path = draft;
    }
  load.cpu_millis = m->resources.cpu_millis;
  load.max_concurrency = r->ep->scale.max_concurrency;
  load.max_payload = m->max_payload;
  load.threads = m->threads;
  f.msg_case = FLINT__WORKER__V1__FRAME__MSG_LOAD;
  f.load = &load;
  send_worker (r, &f);
  for (size_t i = 0; i < nw + nllm; i++)
    free (wpaths[i]);
  for (size_t i = 0; i < nllm; i++)
    free (llm_files[i]);
  free (llm_files);
  free (wpaths);
  free (cfg);
  free (cfgp);
  free (w);
  free (wp);
}

/* ---- startup outcome --------------------------------------------------------------------- */

static void
startup_failed (flint_replica_t *r, flint_status_t code, const char *msg)
{
  flint_endpoint_t *ep = r->ep;

  flint__replica_uncount_starting (r);
  ep->metrics.replica_failures++;
  if (r->tier != FLINT_TIER_COLD)
    {
      /* a faster tier failed: snapshot.c logs it and falls back down the tiers */
      flint__snapshot_start_failed (r, msg);
      return;
    }
  flint_warn ("endpoint `%s` replica %s failed to start: %s", ep->name, r->id, msg);
  snprintf (ep->last_error, sizeof ep->last_error, "replica %s failed to start: %s", r->id, msg);
  if (r->deploy == NULL && r->version == ep->current)
    flint__autoscale_start_failed (ep, msg);
  flint_logbook_append (ep->logbook, r->version->number, r->id, "flint", ep->last_error, strlen (ep->last_error));
  if (r->deploy)
    {
      flint_deploy_t *dep = r->deploy;
      r->deploy = NULL;
      flint__deploy_replica_failed (dep, r, code, msg);
    }
  else
    {
      /* Nothing else is coming up for the queued requests: tell them why now rather than at
       * their deadline. */
      bool other = false;
      flint_list_t *p;
      for (p = ep->replicas.next; p != &ep->replicas; p = p->next)
        {
          flint_replica_t *o = flint_list_entry (p, flint_replica_t, link);
          if (o != r && (o->state == FLINT_REPLICA_READY || o->state == FLINT_REPLICA_STARTING))
            other = true;
        }
      if (!other)
        {
          char why[800];
          snprintf (why, sizeof why, "endpoint `%s`: no replica could be started: %s", ep->name, msg);
          while (!flint_list_empty (&ep->queue))
            {
              flint_request_t *req = flint_list_entry (ep->queue.next, flint_request_t, link);
              flint__request_complete (req, FLINT_EUNAVAILABLE, why, NULL, 0);
            }
        }
    }
}

/* Records a start in the endpoint's metrics: cold starts by tier and their phases. */
static void
record_start (flint_replica_t *r)
{
  flint_ep_metrics_t *m = &r->ep->metrics;
  flint_hist_t *ph = m->phases[r->tier];
  const double *v = r->phases_ms;

  m->cold_starts[r->tier]++;
  if (r->tier == FLINT_TIER_COLD)
    {
      flint_hist_observe (&ph[FLINT_PHASE_SANDBOX], v[FLINT_RPHASE_SANDBOX]);
      flint_hist_observe (&ph[FLINT_PHASE_INIT], v[FLINT_RPHASE_INIT]);
    }
  else
    {
      /* a parked replica restored, reconnected and ran its hook before it was frozen: its
       * start is the thaw and the canary */
      if (r->tier == FLINT_TIER_IMAGE)
        {
          flint_hist_observe (&ph[FLINT_PHASE_SANDBOX], v[FLINT_RPHASE_SANDBOX]);
          flint_hist_observe (&ph[FLINT_PHASE_RESTORE], v[FLINT_RPHASE_RESTORE]);
          flint_hist_observe (&ph[FLINT_PHASE_RECONNECT], v[FLINT_RPHASE_CONNECT]);
          if (v[FLINT_RPHASE_CUDA] > 0)
            flint_hist_observe (&ph[FLINT_PHASE_CUDA_RESTORE], v[FLINT_RPHASE_CUDA]);
          if (r->restore_phases_reported)
            {
              flint_hist_observe (&ph[FLINT_PHASE_WEIGHT_COPY], v[FLINT_RPHASE_WEIGHTS]);
              flint_hist_observe (&ph[FLINT_PHASE_KV_ALLOC], v[FLINT_RPHASE_KV]);
            }
        }
      flint_hist_observe (&ph[FLINT_PHASE_CANARY], v[FLINT_RPHASE_CANARY]);
    }
  flint_hist_observe (&ph[FLINT_PHASE_TOTAL], v[FLINT_RPHASE_TOTAL]);
}

static void
became_ready (flint_replica_t *r, double init_ms)
{
  flint_endpoint_t *ep = r->ep;

  flint__replica_uncount_starting (r);
  r->state = FLINT_REPLICA_READY;
  r->ready_ns = r->last_active_ns = flint_now_ns ();
  if (r->tier == FLINT_TIER_COLD)
    r->phases_ms[FLINT_RPHASE_INIT] = init_ms;
  r->phases_ms[FLINT_RPHASE_TOTAL] = (double) (r->ready_ns - r->started_ns) / 1e6;
  if (r->timer)
    uv_timer_stop (r->timer);
  record_start (r);
  flint__autoscale_replica_ready (r);
  if (r->tier == FLINT_TIER_COLD)
    flint_info ("endpoint `%s` v%llu replica %s ready (cold, %.1f ms: sandbox %.1f, init %.1f)", ep->name,
                (unsigned long long) r->version->number, r->id, r->phases_ms[FLINT_RPHASE_TOTAL],
                r->phases_ms[FLINT_RPHASE_SANDBOX], init_ms);
  else
    flint_info ("endpoint `%s` v%llu replica %s ready (%s, %.1f ms: sandbox %.1f, restore %.1f, reconnect %.1f, "
                "canary %.1f)",
                ep->name, (unsigned long long) r->version->number, r->id, flint__tier_name (r->tier),
                r->phases_ms[FLINT_RPHASE_TOTAL], r->phases_ms[FLINT_RPHASE_SANDBOX], r->phases_ms[FLINT_RPHASE_RESTORE],
                r->phases_ms[FLINT_RPHASE_CONNECT], r->phases_ms[FLINT_RPHASE_CANARY]);
  if (r->deploy)
    {
      flint_deploy_t *dep = r->deploy;
      r->deploy = NULL;
      flint__deploy_replica_ready (dep, r);
      return; /* the deploy decides when the replica takes traffic */
    }
  if (r->version != ep->current)
    {
      flint__replica_stop (r, "its version is no longer current");
      return;
    }
  flint__dispatch_pump (ep);
}

void
flint__replica_ready (flint_replica_t *r, double init_ms)
{
  became_ready (r, init_ms);
}

static void send_kill (flint_replica_t *r);

void
flint__replica_fail_start (flint_replica_t *r, flint_status_t code, const char *msg, const char *why)
{
  if (r->state != FLINT_REPLICA_STARTING)
    return;
  startup_failed (r, code, msg);
  if (r->pid <= 0 && r->chan == NULL)
    {
      /* no worker was created (or none we know of): nothing to kill, nothing will report */
      flint__replica_discard (r, why);
      return;
    }
  r->state = FLINT_REPLICA_STOPPING;
  if (r->exit_reason[0] == '\0')
    snprintf (r->exit_reason, sizeof r->exit_reason, "stopped by flintd (%s)", why);
  send_kill (r);
}

/* ---- frames from the worker -------------------------------------------------------------- */

static void
worker_frame_cb (flint_channel_t *ch, const uint8_t *payload, size_t len, void *data)
{
  flint_replica_t *r = data;
  wframe_t *f = flint__worker__v1__frame__unpack (NULL, len, payload);

  (void) ch;
  if (f == NULL)
    {
      flint_warn ("replica %s: malformed frame (%zu bytes): stopping it", r->id, len);
      flint__replica_stop (r, "protocol error");
      return;
    }
  switch (f->msg_case)
    {
    case FLINT__WORKER__V1__FRAME__MSG_HELLO:
      if (f->hello->abi_version != FLINT_ABI_VERSION)
        {
          char msg[200];
          snprintf (msg, sizeof msg, "flint-worker speaks ABI %u, flintd %u", f->hello->abi_version,
                    FLINT_ABI_VERSION);
          startup_failed (r, FLINT_EINTERNAL, msg);
          flint__replica_stop (r, "ABI mismatch");
          break;
        }
      r->phases_ms[FLINT_RPHASE_CONNECT] = (double) (flint_now_ns () - r->started_ns) / 1e6;
      send_load (r);
      break;
    case FLINT__WORKER__V1__FRAME__MSG_LOADED:
      if (r->state != FLINT_REPLICA_STARTING)
        break;
      if (f->loaded->ok)
        became_ready (r, f->loaded->init_ms);
      else
        {
          flint_status_t code = f->loaded->code > 0 && f->loaded->code <= 16 ? (flint_status_t) f->loaded->code
                                                                             : FLINT_EPRECONDITION;
          startup_failed (r, code, f->loaded->error);
          flint__replica_stop (r, "its function failed to load");
        }
      break;
    case FLINT__WORKER__V1__FRAME__MSG_RESULT:
    case FLINT__WORKER__V1__FRAME__MSG_CHUNK:
      {
        uint64_t id = f->msg_case == FLINT__WORKER__V1__FRAME__MSG_RESULT ? f->result->request_id
                                                                          : f->chunk->request_id;
        flint_request_t *req = NULL;
        if (r->canary_req && id == r->canary_req)
          {
            if (f->msg_case == FLINT__WORKER__V1__FRAME__MSG_RESULT)
              flint__snapshot_on_canary_result (r, id, f->result->code, f->result->message);
            break;
          }
        for (flint_list_t *p = r->requests.next; p != &r->requests; p = p->next)
          {
            flint_request_t *q = flint_list_entry (p, flint_request_t, link);
            if (q->id == id)
              {
                req = q;
                break;
              }
          }
        if (req == NULL)
          break; /* cancelled or timed out meanwhile */
        if (r->first_output_ns == 0)
          {
            /* scale from zero to first token: the replica's start to its first output, for a
             * request that waited for this replica to start (not one that found it warm) */
            r->first_output_ns = flint_now_ns ();
            if (req->arrived_ns <= r->ready_ns)
              {
                r->phases_ms[FLINT_RPHASE_FIRST_TOKEN] = (double) (r->first_output_ns - r->started_ns) / 1e6;
                flint_hist_observe (&r->ep->metrics.phases[r->tier][FLINT_PHASE_FIRST_TOKEN],
                                    r->phases_ms[FLINT_RPHASE_FIRST_TOKEN]);
              }
          }
        if (f->msg_case == FLINT__WORKER__V1__FRAME__MSG_CHUNK)
          {
            req->chunks_sent = true;
            /* an answered request (client cancelled, deadline passed) keeps its slot until the
             * worker's Result, but has no sink: its chunks are dropped */
            if (req->sink && req->sink->chunk)
              req->sink->chunk (req, f->chunk->data.data, f->chunk->data.len);
          }
        else
          {
            Flint__Worker__V1__Result *res = f->result;
            r->completed++;
            r->last_active_ns = flint_now_ns ();
            if (res->code == 0)
              flint__request_complete (req, FLINT_OK, NULL, res->data.data, res->data.len);
            else
              {
                char msg[800];
                flint_status_t code = res->code > 0 && res->code <= 16 ? (flint_status_t) res->code : FLINT_EUNKNOWN;
                snprintf (msg, sizeof msg, "endpoint `%s`: %s", r->ep->name, res->message);
                flint__request_complete (req, code, msg, NULL, 0);
              }
          }
        break;
      }
    case FLINT__WORKER__V1__FRAME__MSG_PONG:
      flint__engine_stats_update (r, f->pong);
      flint__snapshot_on_pong (r, f->pong->seq);
      break;
    case FLINT__WORKER__V1__FRAME__MSG_CHECKPOINT_READY:
      flint__snapshot_on_checkpoint_ready (r, f->checkpoint_ready->ok, f->checkpoint_ready->error,
                                           f->checkpoint_ready->hook_ms);
      break;
    case FLINT__WORKER__V1__FRAME__MSG_RESTORED_ACK:
      for (size_t i = 0; i < f->restored_ack->n_phases_ms; i++)
        {
          const char *k = f->restored_ack->phases_ms[i]->key;
          if (strcmp (k, "weight_copy") == 0)
            r->phases_ms[FLINT_RPHASE_WEIGHTS] = f->restored_ack->phases_ms[i]->value;
          else if (strcmp (k, "kv_alloc") == 0)
            r->phases_ms[FLINT_RPHASE_KV] = f->restored_ack->phases_ms[i]->value;
          r->restore_phases_reported = true;
        }
      flint__snapshot_on_restored_ack (r, f->restored_ack->ok, f->restored_ack->error, f->restored_ack->hook_ms);
      break;
    default:
      break;
    }
  flint__worker__v1__frame__free_unpacked (f, NULL);
}

static void
exit_wait_cb (uv_timer_t *t)
{
  flint_replica_t *r = t->data;
  if (!r->exited)
    snprintf (r->exit_reason, sizeof r->exit_reason, "the worker closed its connection");
  finalize (r);
}

static void
worker_close_cb (flint_channel_t *ch, int error, void *data)
{
  flint_replica_t *r = data;
  (void) error;
  (void) ch;
  r->channel_closed = true;
  if (r->exited)
    {
      finalize (r);
      return;
    }
  /* The exit report (with the cause) is on its way from the spawner: wait a moment for it. */
  uv_timer_start (replica_timer (r), exit_wait_cb, EXIT_REPORT_WAIT_MS, 0);
}

static void
startup_timeout_cb (uv_timer_t *t)
{
  flint_replica_t *r = t->data;
  char msg[200];

  if (r->state != FLINT_REPLICA_STARTING)
    return;
  if (r->tier == FLINT_TIER_COLD)
    snprintf (msg, sizeof msg, "did not become ready within startup_timeout (%.1f s)",
              (double) r->startup_limit_ms / 1000.0);
  else
    snprintf (msg, sizeof msg, "did not become ready within %.1f s of its %s", (double) r->startup_limit_ms / 1000.0,
              r->tier == FLINT_TIER_PARKED ? "thaw" : "restore");
  flint__replica_fail_start (r, FLINT_EDEADLINE, msg, "startup timeout");
}

/* ---- start / stop / death ------------------------------------------------------------------ */

/* The worker's environment: a fixed base, sanitizer settings of test builds, and the secrets
 * the manifest lists (KEY=VALUE). Returns a NULL-terminated heap array of heap strings. */
static char **
build_env (flint_replica_t *r, size_t *n_out, flint_error_t *err)
{
  /* FLINT_LIBCUDA: where this node's NVIDIA driver library is, when not in the loader's cache */
  static const char *const pass[] = { "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "FLINT_LIBCUDA" };
  char **env = calloc (16, sizeof *env);
  size_t n = 0;

  if (env == NULL)
    abort ();
  env[n++] = strdup ("PATH=/usr/local/bin:/usr/bin:/bin");
  env[n++] = strdup ("HOME=/tmp");
  env[n++] = strdup ("LANG=C.UTF-8");
  if (asprintf (&env[n++], "FLINT_ENDPOINT=%s", r->ep->name) < 0
      || asprintf (&env[n++], "FLINT_VERSION=%llu", (unsigned long long) r->version->number) < 0)
    abort ();
  /* sanitizer settings of a test build reach the workers too (unset in production) */
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (pass); i++)
    {
      const char *v = getenv (pass[i]);
      /* LeakSanitizer stops the world with ptrace, which the sandbox's seccomp filter denies:
       * in a sandbox it dies with "fatal error" and turns every exit status into 1. Workers'
       * leaks are checked outside sandboxes (tests/integration/test_worker_leaks.py). */
      const char *nolsan = r->d->cfg.isolate && strcmp (pass[i], "ASAN_OPTIONS") == 0 ? ":detect_leaks=0" : "";
      if (v && asprintf (&env[n++], "%s=%s%s", pass[i], v, nolsan) < 0)
        abort ();
    }
  env[n] = NULL;
  if (flint__secrets_env (r->d, r->version->manifest, &env, &n, err) < 0)
    {
      for (size_t i = 0; i < n; i++)
        free (env[i]);
      free (env);
      return NULL;
    }
  *n_out = n;
  return env;
}

static void
free_env (char **env, size_t n)
{
  for (size_t i = 0; i < n; i++)
    {
      explicit_bzero (env[i], strlen (env[i])); /* secrets do not linger in flintd's heap */
      free (env[i]);
    }
  free (env);
}

void
flint__replica_arm_startup_timer (flint_replica_t *r, uint64_t ms)
{
  r->startup_limit_ms = ms;
  uv_timer_start (replica_timer (r), startup_timeout_cb, ms, 0);
}

flint_replica_t *
flint__replica_alloc (flint_endpoint_t *ep, flint_version_t *v, flint_tier_t tier, flint_helper_t *owner)
{
  flint_daemon_t *d = ep->d;
  flint_replica_t *r = calloc (1, sizeof *r);
  unsigned short rnd = 0;

  if (r == NULL)
    abort ();
  r->d = d;
  r->ep = ep;
  r->version = v;
  r->state = FLINT_REPLICA_STARTING;
  r->tier = tier;
  r->owner = owner;
  r->started_ns = flint_now_ns ();
  flint_list_init (&r->requests);
  getrandom (&rnd, sizeof rnd, GRND_NONBLOCK);
  snprintf (r->id, sizeof r->id, "%.24s-%llu-r%llu-%04x", ep->name, (unsigned long long) v->number,
            (unsigned long long) ++d->next_replica_seq, rnd);
  flint__replica_arm_startup_timer (r, ep->scale.startup_timeout_ms);
  flint_map_put (&d->replicas, r->id, r);
  flint_list_insert_tail (&ep->replicas, &r->link);
  flint__replica_count_starting (r);
  return r;
}

int
flint__sandbox_spec_fill (flint_replica_t *r, Flint__Node__V1__SandboxSpec *spec, char ***env_out, size_t *nenv_out,
                          char *hostname, size_t hostname_len, flint_error_t *err)
{
  flint_version_t *v = r->version;
  flint_manifest_t *m = v->manifest;
  char **env;
  size_t nenv = 0;

  env = build_env (r, &nenv, err);
  if (env == NULL)
    return flint_error_prefix (err, "endpoint `%s`", r->ep->name);
  snprintf (hostname, hostname_len, "%.63s", r->ep->name);
  spec->bundle_dir = v->bundle_dir;
  spec->weights_dir = v->weights_dir ? v->weights_dir : (char *) "";
  spec->memory_bytes = m->resources.memory_bytes;
  spec->cpu_millis = m->resources.cpu_millis;
  spec->pids_max = m->resources.pids;
  spec->tmp_bytes = m->resources.tmp_bytes;
  spec->nofile = m->resources.nofile;
  spec->network = m->network;
  spec->gpu = m->resources.gpu;
  spec->n_env = nenv;
  spec->env = env;
  spec->cgroup_name = r->id;
  spec->hostname = hostname;
  *env_out = env;
  *nenv_out = nenv;
  return 0;
}

void
flint__sandbox_spec_clear (char **env, size_t nenv)
{
  if (env)
    free_env (env, nenv);
}

int
flint__replica_attach (flint_replica_t *r, int channel, int out_fd, int err_fd)
{
  int rc = flint_channel_new (r->d->loop, channel, r->version->manifest->max_payload + (256u << 10), worker_frame_cb,
                              worker_close_cb, r, &r->chan);
  if (rc < 0)
    {
      close (channel);
      close (out_fd);
      close (err_fd);
      return rc;
    }
  r->log_out = flint_logpipe_open (r->d->loop, out_fd, r->ep->logbook, r->version->number, r->id, "stdout");
  r->log_err = flint_logpipe_open (r->d->loop, err_fd, r->ep->logbook, r->version->number, r->id, "stderr");
  return 0;
}

flint_replica_t *
flint__replica_start (flint_endpoint_t *ep, flint_version_t *v, flint_error_t *err)
{
  flint_daemon_t *d = ep->d;
  flint_replica_t *r;
  int out[2] = { -1, -1 }, errp[2] = { -1, -1 };
  Flint__Node__V1__Spawn spawn = FLINT__NODE__V1__SPAWN__INIT;
  Flint__Node__V1__SandboxSpec spec = FLINT__NODE__V1__SANDBOX_SPEC__INIT;
  Flint__Node__V1__NodeFrame f = FLINT__NODE__V1__NODE_FRAME__INIT;
  char *argv[1];
  char **env = NULL;
  size_t nenv = 0;
  char hostname[64];
  int fds[2];
  int rc;

  if (v->manifest == NULL)
    {
      flint_error_set (err, FLINT_EPRECONDITION, "version %llu has no valid manifest", (unsigned long long) v->number);
      return NULL;
    }
  if (!d->spawner.up || !d->spawner.ready)
    {
      flint_error_set (err, FLINT_EUNAVAILABLE, "the spawner is not running (restarting); try again shortly");
      return NULL;
    }
  if (pipe2 (out, O_CLOEXEC) < 0 || pipe2 (errp, O_CLOEXEC) < 0)
    {
      flint_error_set_errno (err, FLINT_EINTERNAL, errno, "replica log pipes");
      goto fail;
    }
  r = flint__replica_alloc (ep, v, FLINT_TIER_COLD, &d->spawner);
  argv[0] = d->worker_path;
  if (flint__sandbox_spec_fill (r, &spec, &env, &nenv, hostname, sizeof hostname, err) < 0)
    {
      flint__replica_discard (r, err->msg);
      goto fail;
    }
  spawn.replica_id = r->id;
  spawn.sandbox = &spec;
  spawn.n_argv = 1;
  spawn.argv = argv;
  f.msg_case = FLINT__NODE__V1__NODE_FRAME__MSG_SPAWN;
  f.spawn = &spawn;
  fds[0] = out[1];
  fds[1] = errp[1];
  rc = flint__helper_send (&d->spawner, &f.base, fds, 2);
  flint__sandbox_spec_clear (env, nenv);
  close (out[1]), close (errp[1]);
  out[1] = errp[1] = -1;
  if (rc < 0)
    {
      flint_error_set_errno (err, FLINT_EUNAVAILABLE, rc, "send the spawn request to the spawner");
      flint__replica_discard (r, err->msg);
      goto fail;
    }
  /* the channel arrives with the Spawned reply (the sandbox makes it in its own netns) */
  r->log_out = flint_logpipe_open (d->loop, out[0], ep->logbook, v->number, r->id, "stdout");
  r->log_err = flint_logpipe_open (d->loop, errp[0], ep->logbook, v->number, r->id, "stderr");
  ep->cold_starts++;
  return r;

fail:
  for (int i = 0; i < 2; i++)
    {
      if (out[i] >= 0)
        close (out[i]);
      if (errp[i] >= 0)
        close (errp[i]);
    }
  return NULL;
}

static void
send_kill (flint_replica_t *r)
{
  Flint__Node__V1__Kill k = FLINT__NODE__V1__KILL__INIT;
  Flint__Node__V1__NodeFrame f = FLINT__NODE__V1__NODE_FRAME__INIT;

  k.replica_id = r->id;
  f.msg_case = FLINT__NODE__V1__NODE_FRAME__MSG_KILL;
  f.kill = &k;
  if (r->owner == NULL || flint__helper_send (r->owner, &f.base, NULL, 0) < 0)
    {
      /* the owner is gone, and with it the worker */
      r->exited = true;
      snprintf (r->exit_reason, sizeof r->exit_reason, "its supervisor (%s) went away",
                r->owner ? r->owner->name : "none");
      finalize (r);
    }
}

void
flint__replica_stop (flint_replica_t *r, const char *why)
{
  if (r->state == FLINT_REPLICA_STOPPING || r->state == FLINT_REPLICA_DEAD)
    return;
  flint__replica_uncount_starting (r);
  flint_debug ("stopping replica %s: %s", r->id, why);
  r->state = FLINT_REPLICA_STOPPING;
  if (r->exit_reason[0] == '\0')
    snprintf (r->exit_reason, sizeof r->exit_reason, "stopped by flintd (%s)", why);
  send_kill (r);
}

/* The replica is gone: fails or retries its requests and frees it. `rescale` lets the
 * activator start a replacement for queued requests (not when the caller is itself starting
 * one). */
static void
finalize_ex (flint_replica_t *r, bool rescale)
{
  flint_daemon_t *d = r->d;
  flint_endpoint_t *ep = r->ep;
  bool was_starting = r->state == FLINT_REPLICA_STARTING;
  char reason[300];

  if (r->state == FLINT_REPLICA_DEAD)
    return;
  snprintf (reason, sizeof reason, "%s", r->exit_reason[0] ? r->exit_reason : "the worker died");
  if (r->checkpointing)
    flint__snapshot_source_lost (r, reason);
  if (was_starting)
    startup_failed (r, FLINT_EUNAVAILABLE, reason);
  r->state = FLINT_REPLICA_DEAD;
  if (r->timer)
    uv_timer_stop (r->timer);
  flint__dispatch_replica_lost (r, reason, FLINT_EUNAVAILABLE);
  if (r->chan)
    {
      flint_channel_close (r->chan);
      r->chan = NULL;
    }
  flint_logpipe_close (r->log_out);
  flint_logpipe_close (r->log_err);
  r->log_out = r->log_err = NULL;
  if (!d->shutting_down && strncmp (reason, "stopped by flintd", 17) != 0)
    {
      char line[400];
      if (r->ready_ns)
        ep->metrics.replica_failures++; /* startup failures were counted by startup_failed */
      snprintf (line, sizeof line, "replica %s: %s", r->id, reason);
      flint_logbook_append (ep->logbook, r->version->number, r->id, "flint", line, strlen (line));
      flint_warn ("endpoint `%s`: %s", ep->name, line);
    }
  flint_map_del (&d->replicas, r->id);
  flint_list_remove (&r->link);
  flint__engine_stats_forget (r);
  {
    flint_version_t *v = r->version;
    replica_free (r);
    if (!d->shutting_down)
      flint__version_maybe_free (v);
  }
  if (!d->shutting_down)
    {
      if (rescale)
        flint__dispatch_scale_for_queue (ep);
      flint__endpoint_maybe_reap (ep);
    }
}

void
flint__replica_discard (flint_replica_t *r, const char *why)
{
  flint__replica_uncount_starting (r);
  r->state = FLINT_REPLICA_STOPPING;
  r->exited = true;
  snprintf (r->exit_reason, sizeof r->exit_reason, "stopped by flintd (%s)", why);
  finalize_ex (r, false);
}

/* ---- frames from the helpers (Spawned / Exited) ------------------------------------------- */

void
flint__replica_on_helper_frame (flint_helper_t *h, const uint8_t *payload, size_t len)
{
  Flint__Node__V1__NodeFrame *f = flint__node__v1__node_frame__unpack (NULL, len, payload);
  flint_replica_t *r;

  if (f == NULL)
    {
      flint_err ("malformed frame from %s (%zu bytes)", h->name, len);
      return;
    }
  switch (f->msg_case)
    {
    case FLINT__NODE__V1__NODE_FRAME__MSG_SPAWNED:
      r = flint_map_get (&h->d->replicas, f->spawned->replica_id);
      if (r == NULL)
        {
          /* gone meanwhile: its channel must not stay queued for the next Spawned */
          int fd = f->spawned->ok ? flint_channel_take_fd (h->chan) : -1;
          if (fd >= 0)
            close (fd);
          break;
        }
      if (!f->spawned->ok)
        {
          r->exited = true;
          snprintf (r->exit_reason, sizeof r->exit_reason, "%s", f->spawned->error);
          startup_failed (r, FLINT_EUNAVAILABLE, r->exit_reason);
          r->state = FLINT_REPLICA_STOPPING;
          finalize (r);
          break;
        }
      r->pid = f->spawned->pid;
      {
        int fd = flint_channel_take_fd (h->chan);
        int rc = fd < 0 ? -EPROTO
                        : flint_channel_new (h->d->loop, fd, r->version->manifest->max_payload + (256u << 10),
                                             worker_frame_cb, worker_close_cb, r, &r->chan);
        if (rc < 0)
          {
            if (fd >= 0)
              close (fd);
            snprintf (r->exit_reason, sizeof r->exit_reason, "no channel to the worker: %s", strerror (-rc));
            flint__replica_stop (r, "no channel");
            break;
          }
      }
      for (size_t i = 0; i < f->spawned->n_phases_ms; i++)
        if (strcmp (f->spawned->phases_ms[i]->key, "total") == 0)
          r->phases_ms[FLINT_RPHASE_SANDBOX] = f->spawned->phases_ms[i]->value;
      for (size_t i = 0; i < f->spawned->n_phases_ms && r->n_sandbox_phases < 8; i++, r->n_sandbox_phases++)
        {
          snprintf (r->sandbox_phase_names[r->n_sandbox_phases], sizeof r->sandbox_phase_names[0], "%s",
                    f->spawned->phases_ms[i]->key);
          r->sandbox_phases_ms[r->n_sandbox_phases] = f->spawned->phases_ms[i]->value;
        }
      break;
    case FLINT__NODE__V1__NODE_FRAME__MSG_EXITED:
      r = flint_map_get (&h->d->replicas, f->exited->replica_id);
      if (r == NULL)
        break;
      r->exited = true;
      r->oom_killed = f->exited->oom_killed;
      /* a cause found by the kernel beats "stopped by flintd" */
      if (r->exit_reason[0] == '\0' || f->exited->oom_killed || f->exited->pids_limit_hit)
        snprintf (r->exit_reason, sizeof r->exit_reason, "worker %s", f->exited->reason);
      if (r->channel_closed || r->state == FLINT_REPLICA_STOPPING)
        finalize (r);
      else if (r->chan)
        {
          /* exited but the channel is still open (a grandchild holds it?): close our side */
          flint_channel_close (r->chan);
          r->chan = NULL;
          finalize (r);
        }
      break;
    default:
      break;
    }
  flint__node__v1__node_frame__free_unpacked (f, NULL);
}

void
flint__replicas_helper_lost (flint_helper_t *h)
{
  const char *key;
  void *val;
  flint_replica_t *victims[1024];
  size_t n = 0;

  for (size_t it = 0; flint_map_next (&h->d->replicas, &it, &key, &val) && n < 1024;)
    {
      flint_replica_t *r = val;
      if (r->owner == h)
        victims[n++] = r;
    }
  for (size_t i = 0; i < n; i++)
    {
      victims[i]->exited = true;
      snprintf (victims[i]->exit_reason, sizeof victims[i]->exit_reason, "its supervisor (%s) died", h->name);
      finalize (victims[i]);
    }
}

