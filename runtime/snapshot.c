/* Snapshots of warmed workers, flintd's side: taking one when a version becomes ready, keeping
 * it (registry record with per-file digests, verification after a restart, removal with its
 * version), and the two fast tiers of scale-up built on it, with their fallback.
 *
 * Taking (deploy, after the first replica is ready):
 *   worker ◀─ Checkpoint   (its before_checkpoint hook runs)      ─▶ CheckpointReady
 *   snapshotter ◀─ Dump    (CRIU dump, leave running)             ─▶ Dumped (files, digests)
 *   registry ◀─ the record
 *   worker ◀─ Restored     (its after_restore hook: the hooks come in pairs, the original
 *                           resumes like any restored replica)    ─▶ RestoredAck
 *   deploy replies (the snapshot and its size, or why there is none); the parked pool fills.
 *
 * Tiers of a start (flint__replica_scale_up), fastest first:
 *   parked  a restored replica that passed its canary and was frozen (cgroup freezer): thaw,
 *           Ping, ready.
 *   image   Restore from the tmpfs image: the snapshotter hands back a fresh channel and log
 *           pipes, swapped in for the dumped ones by CRIU (inherit_fd); then Restored (fresh
 *           entropy, wall clock, the new replica id) → RestoredAck after the after_restore
 *           hook → canary (Ping, and the manifest's `canary:` payload as an Invoke) → ready.
 *   cold    exec + init (replica.c).
 * A failure anywhere before ready (restore refused, hook failed, canary failed or timed out,
 * worker died, snapshotter died) lands in flint__snapshot_start_failed: counted, logged with
 * its reason, and the request that was waiting gets a replica of the next tier down. An image
 * that fails its verification is discarded; three failed restores in a row disable the image
 * tier of that version.
 *
 * Fault injection (tests): FLINT_FAULT=snapshot-reconnect, snapshot-canary, snapshot-thaw make
 * that step fail here; snapshot-dump and snapshot-restore are the snapshotter's. */
#include "api.h"
#include "images.h"
#include "flint/cleanup.h"
#include "flint/log.h"
#include "flint/util.h"
#include "flint/node/v1/node.pb-c.h"
#include "flint/worker/v1/worker.pb-c.h"

#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#define CHECKPOINT_TIMEOUT_MS 120000  /* hooks + CRIU dump of the deploy's first replica */
#define RESTORE_TIMEOUT_MS 10000      /* Restore sent → canary passed (capped by startup_timeout) */
#define RESTORE_MS_PER_GIB 4000       /* more per GiB of image */
#define MAX_RESTORE_FAILURES 3        /* consecutive, per version: then the image tier is skipped */

typedef Flint__Node__V1__NodeFrame node_frame_t;
typedef Flint__Worker__V1__Frame wframe_t;

static char *
xstrdup (const char *s)
{
  char *r = strdup (s ? s : "");
  if (r == NULL)
    abort ();
  return r;
}

bool
flint__fault (const flint_daemon_t *d, const char *point)
{
  return flint_fault_listed (d->fault, point);
}

static bool
available (const flint_daemon_t *d)
{
  return d->snapshots_off[0] == '\0' && d->snapshotter.up && d->snapshotter.ready;
}

static void
image_dir_of (const flint_daemon_t *d, const char *endpoint, uint64_t version, char *out, size_t len)
{
  snprintf (out, len, "%s/images/%s-%llu", d->cfg.run_dir, endpoint, (unsigned long long) version);
}

/* Looks up `key` in "key=value\n" lines; "" when absent. */
static void
meta_get (const char *meta, const char *key, char *out, size_t len)
{
  size_t klen = strlen (key);

  out[0] = '\0';
  for (const char *p = meta; p && *p;)
    {
      const char *nl = strchr (p, '\n');
      size_t n = nl ? (size_t) (nl - p) : strlen (p);
      if (n > klen && strncmp (p, key, klen) == 0 && p[klen] == '=')
        {
          size_t vl = n - klen - 1;
          if (vl >= len)
            vl = len - 1;
          memcpy (out, p + klen + 1, vl);
          out[vl] = '\0';
          return;
        }
      p = nl ? nl + 1 : NULL;
    }
}

static void
snap_clear (flint_snapshot_t *s)
{
  free (s->image_dir);
  free (s->meta);
  for (size_t i = 0; i < s->n_files; i++)
    {
      free (s->files[i].path);
      free (s->files[i].sha256);
    }
  free (s->files);
  s->image_dir = s->meta = NULL;
  s->files = NULL;
  s->n_files = 0;
  s->size_bytes = 0;
  s->dump_ms = 0;
  s->created_ms = 0;
}

static uint32_t
count_parked (const flint_endpoint_t *ep, const flint_version_t *v, bool with_parking)
{
  uint32_t n = 0;
  for (const flint_list_t *p = ep->replicas.next; p != &ep->replicas; p = p->next)
    {
      const flint_replica_t *r = flint_list_entry (p, flint_replica_t, link);
      if (r->version != v)
        continue;
      if (r->state == FLINT_REPLICA_PARKED || (with_parking && r->parking && r->state == FLINT_REPLICA_STARTING))
        n++;
    }
  return n;
}

/* ---- the snapshotter helper ---------------------------------------------------------------- */

static void
status_cb (flint_helper_t *h, const Flint__Node__V1__HelperStatus *st)
{
  for (size_t i = 0; i < st->n_info; i++)
    if (strcmp (st->info[i]->key, "criu") == 0)
      snprintf (h->d->criu_version, sizeof h->d->criu_version, "%s", st->info[i]->value);
}

static void
snapshotter_lost (flint_helper_t *h)
{
  flint_daemon_t *d = h->d;
  const char *key;
  void *val;

  /* a checkpoint in progress will not get its Dumped: the original resumes, without snapshot */
  for (size_t it = 0; flint_map_next (&d->replicas, &it, &key, &val);)
    {
      flint_replica_t *r = val;
      if (r->checkpointing && r->version->snap.state == FLINT_SNAPSHOT_TAKING && r->chan)
        {
          flint_snapshot_t *s = &r->version->snap;
          s->state = FLINT_SNAPSHOT_FAILED;
          snprintf (s->error, sizeof s->error, "the snapshotter died during the checkpoint");
          flint__replica_send_restored (r);
        }
    }
  /* replicas it restored die with it (their cgroups are killed by its successor) */
  flint__replicas_helper_lost (h);
}

/* Records in d->snapshots_off why there will be no snapshots, or starts the snapshotter. */
static void
start_helper (flint_daemon_t *d)
{
  static char argbuf[5][PATH_MAX];
  flint_error_t err = FLINT_ERROR_INIT;
  const char *criu = getenv ("FLINT_CRIU");
  int i = 0;

  d->snapshotter.d = d;
  d->snapshotter.name = "snapshotter";
  if (!d->cfg.snapshots)
    {
      snprintf (d->snapshots_off, sizeof d->snapshots_off, "snapshots are disabled on this node (flintd --no-snapshots)");
      return;
    }
  if (!d->cfg.isolate)
    {
      snprintf (d->snapshots_off, sizeof d->snapshots_off, "snapshots need sandboxes (flintd runs with --no-sandbox)");
      return;
    }
  if (flint__find_helper (d->cfg.libexec_dir, "flint-snapshotter", argbuf[0], PATH_MAX, &err) < 0)
    {
      snprintf (d->snapshots_off, sizeof d->snapshots_off,
                "flint-snapshotter is not installed (it is built only where CRIU >= 4.1 with libcriu is found: run "
                "scripts/build-criu, then rebuild flint)");
      return;
    }
  snprintf (argbuf[1], PATH_MAX, "%s/images", d->cfg.run_dir);
  if (flint_mkdir_p (argbuf[1], 0700) < 0)
    {
      snprintf (d->snapshots_off, sizeof d->snapshots_off, "cannot create the image directory `%s`: %s", argbuf[1],
                strerror (errno));
      return;
    }
  d->snapshotter.frame_cb = flint__snapshot_on_helper_frame;
  d->snapshotter.lost_cb = snapshotter_lost;
  d->snapshotter.status_cb = status_cb;
  d->snapshotter.argv[i++] = argbuf[0];
  d->snapshotter.argv[i++] = (char *) "--run-dir";
  d->snapshotter.argv[i++] = (char *) d->cfg.run_dir;
  d->snapshotter.argv[i++] = (char *) "--cgroup-parent";
  {
    /* named after the state directory like the spawner's, so several flintd never collide, and
     * distinct from it: each helper kills what it finds under its own parent at start */
    char sha[FLINT_SHA256_HEX_LEN];
    flint_sha256_buf (d->cfg.state_dir, strlen (d->cfg.state_dir), sha);
    snprintf (argbuf[2], PATH_MAX, "flint-%.12s-snap", sha);
  }
  d->snapshotter.argv[i++] = argbuf[2];
  if (criu && *criu)
    {
      d->snapshotter.argv[i++] = (char *) "--criu";
      snprintf (argbuf[3], PATH_MAX, "%s", criu);
      d->snapshotter.argv[i++] = argbuf[3];
    }
  d->snapshotter.argv[i] = NULL;
  if (flint__helper_start_wait (&d->snapshotter, 20000, &err) < 0)
    {
      snprintf (d->snapshots_off, sizeof d->snapshots_off, "%s", err.msg);
      flint__helper_stop (&d->snapshotter);
    }
}

/* ---- keeping images across restarts -------------------------------------------------------- */

/* Why the recorded snapshot `rec` of `v` cannot be used, or NULL. */
static const char *
stale_reason (flint_daemon_t *d, flint_version_t *v, const flint_snapshot_rec_t *rec, char *buf, size_t len)
{
  char want[PATH_MAX], have[160];
  struct utsname un;
  flint_image_file_t *files;
  flint_error_t err = FLINT_ERROR_INIT;
  int r;

  image_dir_of (d, v->ep->name, v->number, want, sizeof want);
  if (strcmp (rec->dir, want) != 0)
    {
      snprintf (buf, len, "it was taken under another run directory (`%s`)", rec->dir);
      return buf;
    }
  if (access (rec->dir, F_OK) < 0)
    {
      snprintf (buf, len, "its image directory `%s` is gone (the node rebooted?)", rec->dir);
      return buf;
    }
  meta_get (rec->meta, "criu", have, sizeof have);
  if (strcmp (have, d->criu_version) != 0)
    {
      snprintf (buf, len, "it was taken by CRIU %s, this node runs CRIU %s", have[0] ? have : "(unknown)",
                d->criu_version);
      return buf;
    }
  uname (&un);
  meta_get (rec->meta, "kernel", have, sizeof have);
  if (strcmp (have, un.release) != 0)
    {
      snprintf (buf, len, "it was taken on kernel %s, this node runs %s", have[0] ? have : "(unknown)", un.release);
      return buf;
    }
  meta_get (rec->meta, "worker", have, sizeof have);
  if (strcmp (have, d->worker_sha) != 0)
    {
      snprintf (buf, len, "flint-worker changed since it was taken (sha256 %.12s, now %.12s)", have, d->worker_sha);
      return buf;
    }
  files = calloc (rec->n_files + 1, sizeof *files);
  if (files == NULL)
    abort ();
  for (size_t i = 0; i < rec->n_files; i++)
    {
      snprintf (files[i].path, sizeof files[i].path, "%s", rec->files[i].path);
      files[i].size = rec->files[i].size;
      snprintf (files[i].sha256, sizeof files[i].sha256, "%s", rec->files[i].sha256);
    }
  r = flint_image_verify (rec->dir, files, rec->n_files, &err);
  free (files);
  if (r < 0)
    {
      snprintf (buf, len, "%s", err.msg);
      return buf;
    }
  return NULL;
}

static void
adopt_record (flint_version_t *v, const flint_snapshot_rec_t *rec)
{
  flint_snapshot_t *s = &v->snap;

  snap_clear (s);
  s->state = FLINT_SNAPSHOT_READY;
  s->image_dir = xstrdup (rec->dir);
  s->size_bytes = rec->size_bytes;
  s->dump_ms = rec->dump_ms;
  s->created_ms = rec->created_ms;
  s->meta = xstrdup (rec->meta);
  s->files = calloc (rec->n_files + 1, sizeof *s->files);
  if (s->files == NULL)
    abort ();
  for (size_t i = 0; i < rec->n_files; i++)
    {
      s->files[i].path = xstrdup (rec->files[i].path);
      s->files[i].size = rec->files[i].size;
      s->files[i].sha256 = xstrdup (rec->files[i].sha256);
    }
  s->n_files = rec->n_files;
  s->error[0] = '\0';
}

static void
load_version (flint_daemon_t *d, flint_version_t *v)
{
  flint_snapshot_rec_t rec = { 0 };
  flint_error_t err = FLINT_ERROR_INIT;
  char why[1200];
  const char *stale;

  if (flint_registry_get_snapshot (d->reg, v->ep->name, v->number, &rec, &err) < 0)
    return; /* none was taken */
  if (d->snapshots_off[0])
    {
      snprintf (why, sizeof why, "snapshots are unavailable: %s", d->snapshots_off);
      stale = why;
    }
  else
    stale = stale_reason (d, v, &rec, why, sizeof why);
  if (stale)
    {
      flint_warn ("discarded the snapshot of `%s` version %llu: %s", v->ep->name, (unsigned long long) v->number,
                  stale);
      if (strncmp (rec.dir, d->cfg.run_dir, strlen (d->cfg.run_dir)) == 0)
        flint_rm_rf (rec.dir);
      if (flint_registry_delete_snapshot (d->reg, v->ep->name, v->number, &err) < 0)
        flint_err ("%s", err.msg);
      v->snap.state = FLINT_SNAPSHOT_FAILED;
      snprintf (v->snap.error, sizeof v->snap.error, "the snapshot taken at deploy was discarded: %s", stale);
    }
  else
    {
      char sz[32];
      adopt_record (v, &rec);
      flint_format_size (rec.size_bytes, sz, sizeof sz);
      flint_info ("kept the snapshot of `%s` version %llu (%s, %zu files verified)", v->ep->name,
                  (unsigned long long) v->number, sz, rec.n_files);
    }
  flint_snapshot_rec_free (&rec);
}

typedef struct stale_ctx_s {
  flint_daemon_t *d;
  flint_endpoint_t *ep;
} stale_ctx_t;

static int
drop_old_record_cb (void *ud, const flint_version_rec_t *rec)
{
  stale_ctx_t *c = ud;
  flint_error_t err = FLINT_ERROR_INIT;

  /* only the serving version is restored after a restart: older records are history */
  if (c->ep->current == NULL || rec->version != c->ep->current->number)
    flint_registry_delete_snapshot (c->d->reg, rec->endpoint, rec->version, &err);
  return 0;
}

/* Removes image directories no kept snapshot owns (deleted while flintd was down, a dump cut
 * short by a crash). */
static void
sweep_images (flint_daemon_t *d)
{
  char dir[PATH_MAX], path[PATH_MAX * 2];
  DIR *dh;
  struct dirent *de;

  snprintf (dir, sizeof dir, "%s/images", d->cfg.run_dir);
  dh = opendir (dir);
  if (dh == NULL)
    return;
  while ((de = readdir (dh)) != NULL)
    {
      const char *key;
      void *val;
      bool owned = false;

      if (de->d_name[0] == '.')
        continue;
      snprintf (path, sizeof path, "%s/%s", dir, de->d_name);
      for (size_t it = 0; !owned && flint_map_next (&d->endpoints, &it, &key, &val);)
        {
          flint_endpoint_t *ep = val;
          owned = ep->current && ep->current->snap.state == FLINT_SNAPSHOT_READY
                  && strcmp (ep->current->snap.image_dir, path) == 0;
        }
      if (!owned)
        {
          flint_info ("removed the orphaned snapshot image `%s`", path);
          flint_rm_rf (path);
        }
    }
  closedir (dh);
}

void
flint__snapshots_start (flint_daemon_t *d)
{
  const char *key;
  void *val;
  const char *fault = getenv ("FLINT_FAULT");

  if (fault)
    snprintf (d->fault, sizeof d->fault, "%s", fault);
  if (flint_sha256_file (d->worker_path, d->worker_sha, NULL) < 0)
    snprintf (d->worker_sha, sizeof d->worker_sha, "unknown");
  start_helper (d);
  if (d->snapshots_off[0])
    flint_warn ("snapshots are unavailable: %s; every endpoint starts cold", d->snapshots_off);
  for (size_t it = 0; flint_map_next (&d->endpoints, &it, &key, &val);)
    {
      flint_endpoint_t *ep = val;
      stale_ctx_t c = { d, ep };
      flint_error_t err = FLINT_ERROR_INIT;
      flint_registry_list_versions (d->reg, ep->name, drop_old_record_cb, &c, &err);
      if (ep->current)
        load_version (d, ep->current);
    }
  sweep_images (d);
}

void
flint__snapshots_stop (flint_daemon_t *d)
{
  if (d->snapshotter.d == NULL)
    return; /* flint__snapshots_start did not run (a start-up that failed before it) */
  /* closing its socket makes it kill its replicas, release its slots and exit */
  flint__helper_stop (&d->snapshotter);
  flint__replicas_helper_lost (&d->snapshotter);
}

/* ---- removal ----------------------------------------------------------------------------- */

void
flint__snapshot_release (flint_snapshot_t *s)
{
  snap_clear (s);
}

void
flint__snapshot_discard (flint_daemon_t *d, flint_version_t *v, const char *why)
{
  flint_snapshot_t *s = &v->snap;
  flint_error_t err = FLINT_ERROR_INIT;
  char dir[PATH_MAX];

  image_dir_of (d, v->ep->name, v->number, dir, sizeof dir);
  if (s->state == FLINT_SNAPSHOT_READY)
    flint_info ("removed the snapshot of `%s` version %llu (%s)", v->ep->name, (unsigned long long) v->number, why);
  flint_rm_rf (dir);
  if (flint_registry_delete_snapshot (d->reg, v->ep->name, v->number, &err) < 0)
    flint_err ("%s", err.msg);
  snap_clear (s);
  if (s->state == FLINT_SNAPSHOT_READY || s->state == FLINT_SNAPSHOT_TAKING)
    s->state = FLINT_SNAPSHOT_NONE;
}

void
flint__snapshot_remove_endpoint_images (flint_daemon_t *d, const char *name)
{
  char dir[PATH_MAX], path[PATH_MAX * 2];
  size_t n = strlen (name);
  DIR *dh;
  struct dirent *de;

  snprintf (dir, sizeof dir, "%s/images", d->cfg.run_dir);
  dh = opendir (dir);
  if (dh == NULL)
    return;
  while ((de = readdir (dh)) != NULL)
    {
      /* <name>-<version>: the version is all digits, so another endpoint never matches */
      const char *rest = de->d_name + n;
      if (strncmp (de->d_name, name, n) != 0 || rest[0] != '-' || rest[1] == '\0'
          || strspn (rest + 1, "0123456789") != strlen (rest + 1))
        continue;
      snprintf (path, sizeof path, "%s/%s", dir, de->d_name);
      flint_rm_rf (path);
    }
  closedir (dh);
}

/* ---- taking a snapshot --------------------------------------------------------------------- */

static void
take_timer_close_cb (uv_handle_t *h)
{
  free (h);
}

static uv_timer_t *take_timers[64];

/* Ends the snapshot step of the deploy: the original has resumed (or is lost: r NULL). */
static void
take_done (flint_version_t *v, flint_replica_t *r, const char *fail_deploy)
{
  flint_snapshot_t *s = &v->snap;
  flint_deploy_t *dep = s->deploy;
  flint_endpoint_t *ep = v->ep;

  s->deploy = NULL;
  s->source = NULL;
  if (r)
    r->checkpointing = false;
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (take_timers); i++)
    if (take_timers[i] && take_timers[i]->data == v)
      {
        uv_timer_stop (take_timers[i]);
        uv_close ((uv_handle_t *) take_timers[i], take_timer_close_cb);
        take_timers[i] = NULL;
      }
  if (s->state == FLINT_SNAPSHOT_TAKING)
    s->state = FLINT_SNAPSHOT_FAILED;
  if (dep == NULL)
    return;
  if (fail_deploy)
    flint__deploy_snapshot_done (dep, NULL, fail_deploy);
  else
    {
      flint__deploy_snapshot_done (dep, r, s->state == FLINT_SNAPSHOT_READY ? "" : s->error);
      flint__snapshot_keep_parked (ep);
    }
}

static void
take_timeout_cb (uv_timer_t *t)
{
  flint_version_t *v = t->data;
  flint_replica_t *r = v->snap.source;
  char msg[300];

  snprintf (msg, sizeof msg, "the checkpoint did not complete within %d s (a before_checkpoint or after_restore hook "
                             "that does not return?)",
            CHECKPOINT_TIMEOUT_MS / 1000);
  flint_warn ("endpoint `%s` version %llu: %s", v->ep->name, (unsigned long long) v->number, msg);
  flint__snapshot_discard (v->ep->d, v, "checkpoint timed out");
  take_done (v, r, msg);
  if (r)
    flint__replica_stop (r, "its checkpoint timed out");
}

/* The snapshot step failed but the original is fine: note why, resume it. */
static void
take_failed (flint_replica_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
take_failed (flint_replica_t *r, const char *fmt, ...)
{
  flint_snapshot_t *s = &r->version->snap;
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (s->error, sizeof s->error, fmt, ap);
  va_end (ap);
  s->state = FLINT_SNAPSHOT_FAILED;
  flint_warn ("endpoint `%s` version %llu: no snapshot: %s; the endpoint starts cold", r->ep->name,
              (unsigned long long) r->version->number, s->error);
  if (flint__replica_send_restored (r) < 0)
    take_done (r->version, r, NULL);
}

void
flint__snapshot_take (flint_deploy_t *dep, flint_replica_t *r)
{
  flint_daemon_t *d = r->d;
  flint_version_t *v = r->version;
  const flint_manifest_t *m = v->manifest;
  flint_snapshot_t *s = &v->snap;
  Flint__Worker__V1__Checkpoint ck = FLINT__WORKER__V1__CHECKPOINT__INIT;
  wframe_t f = FLINT__WORKER__V1__FRAME__INIT;
  const char *why = NULL;
  uv_timer_t *t;
  size_t slot;

  if (d->snapshots_off[0])
    why = d->snapshots_off;
  else if (!m->snapshot)
    why = "the manifest sets `snapshot: false`";
  else if (m->network)
    why = "endpoints with `network: true` are not snapshotted (their slirp4netns link cannot be checkpointed)";
  else if (!available (d))
    why = "the snapshotter is restarting";
  if (why)
    {
      snprintf (s->error, sizeof s->error, "%s", why);
      flint__deploy_snapshot_done (dep, r, why);
      return;
    }
  for (slot = 0; slot < FLINT_ARRAY_SIZE (take_timers) && take_timers[slot]; slot++)
    ;
  if (slot == FLINT_ARRAY_SIZE (take_timers))
    {
      flint__deploy_snapshot_done (dep, r, "too many checkpoints in progress on this node");
      return;
    }
  s->state = FLINT_SNAPSHOT_TAKING;
  s->error[0] = '\0';
  s->deploy = dep;
  s->source = r;
  r->checkpointing = true;
  t = calloc (1, sizeof *t);
  if (t == NULL)
    abort ();
  uv_timer_init (d->loop, t);
  t->data = v;
  uv_timer_start (t, take_timeout_cb, CHECKPOINT_TIMEOUT_MS, 0);
  take_timers[slot] = t;
  f.msg_case = FLINT__WORKER__V1__FRAME__MSG_CHECKPOINT;
  f.checkpoint = &ck;
  if (flint__replica_send (r, &f) < 0)
    {
      /* its channel is broken: its death (and source_lost) follows */
      snprintf (s->error, sizeof s->error, "the worker's channel broke before the checkpoint");
    }
}

void
flint__snapshot_on_checkpoint_ready (flint_replica_t *r, bool ok, const char *error, double hook_ms)
{
  flint_daemon_t *d = r->d;
  flint_version_t *v = r->version;
  Flint__Node__V1__Dump dump = FLINT__NODE__V1__DUMP__INIT;
  Flint__Node__V1__SandboxSpec spec = FLINT__NODE__V1__SANDBOX_SPEC__INIT;
  node_frame_t f = FLINT__NODE__V1__NODE_FRAME__INIT;
  flint_error_t err = FLINT_ERROR_INIT;
  char dir[PATH_MAX], hostname[64];
  char *argv[1] = { d->worker_path };
  char **env = NULL;
  size_t nenv = 0;
  int rc;

  if (!r->checkpointing || v->snap.state != FLINT_SNAPSHOT_TAKING)
    return;
  flint_debug ("replica %s: before_checkpoint hook %s in %.1f ms", r->id, ok ? "ran" : "failed", hook_ms);
  if (!ok)
    {
      take_failed (r, "the function's before_checkpoint hook failed: %s", error);
      return;
    }
  if (flint__sandbox_spec_fill (r, &spec, &env, &nenv, hostname, sizeof hostname, &err) < 0)
    {
      take_failed (r, "%s", err.msg);
      return;
    }
  image_dir_of (d, r->ep->name, v->number, dir, sizeof dir);
  dump.replica_id = r->id;
  dump.pid = r->pid;
  dump.sandbox = &spec;
  dump.n_argv = 1;
  dump.argv = argv;
  dump.image_dir = dir;
  /* the original keeps running: it serves as this version's first replica */
  dump.leave_running = true;
  f.msg_case = FLINT__NODE__V1__NODE_FRAME__MSG_DUMP;
  f.dump = &dump;
  rc = flint__helper_send (&d->snapshotter, &f.base, NULL, 0);
  flint__sandbox_spec_clear (env, nenv);
  if (rc < 0)
    take_failed (r, "the snapshotter is not running");
}

static void
on_dumped (flint_daemon_t *d, const Flint__Node__V1__Dumped *dm)
{
  flint_replica_t *r = flint_map_get (&d->replicas, dm->replica_id);
  flint_snapshot_rec_t rec = { 0 };
  flint_error_t err = FLINT_ERROR_INIT;
  flint_snapshot_t *s;
  flint_version_t *v;
  char dir[PATH_MAX], sz[32];
  flint_buf_t meta = FLINT_BUF_INIT;

  if (r == NULL || !r->checkpointing || r->version->snap.state != FLINT_SNAPSHOT_TAKING)
    return;
  v = r->version;
  s = &v->snap;
  if (!dm->ok)
    {
      take_failed (r, "checkpoint of endpoint `%s` failed: %s", r->ep->name, dm->error);
      return;
    }
  image_dir_of (d, r->ep->name, v->number, dir, sizeof dir);
  for (size_t i = 0; i < dm->n_meta; i++)
    flint_buf_printf (&meta, "%s=%s\n", dm->meta[i]->key, dm->meta[i]->value);
  rec.endpoint = r->ep->name;
  rec.version = v->number;
  rec.dir = dir;
  rec.size_bytes = dm->size_bytes;
  rec.dump_ms = dm->dump_ms;
  rec.created_ms = flint_wall_ms ();
  rec.meta = meta.data ? meta.data : (char *) "";
  rec.n_files = dm->n_files;
  rec.files = calloc (dm->n_files + 1, sizeof *rec.files);
  if (rec.files == NULL)
    abort ();
  for (size_t i = 0; i < dm->n_files; i++)
    {
      rec.files[i].path = dm->files[i]->path;
      rec.files[i].size = dm->files[i]->size;
      rec.files[i].sha256 = dm->files[i]->sha256;
    }
  if (flint_registry_put_snapshot (d->reg, &rec, &err) < 0)
    {
      free (rec.files);
      flint_buf_free (&meta);
      flint_rm_rf (dir);
      take_failed (r, "record the snapshot: %s", err.msg);
      return;
    }
  adopt_record (v, &rec);
  free (rec.files);
  flint_buf_free (&meta);
  s->created_ms = rec.created_ms;
  s->restore_failures = 0;
  flint_format_size (dm->size_bytes, sz, sizeof sz);
  flint_info ("endpoint `%s` version %llu: snapshot taken (%s in %zu files, dump %.1f ms)", r->ep->name,
              (unsigned long long) v->number, sz, dm->n_files, dm->dump_ms);
  /* the original resumes like a restored replica: its after_restore hook undoes what
   * before_checkpoint did */
  if (flint__replica_send_restored (r) < 0)
    take_done (v, r, NULL);
}

void
flint__snapshot_source_lost (flint_replica_t *r, const char *why)
{
  flint_version_t *v = r->version;
  char msg[600];

  snprintf (msg, sizeof msg, "the worker died during its checkpoint: %s", why);
  flint_warn ("endpoint `%s` version %llu: %s", r->ep->name, (unsigned long long) v->number, msg);
  flint__snapshot_discard (r->d, v, "its checkpoint failed");
  v->snap.state = FLINT_SNAPSHOT_FAILED;
  snprintf (v->snap.error, sizeof v->snap.error, "%s", msg);
  take_done (v, NULL, msg);
  r->checkpointing = false;
}

/* ---- the fast tiers -------------------------------------------------------------------------- */

static void
send_freeze (flint_replica_t *r, bool frozen)
{
  Flint__Node__V1__Freeze fr = FLINT__NODE__V1__FREEZE__INIT;
  node_frame_t f = FLINT__NODE__V1__NODE_FRAME__INIT;

  fr.replica_id = r->id;
  fr.frozen = frozen;
  f.msg_case = FLINT__NODE__V1__NODE_FRAME__MSG_FREEZE;
  f.freeze = &fr;
  if (r->owner)
    flint__helper_send (r->owner, &f.base, NULL, 0);
}

/* RESTORE_TIMEOUT_MS, plus time for large images (a GPU worker checkpointed with its weights
 * inside: CRIU reads every page), capped by the endpoint's startup_timeout. */
static uint64_t
restore_timeout (const flint_endpoint_t *ep)
{
  uint64_t t = RESTORE_TIMEOUT_MS;
  if (ep->current)
    t += ep->current->snap.size_bytes / (1u << 30) * RESTORE_MS_PER_GIB;
  return ep->scale.startup_timeout_ms < t ? ep->scale.startup_timeout_ms : t;
}

static void
start_canary (flint_replica_t *r)
{
  static uint64_t seq;
  Flint__Worker__V1__Ping ping = FLINT__WORKER__V1__PING__INIT;
  wframe_t f = FLINT__WORKER__V1__FRAME__INIT;
  const char *canary = r->version->manifest->canary;

  r->canary_ns = flint_now_ns ();
  r->canary_pending = 1;
  r->canary_seq = ping.seq = ++seq;
  f.msg_case = FLINT__WORKER__V1__FRAME__MSG_PING;
  f.ping = &ping;
  flint__replica_send (r, &f);
  if (canary && *canary)
    {
      Flint__Worker__V1__Invoke inv = FLINT__WORKER__V1__INVOKE__INIT;
      wframe_t g = FLINT__WORKER__V1__FRAME__INIT;
      r->canary_req = inv.request_id = ++r->d->next_request_id;
      inv.payload.data = (uint8_t *) canary;
      inv.payload.len = strlen (canary);
      inv.deadline_ms = restore_timeout (r->ep);
      g.msg_case = FLINT__WORKER__V1__FRAME__MSG_INVOKE;
      g.invoke = &inv;
      r->canary_pending++;
      flint__replica_send (r, &g);
    }
}

static void
fail_resume (flint_replica_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
fail_resume (flint_replica_t *r, const char *fmt, ...)
{
  char msg[800];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  r->resuming = false;
  r->canary_pending = 0;
  flint__replica_fail_start (r, FLINT_EUNAVAILABLE, msg, "its restore failed");
}

static void
canary_passed (flint_replica_t *r)
{
  flint_endpoint_t *ep = r->ep;
  flint_version_t *v = r->version;
  flint_snapshot_t *s = &v->snap;

  r->resuming = false;
  r->phases_ms[FLINT_RPHASE_CANARY] = (double) (flint_now_ns () - r->canary_ns) / 1e6;
  if (flint__fault (r->d, "snapshot-canary"))
    {
      fail_resume (r, "canary failed: fault injected (FLINT_FAULT=snapshot-canary)");
      return;
    }
  if (r->tier == FLINT_TIER_IMAGE)
    s->restore_failures = 0;
  /* A pool replica serves at once only when requests wait AND the endpoint may grow: otherwise
   * a burst would turn every pool refill into one more serving replica past max_replicas. */
  if (r->parking && (flint_list_empty (&ep->queue) || flint__autoscale_live (ep) >= ep->scale.max_replicas)
      && v == ep->current && !ep->deleting && count_parked (ep, v, false) < ep->scale.parked_replicas)
    {
      /* the pool's replica: frozen until a request needs it (its hook and canary are done) */
      r->parking = false;
      flint__replica_uncount_starting (r);
      r->state = FLINT_REPLICA_PARKED;
      if (r->timer)
        uv_timer_stop (r->timer);
      send_freeze (r, true);
      flint_info ("endpoint `%s` v%llu replica %s parked (restored in %.1f ms: criu %.1f, reconnect %.1f, canary %.1f)",
                  ep->name, (unsigned long long) v->number, r->id,
                  (double) (flint_now_ns () - r->started_ns) / 1e6, r->phases_ms[FLINT_RPHASE_RESTORE],
                  r->phases_ms[FLINT_RPHASE_CONNECT], r->phases_ms[FLINT_RPHASE_CANARY]);
      return;
    }
  r->parking = false;
  if (r->tier == FLINT_TIER_IMAGE)
    {
      flint_hist_observe (&s->restore_ms, (double) (flint_now_ns () - r->started_ns) / 1e6);
      s->restores++;
    }
  else if (r->tier == FLINT_TIER_PARKED)
    flint_hist_observe (&s->unpark_ms, (double) (flint_now_ns () - r->started_ns) / 1e6);
  flint__replica_ready (r, 0);
}

void
flint__snapshot_on_restored_ack (flint_replica_t *r, bool ok, const char *error, double hook_ms)
{
  if (r->checkpointing)
    {
      flint_version_t *v = r->version;
      if (ok)
        {
          take_done (v, r, NULL);
          return;
        }
      {
        char msg[800];
        snprintf (msg, sizeof msg, "the function's after_restore hook failed in the checkpointed worker: %s", error);
        flint_warn ("endpoint `%s` version %llu: %s", r->ep->name, (unsigned long long) v->number, msg);
        flint__snapshot_discard (r->d, v, "its after_restore hook fails");
        v->snap.state = FLINT_SNAPSHOT_FAILED;
        snprintf (v->snap.error, sizeof v->snap.error, "%s", msg);
        take_done (v, r, msg);
        flint__replica_stop (r, "its after_restore hook failed");
      }
      return;
    }
  if (!r->resuming || r->state != FLINT_REPLICA_STARTING)
    return;
  r->phases_ms[FLINT_RPHASE_CONNECT] = (double) (flint_now_ns () - r->resume_ns) / 1e6;
  r->phases_ms[FLINT_RPHASE_INIT] = hook_ms;
  if (flint__fault (r->d, "snapshot-reconnect"))
    {
      fail_resume (r, "the restored worker's channel failed: fault injected (FLINT_FAULT=snapshot-reconnect)");
      return;
    }
  if (!ok)
    {
      fail_resume (r, "the function's after_restore hook failed: %s", error);
      return;
    }
  start_canary (r);
}

void
flint__snapshot_on_pong (flint_replica_t *r, uint64_t seq)
{
  if (!r->resuming || r->canary_pending <= 0 || seq != r->canary_seq)
    return;
  r->canary_seq = 0;
  if (--r->canary_pending == 0)
    canary_passed (r);
}

bool
flint__snapshot_on_canary_result (flint_replica_t *r, uint64_t request_id, int code, const char *message)
{
  if (request_id != r->canary_req)
    return false;
  r->canary_req = 0;
  if (!r->resuming || r->canary_pending <= 0)
    return true;
  if (code != 0)
    {
      fail_resume (r, "its canary request (manifest `canary:`) failed with code %d: %s", code, message);
      return true;
    }
  if (--r->canary_pending == 0)
    canary_passed (r);
  return true;
}

static void
on_restored (flint_daemon_t *d, flint_helper_t *h, const Flint__Node__V1__Restored *rs)
{
  flint_replica_t *r = flint_map_get (&d->replicas, rs->replica_id);
  int fds[3] = { -1, -1, -1 };
  int rc;

  if (rs->ok)
    for (int i = 0; i < 3; i++)
      fds[i] = flint_channel_take_fd (h->chan);
  if (r == NULL || r->state != FLINT_REPLICA_STARTING || r->tier != FLINT_TIER_IMAGE)
    {
      /* gone meanwhile (deleted endpoint, timeout): its worker must not linger */
      for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
          close (fds[i]);
      if (rs->ok && r == NULL)
        {
          Flint__Node__V1__Kill k = FLINT__NODE__V1__KILL__INIT;
          node_frame_t f = FLINT__NODE__V1__NODE_FRAME__INIT;
          k.replica_id = rs->replica_id;
          f.msg_case = FLINT__NODE__V1__NODE_FRAME__MSG_KILL;
          f.kill = &k;
          flint__helper_send (h, &f.base, NULL, 0);
        }
      return;
    }
  if (!rs->ok)
    {
      flint_version_t *v = r->version;
      if (rs->code == FLINT_EDATALOSS && v->snap.state == FLINT_SNAPSHOT_READY)
        {
          /* a corrupted image is never tried again */
          flint_warn ("endpoint `%s` version %llu: %s: discarding the snapshot", r->ep->name,
                      (unsigned long long) v->number, rs->error);
          flint__snapshot_discard (d, v, "it failed its verification");
          v->snap.state = FLINT_SNAPSHOT_FAILED;
          snprintf (v->snap.error, sizeof v->snap.error, "discarded: %s", rs->error);
        }
      fail_resume (r, "restore failed: %s", rs->error);
      return;
    }
  r->pid = rs->pid;
  for (size_t i = 0; i < rs->n_phases_ms; i++)
    {
      const char *k = rs->phases_ms[i]->key;
      double val = rs->phases_ms[i]->value;
      if (strcmp (k, "criu") == 0)
        r->phases_ms[FLINT_RPHASE_RESTORE] = val;
      else if (strcmp (k, "cuda") == 0)
        r->phases_ms[FLINT_RPHASE_CUDA] = val;
      else if (strcmp (k, "total") == 0)
        r->phases_ms[FLINT_RPHASE_SANDBOX] += val;
    }
  r->phases_ms[FLINT_RPHASE_SANDBOX] -= r->phases_ms[FLINT_RPHASE_RESTORE] + r->phases_ms[FLINT_RPHASE_CUDA];
  if (fds[0] < 0 || fds[1] < 0 || fds[2] < 0)
    {
      for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
          close (fds[i]);
      fail_resume (r, "the snapshotter sent no channel for the restored worker");
      return;
    }
  rc = flint__replica_attach (r, fds[0], fds[1], fds[2]);
  if (rc < 0)
    {
      fail_resume (r, "no channel to the restored worker: %s", strerror (-rc));
      return;
    }
  r->resuming = true;
  if (flint__replica_send_restored (r) < 0)
    fail_resume (r, "cannot send the restored worker its Restored frame");
}

void
flint__snapshot_on_helper_frame (flint_helper_t *h, const uint8_t *payload, size_t len)
{
  node_frame_t *f = flint__node__v1__node_frame__unpack (NULL, len, payload);

  if (f == NULL)
    {
      flint_err ("malformed frame from %s (%zu bytes)", h->name, len);
      return;
    }
  switch (f->msg_case)
    {
    case FLINT__NODE__V1__NODE_FRAME__MSG_DUMPED:
      on_dumped (h->d, f->dumped);
      break;
    case FLINT__NODE__V1__NODE_FRAME__MSG_RESTORED:
      on_restored (h->d, h, f->restored);
      break;
    default:
      /* Exited, Status: as for the spawner */
      flint__replica_on_helper_frame (h, payload, len);
      break;
    }
  flint__node__v1__node_frame__free_unpacked (f, NULL);
}

/* Sends a Restore for a new replica of the current version. NULL with `err`. */
static flint_replica_t *
restore_image (flint_endpoint_t *ep, bool parking, flint_error_t *err)
{
  flint_daemon_t *d = ep->d;
  flint_version_t *v = ep->current;
  flint_snapshot_t *s = &v->snap;
  Flint__Node__V1__Restore rq = FLINT__NODE__V1__RESTORE__INIT;
  Flint__Node__V1__SandboxSpec spec = FLINT__NODE__V1__SANDBOX_SPEC__INIT;
  node_frame_t f = FLINT__NODE__V1__NODE_FRAME__INIT;
  Flint__Node__V1__ImageFile *fm, **fp;
  flint_replica_t *r;
  char *argv[1] = { d->worker_path };
  char **env = NULL;
  size_t nenv = 0;
  char hostname[64];
  int rc;

  r = flint__replica_alloc (ep, v, FLINT_TIER_IMAGE, &d->snapshotter);
  r->parking = parking;
  flint__replica_arm_startup_timer (r, restore_timeout (ep));
  if (flint__sandbox_spec_fill (r, &spec, &env, &nenv, hostname, sizeof hostname, err) < 0)
    {
      flint__replica_discard (r, err->msg);
      return NULL;
    }
  fm = calloc (s->n_files + 1, sizeof *fm);
  fp = calloc (s->n_files + 1, sizeof *fp);
  if (fm == NULL || fp == NULL)
    abort ();
  for (size_t i = 0; i < s->n_files; i++)
    {
      flint__node__v1__image_file__init (&fm[i]);
      fm[i].path = s->files[i].path;
      fm[i].size = s->files[i].size;
      fm[i].sha256 = s->files[i].sha256;
      fp[i] = &fm[i];
    }
  rq.replica_id = r->id;
  rq.image_dir = s->image_dir;
  rq.sandbox = &spec;
  rq.n_argv = 1;
  rq.argv = argv;
  rq.n_files = s->n_files;
  rq.files = fp;
  f.msg_case = FLINT__NODE__V1__NODE_FRAME__MSG_RESTORE;
  f.restore = &rq;
  rc = flint__helper_send (&d->snapshotter, &f.base, NULL, 0);
  flint__sandbox_spec_clear (env, nenv);
  free (fm);
  free (fp);
  if (rc < 0)
    {
      flint_error_set_errno (err, FLINT_EUNAVAILABLE, rc, "send the restore request to the snapshotter");
      flint__replica_discard (r, err->msg);
      return NULL;
    }
  return r;
}

/* Thaws a parked replica of the current version for a request. */
static flint_replica_t *
unpark (flint_endpoint_t *ep)
{
  for (flint_list_t *p = ep->replicas.next; p != &ep->replicas; p = p->next)
    {
      flint_replica_t *r = flint_list_entry (p, flint_replica_t, link);
      if (r->version != ep->current || r->state != FLINT_REPLICA_PARKED)
        continue;
      r->state = FLINT_REPLICA_STARTING;
      r->tier = FLINT_TIER_PARKED;
      r->started_ns = flint_now_ns ();
      memset (r->phases_ms, 0, sizeof r->phases_ms);
      r->first_output_ns = 0;
      flint__replica_count_starting (r);
      flint__replica_arm_startup_timer (r, restore_timeout (ep));
      if (!flint__fault (r->d, "snapshot-thaw"))
        send_freeze (r, false);
      /* answered once thawed: the canary proves it came back */
      r->resuming = true;
      start_canary (r);
      return r;
    }
  return NULL;
}

/* Why the image tier cannot serve `ep` now, or NULL. */
static const char *
image_unusable (flint_endpoint_t *ep)
{
  const flint_snapshot_t *s = &ep->current->snap;
  if (!available (ep->d))
    return ep->d->snapshots_off[0] ? ep->d->snapshots_off : "the snapshotter is restarting";
  if (s->state != FLINT_SNAPSHOT_READY)
    return s->error[0] ? s->error : "no snapshot";
  if (s->restore_failures >= MAX_RESTORE_FAILURES)
    return "the image tier is off after repeated restore failures";
  return NULL;
}

/* Starts a replica of the current version by the fastest tier not above `top`. */
static flint_replica_t *
scale_up_from (flint_endpoint_t *ep, flint_tier_t top, flint_error_t *err)
{
  flint_replica_t *r;

  if (ep->current == NULL)
    {
      flint_error_set (err, FLINT_EPRECONDITION, "endpoint `%s` has no ready version", ep->name);
      return NULL;
    }
  if (top >= FLINT_TIER_PARKED && (r = unpark (ep)) != NULL)
    return r;
  if (top >= FLINT_TIER_IMAGE && image_unusable (ep) == NULL)
    {
      flint_error_t e2 = FLINT_ERROR_INIT;
      r = restore_image (ep, false, &e2);
      if (r)
        return r;
      ep->metrics.tier_fallbacks++;
      flint_warn ("endpoint `%s`: image tier unavailable (%s): starting cold", ep->name, e2.msg);
    }
  return flint__replica_start (ep, ep->current, err);
}

flint_replica_t *
flint__replica_scale_up (flint_endpoint_t *ep, flint_error_t *err)
{
  flint_replica_t *r = scale_up_from (ep, FLINT_TIER_PARKED, err);
  if (r && r->tier == FLINT_TIER_PARKED)
    flint__snapshot_keep_parked (ep);
  return r;
}

/* Replicas of the current version that are ready or starting, `r` aside. */
static uint32_t
live_besides (const flint_endpoint_t *ep, const flint_replica_t *r)
{
  uint32_t n = 0;
  for (const flint_list_t *p = ep->replicas.next; p != &ep->replicas; p = p->next)
    {
      const flint_replica_t *o = flint_list_entry (p, flint_replica_t, link);
      if (o != r && o->version == ep->current
          && (o->state == FLINT_REPLICA_READY || o->state == FLINT_REPLICA_STARTING))
        n++;
    }
  return n;
}

void
flint__snapshot_start_failed (flint_replica_t *r, const char *why)
{
  flint_endpoint_t *ep = r->ep;
  flint_version_t *v = r->version;
  /* a replacement one tier down, when requests still wait for one (a parking replica was for
   * the pool; a request may meanwhile have been served by another) */
  bool demand = !r->parking && !ep->deleting && v == ep->current && !ep->d->shutting_down && ep->queue_len > 0
                && live_besides (ep, r) < ep->scale.max_replicas;
  flint_tier_t next = r->tier == FLINT_TIER_PARKED ? FLINT_TIER_IMAGE : FLINT_TIER_COLD;
  char line[1200];

  r->resuming = false;
  if (r->tier == FLINT_TIER_IMAGE && v->snap.restore_failures < UINT32_MAX)
    v->snap.restore_failures++;
  snprintf (line, sizeof line, "%s-tier start of replica %s failed: %s%s", flint__tier_name (r->tier), r->id, why,
            demand ? (next == FLINT_TIER_COLD ? "; falling back to a cold start" : "; falling back to the image tier")
                   : "");
  flint_warn ("endpoint `%s`: %s", ep->name, line);
  flint_logbook_append (ep->logbook, v->number, r->id, "flint", line, strlen (line));
  snprintf (ep->last_error, sizeof ep->last_error, "%s", line);
  if (!demand)
    return;
  ep->metrics.tier_fallbacks++;
  {
    flint_error_t err = FLINT_ERROR_INIT;
    if (scale_up_from (ep, next, &err) == NULL)
      {
        /* nothing else can start: the requests waiting hear why now */
        char msg[1600];
        snprintf (msg, sizeof msg, "endpoint `%s`: no replica could be started: %s; then: %s", ep->name, why, err.msg);
        snprintf (ep->last_error, sizeof ep->last_error, "%s", msg);
        while (!flint_list_empty (&ep->queue))
          flint__request_complete (flint_list_entry (ep->queue.next, flint_request_t, link), FLINT_EUNAVAILABLE, msg,
                                   NULL, 0);
      }
  }
}

void
flint__snapshot_keep_parked (flint_endpoint_t *ep)
{
  flint_version_t *v = ep->current;
  uint32_t have, target = ep->scale.parked_replicas;

  if (v == NULL || ep->deleting || ep->d->shutting_down)
    return;
  /* too many (the knob went down): the surplus goes */
  have = count_parked (ep, v, false);
  for (flint_list_t *p = ep->replicas.next, *t = p->next; p != &ep->replicas && have > target; p = t, t = p->next)
    {
      flint_replica_t *r = flint_list_entry (p, flint_replica_t, link);
      if (r->version == v && r->state == FLINT_REPLICA_PARKED)
        {
          flint__replica_stop (r, "the parked pool shrank");
          have--;
        }
    }
  if (image_unusable (ep))
    return;
  for (have = count_parked (ep, v, true); have < target; have++)
    {
      flint_error_t err = FLINT_ERROR_INIT;
      if (restore_image (ep, true, &err) == NULL)
        {
          flint_warn ("endpoint `%s`: cannot fill the parked pool: %s", ep->name, err.msg);
          return;
        }
    }
}

/* ---- status ------------------------------------------------------------------------------- */

Flint__V1__Snapshot *
flint__snapshot_proto (flint_endpoint_t *ep, flint_version_t *v)
{
  Flint__V1__Snapshot *m = calloc (1, sizeof *m);
  const flint_snapshot_t *s = v ? &v->snap : NULL;
  uint32_t parked = v ? count_parked (ep, v, false) : 0;
  const char *tier = "none", *error = "";

  if (m == NULL)
    abort ();
  flint__v1__snapshot__init (m);
  if (parked && available (ep->d))
    tier = "parked"; /* restored from a verified image, whatever became of it since */
  else if (s && s->state == FLINT_SNAPSHOT_READY && available (ep->d))
    tier = s->restore_failures >= MAX_RESTORE_FAILURES ? "none" : "image";
  /* why the image tier cannot serve (said even while parked replicas remain) */
  if (s && s->state == FLINT_SNAPSHOT_TAKING)
    error = "being taken";
  else if (ep->d->snapshots_off[0])
    error = ep->d->snapshots_off;
  else if (s && s->state == FLINT_SNAPSHOT_READY && s->restore_failures >= MAX_RESTORE_FAILURES)
    error = "the image tier is off after repeated restore failures (see `flint logs`)";
  else if (s && s->state == FLINT_SNAPSHOT_READY && !available (ep->d))
    error = "the snapshotter is restarting";
  else if (s && s->state != FLINT_SNAPSHOT_READY && s->error[0])
    error = s->error;
  m->tier = xstrdup (tier);
  m->error = xstrdup (error);
  if (s && s->state == FLINT_SNAPSHOT_READY)
    {
      m->size_bytes = s->size_bytes;
      m->dump_ms = s->dump_ms;
      m->created_ms = s->created_ms;
    }
  if (s)
    {
      m->parked = parked;
      m->parked_target = ep->scale.parked_replicas;
      m->restore_p50_ms = flint_hist_quantile (&s->restore_ms, 0.5);
      m->restore_p99_ms = flint_hist_quantile (&s->restore_ms, 0.99);
      m->restores = s->restores;
      m->unpark_p50_ms = flint_hist_quantile (&s->unpark_ms, 0.5);
      m->unpark_p99_ms = flint_hist_quantile (&s->unpark_ms, 0.99);
      m->unparks = s->unpark_ms.count;
    }
  m->fallbacks = ep->metrics.tier_fallbacks;
  return m;
}

void
flint__api_fill_snapshot (flint_endpoint_t *ep, Flint__V1__Endpoint *m)
{
  m->snapshot = flint__snapshot_proto (ep, ep->current);
}
