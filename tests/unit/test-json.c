/* Unit tests of common/json.c and buf.c's JSON output. */
#include "tap.h"
#include "flint/buf.h"
#include "flint/json.h"

static const flint_json_t *
parse (const char *s, flint_json_doc_t **doc, char *err)
{
  if (flint_json_parse (s, strlen (s), doc, err, 200) < 0)
    return NULL;
  return flint_json_root (*doc);
}

int
main (void)
{
  flint_json_doc_t *doc = NULL;
  char err[200];
  const flint_json_t *r;
  const char *s;
  size_t len;
  int64_t i;
  double d;
  bool b;

  r = parse ("{\"a\": 1, \"b\": [true, false, null], \"c\": \"x\\u00e9\\ud83d\\ude00\", \"d\": -2.5e3}", &doc, err);
  ok (r && r->type == FLINT_JSON_OBJECT && r->len == 4, "object with 4 members");
  ok (flint_json_get_int (r, "a", &i) && i == 1, "integer member");
  ok (flint_json_get (r, "b")->len == 3 && flint_json_get (r, "b")->items[2]->type == FLINT_JSON_NULL, "array");
  ok (flint_json_get_string (r, "c", &s, &len) && len == 7 && strcmp (s, "x\xc3\xa9\xf0\x9f\x98\x80") == 0,
      "escapes and surrogate pairs decode to UTF-8");
  ok (flint_json_get_number (r, "d", &d) && d == -2500.0, "exponent");
  ok (!flint_json_get_bool (r, "a", &b), "typed accessor refuses the wrong type");
  flint_json_doc_free (doc);

  ok (parse ("{\"a\":1,}", &doc, err) == NULL, "trailing comma rejected");
  contains (err, "line 1, column 8", "error position: %s", err);
  ok (parse ("[1, 2", &doc, err) == NULL, "unterminated array rejected");
  ok (parse ("\"\\ud800\"", &doc, err) == NULL, "lone surrogate rejected");
  ok (parse ("01", &doc, err) == NULL, "leading zero rejected");
  ok (parse ("[1e999]", &doc, err) == NULL && strstr (err, "column 2: number out of range"),
      "a number beyond double range rejected, not made infinite: %s", err);
  ok (parse ("-1e-999", &doc, err) != NULL, "an underflowing number is zero, not an error");
  flint_json_doc_free (doc);
  ok (parse ("{} x", &doc, err) == NULL, "trailing garbage rejected");
  ok (parse ("\"a\nb\"", &doc, err) == NULL, "raw control character in string rejected");
  {
    char deep[600];
    memset (deep, '[', 300);
    memset (deep + 300, ']', 300);
    deep[600 - 1] = ']';
    ok (flint_json_parse (deep, 600, &doc, err, sizeof err) < 0 && strstr (err, "nesting"), "depth limit: %s", err);
  }
  r = parse ("{\"k\":1,\"k\":2}", &doc, err);
  ok (r && flint_json_get_int (r, "k", &i) && i == 2, "duplicate keys: the last wins");
  flint_json_doc_free (doc);

  {
    flint_buf_t b2 = FLINT_BUF_INIT;
    flint_buf_json_string (&b2, "a\"b\\\n\x01\xff", 7);
    is_str (b2.data, "\"a\\\"b\\\\\\n\\u0001\xef\xbf\xbd\"", "JSON string escaping, invalid UTF-8 replaced");
    flint_buf_free (&b2);
  }
  return tap_done ();
}
