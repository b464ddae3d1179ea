/* Unit tests of runtime/manifest.c: defaults, every error names file:line:col and the field. */
#include "tap.h"
#include "manifest.h"

static int
parse (const char *yaml, flint_manifest_t **m, flint_error_t *err)
{
  flint_error_clear (err);
  return flint_manifest_parse (yaml, strlen (yaml), "dir/flint.yaml", m, err);
}

int
main (void)
{
  flint_manifest_t *m = NULL;
  flint_error_t err = FLINT_ERROR_INIT;
  flint_scale_t s;

  ok (parse ("name: echo\nfunction: echo.so\n", &m, &err) == 0, "minimal manifest parses");
  ok (m && m->kind == FLINT_KIND_NATIVE && m->scale.min_replicas == 0 && m->scale.max_replicas == 4
          && m->scale.max_concurrency == 1 && m->resources.memory_bytes == 256u << 20 && m->snapshot,
      "defaults");
  flint_manifest_free (m);

  ok (parse ("name: big\nkind: llm\nmodel: m\nmax_concurrency: 16\nresources:\n  memory: 8Gi\n  cpu: 1500m\n", &m,
             &err)
          == 0,
      "llm manifest parses");
  ok (m && m->resources.memory_bytes == 8ull << 30 && m->resources.cpu_millis == 1500 && m->scale.max_concurrency == 16
          && m->scale.startup_timeout_ms == 300000,
      "sizes, millicores, llm defaults");
  flint_manifest_free (m);

  ok (parse ("name: x\nfunction: f.so\nresources:\n  memory: lots\n", &m, &err) < 0, "bad size rejected");
  contains (err.msg, "dir/flint.yaml:4:11: field `memory`", "names file, line, column and field: %s", err.msg);
  ok (err.code == FLINT_EINVAL, "INVALID_ARGUMENT");

  ok (parse ("name: x\nfunction: f.so\nmin_replica: 1\n", &m, &err) < 0, "unknown field rejected");
  contains (err.msg, "did you mean `min_replicas`", "suggests the right name: %s", err.msg);

  ok (parse ("name: Bad_Name\nfunction: f.so\n", &m, &err) < 0, "bad name rejected");
  contains (err.msg, ":1:7: field `name`", "%s", err.msg);

  ok (parse ("name: x\nfunction: ../escape.so\n", &m, &err) < 0, "path escaping the bundle rejected");
  ok (parse ("name: x\n", &m, &err) < 0, "native without function rejected");
  contains (err.msg, "field `function` is required", "%s", err.msg);
  ok (parse ("name: x\nfunction: f\nmin_replicas: 5\nmax_replicas: 2\n", &m, &err) < 0, "min > max rejected");
  contains (err.msg, "min_replicas", "%s", err.msg);
  ok (parse ("name: [x\n", &m, &err) < 0, "YAML syntax error");
  contains (err.msg, "dir/flint.yaml:", "syntax error has a position: %s", err.msg);
  ok (parse ("", &m, &err) < 0, "empty manifest rejected");
  ok (parse ("name: x\nname: y\nfunction: f\n", &m, &err) < 0, "duplicate field rejected");
  ok (parse ("name: x\nfunction: f\ntimeout: 5 parsecs\n", &m, &err) < 0, "bad duration rejected");
  contains (err.msg, "field `timeout`", "%s", err.msg);

  memset (&s, 0, sizeof s);
  ok (flint_scale_set (&s, "scaledown_window", "90s", &err) == 0 && s.scaledown_window_ms == 90000, "scale knob set");
  ok (flint_scale_set (&s, "max_replica", "3", &err) < 0, "unknown knob rejected");
  ok (flint_scale_set (&s, "max_replicas", "-1", &err) < 0, "negative knob rejected");
  contains (err.msg, "max_replicas", "%s", err.msg);

  ok (flint_name_valid ("a-b-9") && !flint_name_valid ("-a") && !flint_name_valid ("a_b") && !flint_name_valid (""),
      "endpoint names");
  ok (flint_relpath_valid ("a/b.so") && !flint_relpath_valid ("/a") && !flint_relpath_valid ("a/../b")
          && !flint_relpath_valid ("a//b"),
      "bundle-relative paths");
  return tap_done ();
}
