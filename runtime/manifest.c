/* flint.yaml parsing with libyaml's document API: the whole file becomes a node tree (with
 * source marks), which is then walked field by field against the schema below. */
#include "manifest.h"
#include "flint/cleanup.h"
#include "flint/map.h"
#include "flint/util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define MANIFEST_MAX_BYTES (1u << 20)

typedef struct mctx_s {
  yaml_document_t *doc;
  const char *path;
  flint_error_t *err;
} mctx_t;

static int
fail_at (mctx_t *mc, const yaml_node_t *node, const char *field, const char *fmt, ...)
  __attribute__((format(printf, 4, 5)));

static int
fail_at (mctx_t *mc, const yaml_node_t *node, const char *field, const char *fmt, ...)
{
  char what[512];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (what, sizeof what, fmt, ap);
  va_end (ap);
  if (field)
    return flint_error_set (mc->err, FLINT_EINVAL, "%s:%zu:%zu: field `%s`: %s", mc->path,
                            node ? node->start_mark.line + 1 : 1, node ? node->start_mark.column + 1 : 1,
                            field, what);
  return flint_error_set (mc->err, FLINT_EINVAL, "%s:%zu:%zu: %s", mc->path,
                          node ? node->start_mark.line + 1 : 1, node ? node->start_mark.column + 1 : 1, what);
}

static char *
xstrndup (const char *s, size_t n)
{
  char *r = strndup (s, n);
  if (r == NULL)
    abort ();
  return r;
}

static const char *
scalar (const yaml_node_t *n)
{
  return (const char *) n->data.scalar.value;
}

static int
want_scalar (mctx_t *mc, const yaml_node_t *n, const char *field)
{
  if (n->type != YAML_SCALAR_NODE)
    return fail_at (mc, n, field, "expected a single value, got a %s",
                    n->type == YAML_MAPPING_NODE ? "mapping" : "list");
  return 0;
}

static int
get_string (mctx_t *mc, const yaml_node_t *n, const char *field, char **out)
{
  if (want_scalar (mc, n, field) < 0)
    return -1;
  if (memchr (scalar (n), '\0', n->data.scalar.length) != NULL)
    return fail_at (mc, n, field, "contains a NUL byte");
  free (*out);
  *out = xstrndup (scalar (n), n->data.scalar.length);
  return 0;
}

static int
get_bool (mctx_t *mc, const yaml_node_t *n, const char *field, bool *out)
{
  static const char *const yes[] = { "true", "yes", "on", "True", "TRUE", "Yes" };
  static const char *const no[] = { "false", "no", "off", "False", "FALSE", "No" };

  if (want_scalar (mc, n, field) < 0)
    return -1;
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (yes); i++)
    if (strcmp (scalar (n), yes[i]) == 0)
      return *out = true, 0;
  for (size_t i = 0; i < FLINT_ARRAY_SIZE (no); i++)
    if (strcmp (scalar (n), no[i]) == 0)
      return *out = false, 0;
  return fail_at (mc, n, field, "expected true or false, got `%s`", scalar (n));
}

static int
parse_u32 (const char *s, uint32_t max, uint32_t *out)
{
  char *end;
  unsigned long v;

  if (*s == '\0' || *s == '-' || *s == '+' || isspace ((unsigned char) *s))
    return -EINVAL;
  errno = 0;
  v = strtoul (s, &end, 10);
  if (errno || *end || v > max)
    return -EINVAL;
  *out = (uint32_t) v;
  return 0;
}

static int
get_u32 (mctx_t *mc, const yaml_node_t *n, const char *field, uint32_t max, uint32_t *out)
{
  if (want_scalar (mc, n, field) < 0)
    return -1;
  if (parse_u32 (scalar (n), max, out) < 0)
    return fail_at (mc, n, field, "expected a whole number between 0 and %u, got `%s`", max, scalar (n));
  return 0;
}

static int
get_size (mctx_t *mc, const yaml_node_t *n, const char *field, uint64_t *out)
{
  if (want_scalar (mc, n, field) < 0)
    return -1;
  if (flint_parse_size (scalar (n), out) < 0)
    return fail_at (mc, n, field, "expected a size such as 256Mi or 1Gi, got `%s`", scalar (n));
  return 0;
}

static int
get_duration (mctx_t *mc, const yaml_node_t *n, const char *field, uint64_t *out)
{
  if (want_scalar (mc, n, field) < 0)
    return -1;
  if (flint_parse_duration_ms (scalar (n), out) < 0)
    return fail_at (mc, n, field, "expected a duration such as 500ms, 30s or 5m, got `%s`", scalar (n));
  return 0;
}

static int
get_cpu (mctx_t *mc, const yaml_node_t *n, const char *field, uint32_t *out)
{
  char *end;
  double v;

  if (want_scalar (mc, n, field) < 0)
    return -1;
  errno = 0;
  v = strtod (scalar (n), &end);
  if (errno || end == scalar (n) || (*end && strcmp (end, "m") != 0) || !(v >= 0) || isinf (v))
    return fail_at (mc, n, field, "expected a number of cores such as 0.5 or 2 (or millicores: 500m), got `%s`",
                    scalar (n));
  if (*end == 'm')
    v /= 1000.0;
  if (v > 1024)
    return fail_at (mc, n, field, "%s cores is more than any machine has", scalar (n));
  *out = (uint32_t) (v * 1000.0 + 0.5);
  return 0;
}

static int
get_string_list (mctx_t *mc, const yaml_node_t *n, const char *field, char ***out, size_t *nout)
{
  size_t count;

  if (n->type == YAML_SCALAR_NODE && n->data.scalar.length == 0)
    return 0;
  if (n->type != YAML_SEQUENCE_NODE)
    return fail_at (mc, n, field, "expected a list");
  count = (size_t) (n->data.sequence.items.top - n->data.sequence.items.start);
  *out = calloc (count ? count : 1, sizeof **out);
  if (*out == NULL)
    abort ();
  for (size_t i = 0; i < count; i++)
    {
      yaml_node_t *it = yaml_document_get_node (mc->doc, n->data.sequence.items.start[i]);
      if (get_string (mc, it, field, &(*out)[i]) < 0)
        {
          *nout = i;
          return -1;
        }
    }
  *nout = count;
  return 0;
}

static int
get_map (mctx_t *mc, const yaml_node_t *n, const char *field, flint_kv_t **out, size_t *nout)
{
  flint_map_t seen = FLINT_MAP_INIT;
  size_t count;

  if (n->type == YAML_SCALAR_NODE && n->data.scalar.length == 0)
    return 0;
  if (n->type != YAML_MAPPING_NODE)
    return fail_at (mc, n, field, "expected a mapping of names to values");
  count = (size_t) (n->data.mapping.pairs.top - n->data.mapping.pairs.start);
  *out = calloc (count ? count : 1, sizeof **out);
  if (*out == NULL)
    abort ();
  for (size_t i = 0; i < count; i++)
    {
      yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
      yaml_node_t *k = yaml_document_get_node (mc->doc, p->key);
      yaml_node_t *v = yaml_document_get_node (mc->doc, p->value);
      *nout = i + 1;
      if (get_string (mc, k, field, &(*out)[i].key) < 0 || get_string (mc, v, (*out)[i].key, &(*out)[i].value) < 0)
        {
          flint_map_free (&seen);
          return -1;
        }
      /* a hash set, not a pairwise scan: a 1 MiB manifest holds ~100k keys, and the daemon
       * parses manifests on its loop */
      if (flint_map_put (&seen, (*out)[i].key, (void *) 1) != NULL)
        {
          flint_map_free (&seen);
          return fail_at (mc, k, field, "`%s` is given twice", (*out)[i].key);
        }
    }
  flint_map_free (&seen);
  *nout = count;
  return 0;
}

/* Levenshtein distance, for "did you mean" hints on unknown fields. */
static size_t
edit_distance (const char *a, const char *b)
{
  size_t la = strlen (a), lb = strlen (b);
  size_t row[64];

  if (la >= 63 || lb >= 63)
    return 99;
  for (size_t j = 0; j <= lb; j++)
    row[j] = j;
  for (size_t i = 1; i <= la; i++)
    {
      size_t prev = row[0];
      row[0] = i;
      for (size_t j = 1; j <= lb; j++)
        {
          size_t cur = row[j];
          size_t sub = prev + (a[i - 1] != b[j - 1]);
          row[j] = FLINT_MIN (FLINT_MIN (row[j] + 1, row[j - 1] + 1), sub);
          prev = cur;
        }
    }
  return row[lb];
}

static const char *const top_fields[] = {
  "name", "kind", "function", "args", "model", "draft_model", "config", "weights", "secrets",
  "resources", "network", "snapshot", "max_payload", "canary", "threads",
  "min_replicas", "max_replicas", "target_concurrency", "max_concurrency", "buffer_replicas",
  "scaledown_window", "timeout", "startup_timeout", "retries", "queue_size", "parked_replicas",
};
static const char *const resource_fields[] = { "memory", "cpu", "pids", "tmp", "nofile", "gpu" };

static int
unknown_field (mctx_t *mc, const yaml_node_t *k, const char *const *known, size_t nknown)
{
  const char *best = NULL;
  size_t bestd = 3;

  for (size_t i = 0; i < nknown; i++)
    {
      size_t d = edit_distance (scalar (k), known[i]);
      if (d < bestd)
        bestd = d, best = known[i];
    }
  if (best)
    return fail_at (mc, k, NULL, "unknown field `%s` (did you mean `%s`?)", scalar (k), best);
  return fail_at (mc, k, NULL, "unknown field `%s` (see docs/MANIFEST.md)", scalar (k));
}

/* Applies one scale knob from a YAML node; returns 1 when `key` is not a scale knob. */
static int
scale_field (mctx_t *mc, flint_scale_t *s, const char *key, const yaml_node_t *v)
{
  if (strcmp (key, "min_replicas") == 0)
    return get_u32 (mc, v, key, 10000, &s->min_replicas);
  if (strcmp (key, "max_replicas") == 0)
    return get_u32 (mc, v, key, 10000, &s->max_replicas);
  if (strcmp (key, "target_concurrency") == 0)
    return get_u32 (mc, v, key, 100000, &s->target_concurrency);
  if (strcmp (key, "max_concurrency") == 0)
    return get_u32 (mc, v, key, 1024, &s->max_concurrency);
  if (strcmp (key, "buffer_replicas") == 0)
    return get_u32 (mc, v, key, 10000, &s->buffer_replicas);
  if (strcmp (key, "retries") == 0)
    return get_u32 (mc, v, key, 10, &s->retries);
  if (strcmp (key, "queue_size") == 0)
    return get_u32 (mc, v, key, 1000000, &s->queue_size);
  if (strcmp (key, "parked_replicas") == 0)
    return get_u32 (mc, v, key, 64, &s->parked_replicas);
  if (strcmp (key, "scaledown_window") == 0)
    return get_duration (mc, v, key, &s->scaledown_window_ms);
  if (strcmp (key, "timeout") == 0)
    return get_duration (mc, v, key, &s->timeout_ms);
  if (strcmp (key, "startup_timeout") == 0)
    return get_duration (mc, v, key, &s->startup_timeout_ms);
  return 1;
}

static int
parse_resources (mctx_t *mc, const yaml_node_t *n, flint_resources_t *r)
{
  if (n->type != YAML_MAPPING_NODE)
    return fail_at (mc, n, "resources", "expected a mapping (memory, cpu, pids, tmp, nofile, gpu)");
  for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++)
    {
      yaml_node_t *k = yaml_document_get_node (mc->doc, p->key);
      yaml_node_t *v = yaml_document_get_node (mc->doc, p->value);
      const char *key;
      int rc;

      if (want_scalar (mc, k, "resources") < 0)
        return -1;
      key = scalar (k);
      if (strcmp (key, "memory") == 0)
        {
          rc = get_size (mc, v, key, &r->memory_bytes);
          if (rc == 0 && r->memory_bytes < (16u << 20))
            rc = fail_at (mc, v, key, "at least 16Mi is needed to run a worker");
        }
      else if (strcmp (key, "cpu") == 0)
        {
          rc = get_cpu (mc, v, key, &r->cpu_millis);
          if (rc == 0 && r->cpu_millis < 10)
            rc = fail_at (mc, v, key, "at least 0.01 cores (10m) is needed");
        }
      else if (strcmp (key, "pids") == 0)
        {
          rc = get_u32 (mc, v, key, 65536, &r->pids);
          if (rc == 0 && r->pids < 4)
            rc = fail_at (mc, v, key, "at least 4 processes/threads are needed");
        }
      else if (strcmp (key, "tmp") == 0)
        rc = get_size (mc, v, key, &r->tmp_bytes);
      else if (strcmp (key, "nofile") == 0)
        {
          rc = get_u32 (mc, v, key, 1048576, &r->nofile);
          if (rc == 0 && r->nofile < 16)
            rc = fail_at (mc, v, key, "at least 16 file descriptors are needed");
        }
      else if (strcmp (key, "gpu") == 0)
        rc = get_bool (mc, v, key, &r->gpu);
      else
        rc = unknown_field (mc, k, resource_fields, FLINT_ARRAY_SIZE (resource_fields));
      if (rc < 0)
        return -1;
    }
  return 0;
}

const char *
flint_kind_name (flint_kind_t kind)
{
  switch (kind)
    {
    case FLINT_KIND_NATIVE: return "native";
    case FLINT_KIND_EXEC: return "exec";
    case FLINT_KIND_LLM: return "llm";
    }
  return "unknown";
}

bool
flint_name_valid (const char *name)
{
  size_t n = strlen (name);
  if (n == 0 || n > 63 || name[0] == '-' || name[n - 1] == '-')
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '-'))
      return false;
  return true;
}

bool
flint_relpath_valid (const char *path)
{
  const char *p = path;

  if (*p == '\0' || *p == '/' || strlen (path) > 1024)
    return false;
  while (*p)
    {
      const char *slash = strchr (p, '/');
      size_t len = slash ? (size_t) (slash - p) : strlen (p);
      if (len == 0 || (len == 2 && p[0] == '.' && p[1] == '.'))
        return false;
      p += len;
      if (*p == '/')
        p++;
    }
  return true;
}

static void
defaults (flint_manifest_t *m)
{
  m->kind = FLINT_KIND_NATIVE;
  m->snapshot = true;
  m->max_payload = 6u << 20;
  m->resources.memory_bytes = 0; /* unset: the default depends on the kind (walk) */
  m->resources.cpu_millis = 0;   /* unset: 1000, or no limit for llm (walk) */
  m->resources.pids = 128;
  m->resources.tmp_bytes = 64u << 20;
  m->resources.nofile = 1024;
  m->scale.max_replicas = 4;
  m->scale.scaledown_window_ms = 60000;
  m->scale.timeout_ms = 60000;
  m->scale.queue_size = 1000;
  m->scale.parked_replicas = 1;
}

int
flint_scale_validate (const flint_scale_t *s, flint_error_t *err)
{
  if (s->max_replicas == 0)
    return flint_error_set (err, FLINT_EINVAL, "`max_replicas` must be at least 1");
  if (s->min_replicas > s->max_replicas)
    return flint_error_set (err, FLINT_EINVAL, "`min_replicas` (%u) is larger than `max_replicas` (%u)",
                            s->min_replicas, s->max_replicas);
  if (s->max_concurrency == 0)
    return flint_error_set (err, FLINT_EINVAL, "`max_concurrency` must be at least 1");
  if (s->target_concurrency > s->max_concurrency)
    return flint_error_set (err, FLINT_EINVAL, "`target_concurrency` (%u) is larger than `max_concurrency` (%u)",
                            s->target_concurrency, s->max_concurrency);
  if (s->timeout_ms == 0)
    return flint_error_set (err, FLINT_EINVAL, "`timeout` must be positive");
  if (s->startup_timeout_ms == 0)
    return flint_error_set (err, FLINT_EINVAL, "`startup_timeout` must be positive");
  if (s->queue_size == 0)
    return flint_error_set (err, FLINT_EINVAL, "`queue_size` must be at least 1");
  return 0;
}

int
flint_scale_set (flint_scale_t *s, const char *key, const char *value, flint_error_t *err)
{
  yaml_document_t doc;
  yaml_mark_t mark = { 0, 0, 0 };
  mctx_t mc = { .doc = &doc, .path = "flint scale", .err = err };
  int node, r;

  /* Reuse the manifest's field parsers through a one-scalar document. */
  if (!yaml_document_initialize (&doc, NULL, NULL, NULL, 1, 1))
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  node = yaml_document_add_scalar (&doc, NULL, (yaml_char_t *) value, (int) strlen (value), YAML_PLAIN_SCALAR_STYLE);
  (void) mark;
  if (node == 0)
    {
      yaml_document_delete (&doc);
      return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
    }
  r = scale_field (&mc, s, key, yaml_document_get_node (&doc, node));
  yaml_document_delete (&doc);
  if (r == 1)
    return flint_error_set (err, FLINT_EINVAL,
                            "unknown knob `%s` (knobs: min_replicas, max_replicas, target_concurrency, "
                            "max_concurrency, buffer_replicas, scaledown_window, timeout, "
                            "startup_timeout, retries, queue_size, parked_replicas)", key);
  if (r < 0)
    {
      /* the message carries a fake position: strip "flint scale:1:1: " */
      const char *p = strstr (err->msg, "field ");
      if (p)
        memmove (err->msg, p, strlen (p) + 1);
      return -1;
    }
  return 0;
}

static int
walk (mctx_t *mc, flint_manifest_t *m)
{
  yaml_node_t *root = yaml_document_get_root_node (mc->doc);
  const yaml_node_t *knob_nodes[FLINT_ARRAY_SIZE (top_fields)] = { NULL };
  bool have_max_conc = false, have_startup = false;
  const yaml_node_t *name_node = NULL, *root_node = root;

  if (root == NULL)
    return fail_at (mc, NULL, NULL, "the manifest is empty (it needs at least `name:`)");
  if (root->type != YAML_MAPPING_NODE)
    return fail_at (mc, root, NULL, "the manifest must be a mapping of fields (name: ..., kind: ...)");

  for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++)
    {
      yaml_node_t *k = yaml_document_get_node (mc->doc, p->key);
      yaml_node_t *v = yaml_document_get_node (mc->doc, p->value);
      const char *key;
      int rc = 0;

      if (want_scalar (mc, k, "(key)") < 0)
        return -1;
      key = scalar (k);
      for (yaml_node_pair_t *q = root->data.mapping.pairs.start; q < p; q++)
        if (strcmp (scalar (yaml_document_get_node (mc->doc, q->key)), key) == 0)
          return fail_at (mc, k, key, "given twice");
      for (size_t i = 0; i < FLINT_ARRAY_SIZE (top_fields); i++)
        if (strcmp (top_fields[i], key) == 0)
          knob_nodes[i] = v;

      if (strcmp (key, "name") == 0)
        {
          rc = get_string (mc, v, key, &m->name);
          name_node = v;
          if (rc == 0 && !flint_name_valid (m->name))
            rc = fail_at (mc, v, key, "`%s` is not a valid endpoint name (1-63 of a-z, 0-9 and '-', "
                          "not starting or ending with '-')", m->name);
        }
      else if (strcmp (key, "kind") == 0)
        {
          if ((rc = want_scalar (mc, v, key)) == 0)
            {
              if (strcmp (scalar (v), "native") == 0)
                m->kind = FLINT_KIND_NATIVE;
              else if (strcmp (scalar (v), "exec") == 0)
                m->kind = FLINT_KIND_EXEC;
              else if (strcmp (scalar (v), "llm") == 0)
                m->kind = FLINT_KIND_LLM;
              else
                rc = fail_at (mc, v, key, "expected native, exec or llm, got `%s`", scalar (v));
            }
        }
      else if (strcmp (key, "function") == 0)
        {
          rc = get_string (mc, v, key, &m->function);
          if (rc == 0 && !flint_relpath_valid (m->function))
            rc = fail_at (mc, v, key, "`%s` must be a relative path inside the bundle", m->function);
        }
      else if (strcmp (key, "args") == 0)
        rc = get_string_list (mc, v, key, &m->args, &m->n_args);
      else if (strcmp (key, "model") == 0 || strcmp (key, "draft_model") == 0)
        {
          char **dst = key[0] == 'm' ? &m->model : &m->draft_model;
          rc = get_string (mc, v, key, dst);
          if (rc == 0 && strcmp (*dst, ".") != 0 && !flint_relpath_valid (*dst))
            rc = fail_at (mc, v, key, "`%s` must be a relative path inside the bundle", *dst);
        }
      else if (strcmp (key, "config") == 0)
        rc = get_map (mc, v, key, &m->config, &m->n_config);
      else if (strcmp (key, "weights") == 0)
        {
          rc = get_map (mc, v, key, &m->weights, &m->n_weights);
          for (size_t i = 0; rc == 0 && i < m->n_weights; i++)
            {
              if (!flint_name_valid (m->weights[i].key))
                rc = fail_at (mc, v, key, "weight name `%s` must be 1-63 of a-z, 0-9 and '-'", m->weights[i].key);
              else if (!flint_relpath_valid (m->weights[i].value))
                rc = fail_at (mc, v, key, "weight `%s`: `%s` must be a relative path inside the bundle",
                              m->weights[i].key, m->weights[i].value);
            }
        }
      else if (strcmp (key, "secrets") == 0)
        {
          rc = get_string_list (mc, v, key, &m->secrets, &m->n_secrets);
          for (size_t i = 0; rc == 0 && i < m->n_secrets; i++)
            if (!flint_name_valid (m->secrets[i]))
              rc = fail_at (mc, v, key, "`%s` is not a valid secret name", m->secrets[i]);
        }
      else if (strcmp (key, "resources") == 0)
        rc = parse_resources (mc, v, &m->resources);
      else if (strcmp (key, "network") == 0)
        rc = get_bool (mc, v, key, &m->network);
      else if (strcmp (key, "snapshot") == 0)
        rc = get_bool (mc, v, key, &m->snapshot);
      else if (strcmp (key, "max_payload") == 0)
        {
          rc = get_size (mc, v, key, &m->max_payload);
          if (rc == 0 && (m->max_payload < 1024 || m->max_payload > (1ull << 30)))
            rc = fail_at (mc, v, key, "must be between 1Ki and 1Gi");
        }
      else if (strcmp (key, "canary") == 0)
        rc = get_string (mc, v, key, &m->canary);
      else if (strcmp (key, "threads") == 0)
        {
          rc = get_u32 (mc, v, key, 1024, &m->threads);
          if (rc == 0 && m->threads == 0)
            rc = fail_at (mc, v, key, "must be at least 1");
        }
      else
        {
          rc = scale_field (mc, &m->scale, key, v);
          if (rc == 1)
            rc = unknown_field (mc, k, top_fields, FLINT_ARRAY_SIZE (top_fields));
          if (strcmp (key, "max_concurrency") == 0)
            have_max_conc = true;
          if (strcmp (key, "startup_timeout") == 0)
            have_startup = true;
        }
      if (rc < 0)
        return -1;
    }

  if (m->name == NULL)
    return fail_at (mc, root_node, NULL, "field `name` is required");
  (void) name_node;
  if (m->kind == FLINT_KIND_LLM)
    {
      if (m->model == NULL)
        m->model = xstrndup (".", 1);
      if (m->function)
        return fail_at (mc, root_node, "function", "`kind: llm` serves `model:`, not a function");
    }
  else
    {
      if (m->function == NULL)
        return fail_at (mc, root_node, NULL, "field `function` is required for `kind: %s` (the %s in the bundle)",
                        flint_kind_name (m->kind), m->kind == FLINT_KIND_NATIVE ? "shared object" : "executable");
      if (m->model || m->draft_model)
        return fail_at (mc, root_node, "model", "only `kind: llm` takes a model");
    }
  if (m->n_args && m->kind != FLINT_KIND_EXEC)
    return fail_at (mc, root_node, "args", "only `kind: exec` takes arguments");
  if (!have_max_conc)
    m->scale.max_concurrency = m->kind == FLINT_KIND_LLM ? 8 : 1;
  if (m->scale.target_concurrency == 0)
    m->scale.target_concurrency = m->scale.max_concurrency;
  if (!have_startup)
    m->scale.startup_timeout_ms = m->kind == FLINT_KIND_LLM ? 300000 : 60000;
  if (m->resources.memory_bytes == 0)
    m->resources.memory_bytes = m->kind == FLINT_KIND_LLM ? 4ull << 30 : 256u << 20;
  /* the model engine computes on every core it may use (`cpu` only goes down to 10m, so 0
   * means unset here) */
  if (m->resources.cpu_millis == 0 && m->kind != FLINT_KIND_LLM)
    m->resources.cpu_millis = 1000;
  if (flint_scale_validate (&m->scale, mc->err) < 0)
    {
      /* point at the knob the rule names first ("`min_replicas` (5) is larger than ...") */
      char what[FLINT_ERROR_MSG_MAX], knob[64] = "";
      const yaml_node_t *at = root_node;
      const char *q = strchr (mc->err->msg, '`');
      const char *e = q ? strchr (q + 1, '`') : NULL;

      snprintf (what, sizeof what, "%s", mc->err->msg);
      if (e && (size_t) (e - q - 1) < sizeof knob)
        memcpy (knob, q + 1, (size_t) (e - q - 1));
      for (size_t i = 0; i < FLINT_ARRAY_SIZE (top_fields); i++)
        if (knob_nodes[i] && strcmp (top_fields[i], knob) == 0)
          at = knob_nodes[i];
      return fail_at (mc, at, knob[0] ? knob : NULL, "%s", what);
    }
  return 0;
}

int
flint_manifest_parse (const char *text, size_t len, const char *path, flint_manifest_t **out,
                      flint_error_t *err)
{
  yaml_parser_t parser;
  yaml_document_t doc;
  flint_manifest_t *m;
  mctx_t mc = { .doc = &doc, .path = path ? path : "flint.yaml", .err = err };
  int r;

  if (len > MANIFEST_MAX_BYTES)
    return flint_error_set (err, FLINT_EINVAL, "%s: the manifest is larger than 1 MiB", mc.path);
  if (!yaml_parser_initialize (&parser))
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  yaml_parser_set_input_string (&parser, (const unsigned char *) text, len);
  if (!yaml_parser_load (&parser, &doc))
    {
      r = flint_error_set (err, FLINT_EINVAL, "%s:%zu:%zu: invalid YAML: %s%s%s", mc.path,
                           parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                           parser.problem ? parser.problem : "syntax error",
                           parser.context ? " " : "", parser.context ? parser.context : "");
      yaml_parser_delete (&parser);
      return r;
    }
  yaml_parser_delete (&parser);

  m = calloc (1, sizeof *m);
  if (m == NULL)
    abort ();
  defaults (m);
  r = walk (&mc, m);
  yaml_document_delete (&doc);
  if (r < 0)
    {
      flint_manifest_free (m);
      return -1;
    }
  *out = m;
  return 0;
}

void
flint_manifest_free (flint_manifest_t *m)
{
  if (m == NULL)
    return;
  free (m->name);
  free (m->function);
  for (size_t i = 0; i < m->n_args; i++)
    free (m->args[i]);
  free (m->args);
  free (m->model);
  free (m->draft_model);
  for (size_t i = 0; i < m->n_config; i++)
    free (m->config[i].key), free (m->config[i].value);
  free (m->config);
  for (size_t i = 0; i < m->n_weights; i++)
    free (m->weights[i].key), free (m->weights[i].value);
  free (m->weights);
  for (size_t i = 0; i < m->n_secrets; i++)
    free (m->secrets[i]);
  free (m->secrets);
  free (m->canary);
  free (m);
}
