/* Unit tests of runtime/manifest.c: defaults, every error names file:line:col and the field. */
#include "tap.h"
#include "manifest.h"
#include "flint/buf.h"
#include "flint/util.h"

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

  ok (parse ("name: small\nkind: llm\nresources:\n  memory: 256Mi\n", &m, &err) == 0
          && m->resources.memory_bytes == 256u << 20,
      "an llm's explicit 256Mi is kept (only an absent memory gets the 4Gi llm default)");
  flint_manifest_free (m);
  ok (parse ("name: big\nkind: llm\n", &m, &err) == 0 && m->resources.memory_bytes == 4ull << 30, "llm default 4Gi");
  flint_manifest_free (m);

  ok (parse ("name: p\nfunction: p.so\nmax_concurrency: 32\nthreads: 1\n", &m, &err) == 0 && m->threads == 1
          && m->scale.max_concurrency == 32,
      "threads: 1 with a higher max_concurrency (pipelined into one invoke thread)");
  flint_manifest_free (m);
  ok (parse ("name: p\nfunction: p.so\n", &m, &err) == 0 && m->threads == 0, "threads unset: 0 (= max_concurrency)");
  flint_manifest_free (m);
  ok (parse ("name: p\nfunction: p.so\nthreads: 0\n", &m, &err) < 0, "threads: 0 rejected");
  contains (err.msg, "field `threads`: must be at least 1", "%s", err.msg);

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
  contains (err.msg, "dir/flint.yaml:3:15: field `min_replicas`", "a cross-field rule points at its knob: %s", err.msg);
  {
    /* many config keys parse in linear time (the duplicate check is a hash set) */
    flint_buf_t big = FLINT_BUF_INIT;
    uint64_t t0;
    flint_buf_printf (&big, "name: x\nfunction: f\nconfig:\n");
    for (int i = 0; i < 60000; i++)
      flint_buf_printf (&big, "  k%d: v\n", i);
    t0 = flint_now_ns ();
    ok (flint_manifest_parse (big.data, big.len, "big.yaml", &m, &err) == 0 && m->n_config == 60000,
        "60000 config keys parse");
    ok (flint_now_ns () - t0 < 5000000000ull, "in well under 5 s (%.0f ms)", (double) (flint_now_ns () - t0) / 1e6);
    flint_manifest_free (m);
    flint_buf_printf (&big, "  k17: again\n");
    ok (flint_manifest_parse (big.data, big.len, "big.yaml", &m, &err) < 0, "a duplicate config key is refused");
    contains (err.msg, "`k17` is given twice", "%s", err.msg);
    flint_buf_free (&big);
  }
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
