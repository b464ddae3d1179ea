/* libFuzzer target: the tokenizer (worker/engine/tokenizer.c, pretok.c): tokenizer.json loading
 * and encode/decode.
 *
 * Input layout: first byte 0x00-0x03 → the rest is text encoded by a built-in byte-level
 * tokenizer (pre-tokenizer none, gpt2, llama3, qwen2 by that byte) with merges and added tokens;
 * anything else → the input is a tokenizer.json, optionally followed by a NUL and a text to
 * encode with it. Decoding what was encoded must give the text back for the built-in tokenizer
 * (it has no special tokens the text could contain). */
#include "pretok.h"
#include "tokenizer.h"
#include "flint/buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static flint_tokenizer_t *builtin[4];

/* A complete byte-level vocabulary, a few merges and two added tokens. */
static flint_tokenizer_t *
make_builtin (int kind)
{
  static const char *const merges[] = { "t h", "th e", "Ġ the", "i n", "a n", "Ġ a", "in g", "e r", "o n", "Ġ t" };
  flint_buf_t b = FLINT_BUF_INIT;
  flint_error_t err = FLINT_ERROR_INIT;
  flint_tokenizer_t *t = NULL;
  uint32_t n = 0, id = 256;
  const char *extra[] = { "th", "the", "Ġthe", "in", "an", "Ġa", "ing", "er", "on", "Ġt" };

  flint_buf_puts (&b, "{\"model\":{\"type\":\"BPE\",\"vocab\":{");
  for (int c = 0; c < 256; c++)
    {
      bool printable = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
      uint32_t cp = printable ? (uint32_t) c : 256 + n++;
      char s[4];
      size_t l = 0;
      if (cp < 0x80)
        s[l++] = (char) cp;
      else
        {
          s[l++] = (char) (0xC0 | (cp >> 6));
          s[l++] = (char) (0x80 | (cp & 0x3F));
        }
      flint_buf_json_string (&b, s, l);
      flint_buf_printf (&b, ":%d,", c);
    }
  for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
    {
      flint_buf_json_string (&b, extra[i], strlen (extra[i]));
      flint_buf_printf (&b, ":%u%s", id++, i + 1 < sizeof extra / sizeof extra[0] ? "," : "");
    }
  flint_buf_puts (&b, "},\"merges\":[");
  for (size_t i = 0; i < sizeof merges / sizeof merges[0]; i++)
    {
      flint_buf_json_string (&b, merges[i], strlen (merges[i]));
      if (i + 1 < sizeof merges / sizeof merges[0])
        flint_buf_putc (&b, ',');
    }
  flint_buf_printf (&b, "],\"ignore_merges\":%s},", kind == 2 ? "true" : "false");
  if (kind == 0)
    flint_buf_puts (&b, "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"use_regex\":false},");
  else if (kind == 1)
    flint_buf_puts (&b, "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"use_regex\":true},");
  else
    {
      flint_buf_puts (&b, "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":");
      flint_buf_json_string (&b, flint__pretok_regex (kind == 2 ? FLINT_PRETOK_LLAMA3 : FLINT_PRETOK_QWEN2),
                             strlen (flint__pretok_regex (kind == 2 ? FLINT_PRETOK_LLAMA3 : FLINT_PRETOK_QWEN2)));
      flint_buf_puts (&b, "},\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\",\"use_regex\":false}]},");
    }
  flint_buf_printf (&b, "\"added_tokens\":[{\"id\":%u,\"content\":\"<|x|>\",\"special\":false},"
                        "{\"id\":%u,\"content\":\"<|y|>\",\"special\":false,\"lstrip\":true}]}", id, id + 1);
  if (flint_tokenizer_load ("builtin.json", b.data, b.len, &t, &err) < 0)
    {
      fprintf (stderr, "fuzz-tokenizer: built-in tokenizer: %s\n", err.msg);
      abort ();
    }
  flint_buf_free (&b);
  return t;
}

static void
roundtrip (const flint_tokenizer_t *t, const char *text, size_t len, bool must_match)
{
  flint_tokens_t ids = { 0 };
  flint_buf_t out = FLINT_BUF_INIT;

  if (flint_tokenizer_encode (t, text, len, true, &ids) < 0)
    abort ();
  for (size_t i = 0; i < ids.n; i++)
    {
      if (ids.ids[i] < 0 || (uint32_t) ids.ids[i] >= flint_tokenizer_size (t))
        abort ();
      flint_tokenizer_decode (t, ids.ids[i], false, &out);
    }
  /* lstrip may eat whitespace before <|y|>: compare only when the text has none */
  if (must_match && !memmem (text, len, "<|y|>", 5) && (out.len != len || (len && memcmp (out.data, text, len) != 0)))
    abort ();
  flint_tokens_free (&ids);
  flint_buf_free (&out);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size >= 1 && data[0] < 4)
    {
      if (builtin[data[0]] == NULL)
        builtin[data[0]] = make_builtin (data[0]);
      roundtrip (builtin[data[0]], (const char *) data + 1, size - 1, true);
      return 0;
    }
  {
    const uint8_t *nul = memchr (data, 0, size);
    size_t jlen = nul ? (size_t) (nul - data) : size;
    flint_tokenizer_t *t = NULL;
    flint_error_t err = FLINT_ERROR_INIT;
    if (flint_tokenizer_load ("fuzz.json", (const char *) data, jlen, &t, &err) < 0)
      {
        if (err.msg[0] == '\0')
          abort ();
        return 0;
      }
    if (nul)
      roundtrip (t, (const char *) nul + 1, size - jlen - 1, false);
    else
      roundtrip (t, "Hello world, it's 12345 caf\xc3\xa9!\n\n", 27, false);
    flint_tokenizer_free (t);
  }
  return 0;
}
