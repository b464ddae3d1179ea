/* SQLite-backed registry. Statements are prepared per call: the control plane is not hot, and
 * it keeps the code linear. Every multi-row change runs in one transaction. */
#include "registry.h"
#include "flint/cleanup.h"
#include "flint/util.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#define SCHEMA_VERSION 1

struct flint_registry_s {
  sqlite3 *db;
};

static const char schema[] =
  "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
  "CREATE TABLE IF NOT EXISTS endpoints ("
  "  name TEXT PRIMARY KEY,"
  "  current_version INTEGER NOT NULL DEFAULT 0,"
  "  scale TEXT NOT NULL DEFAULT '',"
  "  created_ms INTEGER NOT NULL);"
  "CREATE TABLE IF NOT EXISTS versions ("
  "  endpoint TEXT NOT NULL REFERENCES endpoints(name) ON DELETE CASCADE,"
  "  version INTEGER NOT NULL,"
  "  state TEXT NOT NULL,"
  "  manifest TEXT NOT NULL,"
  "  manifest_path TEXT NOT NULL DEFAULT '',"
  "  bundle_sha256 TEXT NOT NULL,"
  "  created_ms INTEGER NOT NULL,"
  "  error TEXT NOT NULL DEFAULT '',"
  "  PRIMARY KEY (endpoint, version));"
  "CREATE INDEX IF NOT EXISTS versions_bundle ON versions(bundle_sha256);"
  "CREATE TABLE IF NOT EXISTS snapshots ("
  "  endpoint TEXT NOT NULL,"
  "  version INTEGER NOT NULL,"
  "  dir TEXT NOT NULL,"
  "  size_bytes INTEGER NOT NULL,"
  "  dump_ms REAL NOT NULL,"
  "  created_ms INTEGER NOT NULL,"
  "  meta TEXT NOT NULL DEFAULT '',"
  "  PRIMARY KEY (endpoint, version),"
  "  FOREIGN KEY (endpoint, version) REFERENCES versions(endpoint, version) ON DELETE CASCADE);"
  "CREATE TABLE IF NOT EXISTS snapshot_files ("
  "  endpoint TEXT NOT NULL,"
  "  version INTEGER NOT NULL,"
  "  path TEXT NOT NULL,"
  "  size INTEGER NOT NULL,"
  "  sha256 TEXT NOT NULL,"
  "  PRIMARY KEY (endpoint, version, path),"
  "  FOREIGN KEY (endpoint, version) REFERENCES snapshots(endpoint, version) ON DELETE CASCADE);";

static int
db_fail (flint_registry_t *r, flint_error_t *err, const char *what)
{
  return flint_error_set (err, FLINT_EINTERNAL, "registry: %s: %s", what, sqlite3_errmsg (r->db));
}

static int
exec_sql (flint_registry_t *r, const char *sql, flint_error_t *err)
{
  char *msg = NULL;
  if (sqlite3_exec (r->db, sql, NULL, NULL, &msg) != SQLITE_OK)
    {
      flint_error_set (err, FLINT_EINTERNAL, "registry: %s", msg ? msg : "error");
      sqlite3_free (msg);
      return -1;
    }
  return 0;
}

/* Prepares `sql` and binds the arguments described by `types`: 't' text, 'i' int64,
 * 'u' uint64, 'd' double. */
static sqlite3_stmt *
prepare (flint_registry_t *r, flint_error_t *err, const char *sql, const char *types, ...)
{
  sqlite3_stmt *st = NULL;
  va_list ap;

  if (sqlite3_prepare_v2 (r->db, sql, -1, &st, NULL) != SQLITE_OK)
    {
      db_fail (r, err, "prepare");
      return NULL;
    }
  va_start (ap, types);
  for (int i = 0; types[i]; i++)
    {
      int rc;
      switch (types[i])
        {
        case 't': rc = sqlite3_bind_text (st, i + 1, va_arg (ap, const char *), -1, SQLITE_TRANSIENT); break;
        case 'i': rc = sqlite3_bind_int64 (st, i + 1, va_arg (ap, int64_t)); break;
        case 'u': rc = sqlite3_bind_int64 (st, i + 1, (sqlite3_int64) va_arg (ap, uint64_t)); break;
        case 'd': rc = sqlite3_bind_double (st, i + 1, va_arg (ap, double)); break;
        default: rc = SQLITE_MISUSE; break;
        }
      if (rc != SQLITE_OK)
        {
          va_end (ap);
          db_fail (r, err, "bind");
          sqlite3_finalize (st);
          return NULL;
        }
    }
  va_end (ap);
  return st;
}

static int
step_done (flint_registry_t *r, sqlite3_stmt *st, flint_error_t *err, const char *what)
{
  int rc = sqlite3_step (st);
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    return db_fail (r, err, what);
  return 0;
}

static char *
col_text (sqlite3_stmt *st, int i)
{
  const unsigned char *t = sqlite3_column_text (st, i);
  char *s = strdup (t ? (const char *) t : "");
  if (s == NULL)
    abort ();
  return s;
}

int
flint_registry_open (const char *path, flint_registry_t **out, flint_error_t *err)
{
  flint_registry_t *r = calloc (1, sizeof *r);
  sqlite3_stmt *st;
  int version = 0;

  if (r == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  if (sqlite3_open_v2 (path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL)
      != SQLITE_OK)
    {
      flint_error_set (err, FLINT_EINTERNAL, "registry: open `%s`: %s", path,
                       r->db ? sqlite3_errmsg (r->db) : "out of memory");
      flint_registry_close (r);
      return -1;
    }
  sqlite3_busy_timeout (r->db, 5000);
  /* WAL: readers never block the writer and a crash (kill -9) loses nothing committed. */
  if (exec_sql (r, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;", err) < 0
      || exec_sql (r, schema, err) < 0)
    {
      flint_registry_close (r);
      return -1;
    }
  st = prepare (r, err, "SELECT value FROM meta WHERE key='schema'", "");
  if (st == NULL)
    {
      flint_registry_close (r);
      return -1;
    }
  if (sqlite3_step (st) == SQLITE_ROW)
    version = atoi ((const char *) sqlite3_column_text (st, 0));
  sqlite3_finalize (st);
  if (version > SCHEMA_VERSION)
    {
      flint_error_set (err, FLINT_EPRECONDITION,
                       "registry `%s` has schema %d, newer than this flintd understands (%d)", path, version,
                       SCHEMA_VERSION);
      flint_registry_close (r);
      return -1;
    }
  if (version == 0 && exec_sql (r, "INSERT OR REPLACE INTO meta VALUES ('schema', '1')", err) < 0)
    {
      flint_registry_close (r);
      return -1;
    }
  *out = r;
  return 0;
}

void
flint_registry_close (flint_registry_t *r)
{
  if (r == NULL)
    return;
  if (r->db)
    sqlite3_close (r->db);
  free (r);
}

int
flint_registry_put_endpoint (flint_registry_t *r, const char *name, const char *scale, flint_error_t *err)
{
  sqlite3_stmt *st = prepare (r, err,
                              "INSERT INTO endpoints (name, scale, created_ms) VALUES (?1, ?2, ?3) "
                              "ON CONFLICT(name) DO UPDATE SET scale=excluded.scale",
                              "tti", name, scale, flint_wall_ms ());
  return st ? step_done (r, st, err, "put endpoint") : -1;
}

int
flint_registry_set_current (flint_registry_t *r, const char *name, uint64_t version, flint_error_t *err)
{
  sqlite3_stmt *st = prepare (r, err, "UPDATE endpoints SET current_version=?2 WHERE name=?1", "tu", name, version);
  return st ? step_done (r, st, err, "set current version") : -1;
}

int
flint_registry_delete_endpoint (flint_registry_t *r, const char *name, flint_error_t *err)
{
  sqlite3_stmt *st;

  if (exec_sql (r, "BEGIN", err) < 0)
    return -1;
  /* foreign keys cascade versions → snapshots → snapshot_files */
  st = prepare (r, err, "DELETE FROM endpoints WHERE name=?1", "t", name);
  if (st == NULL || step_done (r, st, err, "delete endpoint") < 0)
    {
      exec_sql (r, "ROLLBACK", NULL);
      return -1;
    }
  return exec_sql (r, "COMMIT", err);
}

int
flint_registry_add_version (flint_registry_t *r, const flint_version_rec_t *rec, uint64_t *version_out,
                            flint_error_t *err)
{
  sqlite3_stmt *st;
  uint64_t next = 1;

  if (exec_sql (r, "BEGIN IMMEDIATE", err) < 0)
    return -1;
  st = prepare (r, err, "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE endpoint=?1", "t", rec->endpoint);
  if (st == NULL)
    goto fail;
  if (sqlite3_step (st) == SQLITE_ROW)
    next = (uint64_t) sqlite3_column_int64 (st, 0);
  sqlite3_finalize (st);
  st = prepare (r, err,
                "INSERT INTO versions (endpoint, version, state, manifest, manifest_path, bundle_sha256, "
                "created_ms, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                "tuttttit", rec->endpoint, next, rec->state ? rec->state : "deploying", rec->manifest,
                rec->manifest_path ? rec->manifest_path : "", rec->bundle_sha256, flint_wall_ms (),
                rec->error ? rec->error : "");
  if (st == NULL || step_done (r, st, err, "add version") < 0)
    goto fail;
  if (exec_sql (r, "COMMIT", err) < 0)
    goto fail;
  *version_out = next;
  return 0;
fail:
  exec_sql (r, "ROLLBACK", NULL);
  return -1;
}

int
flint_registry_set_version_state (flint_registry_t *r, const char *endpoint, uint64_t version,
                                  const char *state, const char *error, flint_error_t *err)
{
  sqlite3_stmt *st = prepare (r, err, "UPDATE versions SET state=?3, error=?4 WHERE endpoint=?1 AND version=?2",
                              "tutt", endpoint, version, state, error ? error : "");
  return st ? step_done (r, st, err, "set version state") : -1;
}

int
flint_registry_fail_deploying (flint_registry_t *r, const char *reason, flint_error_t *err)
{
  sqlite3_stmt *st = prepare (r, err, "UPDATE versions SET state='failed', error=?1 WHERE state='deploying'", "t",
                              reason);
  if (st == NULL || step_done (r, st, err, "fail deploying versions") < 0)
    return -1;
  return sqlite3_changes (r->db);
}

int
flint_registry_list_endpoints (flint_registry_t *r, flint_registry_endpoint_cb cb, void *ud, flint_error_t *err)
{
  sqlite3_stmt *st = prepare (r, err, "SELECT name, current_version, scale, created_ms FROM endpoints ORDER BY name", "");
  int rc, ret = 0;

  if (st == NULL)
    return -1;
  while ((rc = sqlite3_step (st)) == SQLITE_ROW)
    {
      flint_endpoint_rec_t ep = {
        .name = col_text (st, 0),
        .current_version = (uint64_t) sqlite3_column_int64 (st, 1),
        .scale = col_text (st, 2),
        .created_ms = sqlite3_column_int64 (st, 3),
      };
      ret = cb (ud, &ep);
      free (ep.name);
      free (ep.scale);
      if (ret < 0)
        break;
    }
  if (ret == 0 && rc != SQLITE_DONE)
    ret = db_fail (r, err, "list endpoints");
  sqlite3_finalize (st);
  return ret;
}

int
flint_registry_list_versions (flint_registry_t *r, const char *endpoint, flint_registry_version_cb cb, void *ud,
                              flint_error_t *err)
{
  sqlite3_stmt *st = prepare (r, err,
                              "SELECT endpoint, version, state, manifest, manifest_path, bundle_sha256, created_ms, "
                              "error FROM versions WHERE endpoint=?1 ORDER BY version DESC",
                              "t", endpoint);
  int rc, ret = 0;

  if (st == NULL)
    return -1;
  while ((rc = sqlite3_step (st)) == SQLITE_ROW)
    {
      flint_version_rec_t v = {
        .endpoint = col_text (st, 0),
        .version = (uint64_t) sqlite3_column_int64 (st, 1),
        .state = col_text (st, 2),
        .manifest = col_text (st, 3),
        .manifest_path = col_text (st, 4),
        .bundle_sha256 = col_text (st, 5),
        .created_ms = sqlite3_column_int64 (st, 6),
        .error = col_text (st, 7),
      };
      ret = cb (ud, &v);
      free (v.endpoint), free (v.state), free (v.manifest), free (v.manifest_path);
      free (v.bundle_sha256), free (v.error);
      if (ret < 0)
        break;
    }
  if (ret == 0 && rc != SQLITE_DONE)
    ret = db_fail (r, err, "list versions");
  sqlite3_finalize (st);
  return ret;
}

int
flint_registry_bundle_refs (flint_registry_t *r, const char *sha256, uint64_t *count_out, flint_error_t *err)
{
  sqlite3_stmt *st = prepare (r, err, "SELECT COUNT(*) FROM versions WHERE bundle_sha256=?1", "t", sha256);
  if (st == NULL)
    return -1;
  if (sqlite3_step (st) != SQLITE_ROW)
    {
      sqlite3_finalize (st);
      return db_fail (r, err, "count bundle references");
    }
  *count_out = (uint64_t) sqlite3_column_int64 (st, 0);
  sqlite3_finalize (st);
  return 0;
}

int
flint_registry_put_snapshot (flint_registry_t *r, const flint_snapshot_rec_t *s, flint_error_t *err)
{
  sqlite3_stmt *st;

  if (exec_sql (r, "BEGIN IMMEDIATE", err) < 0)
    return -1;
  st = prepare (r, err, "DELETE FROM snapshots WHERE endpoint=?1 AND version=?2", "tu", s->endpoint, s->version);
  if (st == NULL || step_done (r, st, err, "replace snapshot") < 0)
    goto fail;
  st = prepare (r, err,
                "INSERT INTO snapshots (endpoint, version, dir, size_bytes, dump_ms, created_ms, meta) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                "tutudit", s->endpoint, s->version, s->dir, s->size_bytes, s->dump_ms, s->created_ms,
                s->meta ? s->meta : "");
  if (st == NULL || step_done (r, st, err, "put snapshot") < 0)
    goto fail;
  for (size_t i = 0; i < s->n_files; i++)
    {
      st = prepare (r, err, "INSERT INTO snapshot_files VALUES (?1, ?2, ?3, ?4, ?5)", "tutut", s->endpoint,
                    s->version, s->files[i].path, s->files[i].size, s->files[i].sha256);
      if (st == NULL || step_done (r, st, err, "put snapshot file") < 0)
        goto fail;
    }
  return exec_sql (r, "COMMIT", err);
fail:
  exec_sql (r, "ROLLBACK", NULL);
  return -1;
}

int
flint_registry_get_snapshot (flint_registry_t *r, const char *endpoint, uint64_t version,
                             flint_snapshot_rec_t *out, flint_error_t *err)
{
  sqlite3_stmt *st = prepare (r, err,
                              "SELECT dir, size_bytes, dump_ms, created_ms, meta FROM snapshots "
                              "WHERE endpoint=?1 AND version=?2",
                              "tu", endpoint, version);
  flint_snapshot_rec_t s = { 0 };
  size_t cap = 0;
  int rc;

  if (st == NULL)
    return -1;
  if (sqlite3_step (st) != SQLITE_ROW)
    {
      sqlite3_finalize (st);
      return flint_error_set (err, FLINT_ENOTFOUND, "no snapshot of `%s` version %llu", endpoint,
                              (unsigned long long) version);
    }
  s.endpoint = strdup (endpoint);
  s.version = version;
  s.dir = col_text (st, 0);
  s.size_bytes = (uint64_t) sqlite3_column_int64 (st, 1);
  s.dump_ms = sqlite3_column_double (st, 2);
  s.created_ms = sqlite3_column_int64 (st, 3);
  s.meta = col_text (st, 4);
  sqlite3_finalize (st);
  st = prepare (r, err, "SELECT path, size, sha256 FROM snapshot_files WHERE endpoint=?1 AND version=?2 ORDER BY path",
                "tu", endpoint, version);
  if (st == NULL)
    {
      flint_snapshot_rec_free (&s);
      return -1;
    }
  while ((rc = sqlite3_step (st)) == SQLITE_ROW)
    {
      if (s.n_files == cap)
        {
          cap = cap ? cap * 2 : 32;
          s.files = realloc (s.files, cap * sizeof *s.files);
          if (s.files == NULL)
            abort ();
        }
      s.files[s.n_files].path = col_text (st, 0);
      s.files[s.n_files].size = (uint64_t) sqlite3_column_int64 (st, 1);
      s.files[s.n_files].sha256 = col_text (st, 2);
      s.n_files++;
    }
  sqlite3_finalize (st);
  if (rc != SQLITE_DONE)
    {
      flint_snapshot_rec_free (&s);
      return db_fail (r, err, "read snapshot files");
    }
  *out = s;
  return 0;
}

int
flint_registry_delete_snapshot (flint_registry_t *r, const char *endpoint, uint64_t version, flint_error_t *err)
{
  sqlite3_stmt *st = prepare (r, err, "DELETE FROM snapshots WHERE endpoint=?1 AND version=?2", "tu", endpoint,
                              version);
  return st ? step_done (r, st, err, "delete snapshot") : -1;
}

void
flint_snapshot_rec_free (flint_snapshot_rec_t *s)
{
  if (s == NULL)
    return;
  free (s->endpoint);
  free (s->dir);
  free (s->meta);
  for (size_t i = 0; i < s->n_files; i++)
    free (s->files[i].path), free (s->files[i].sha256);
  free (s->files);
  memset (s, 0, sizeof *s);
}
