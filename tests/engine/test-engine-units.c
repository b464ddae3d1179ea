/* Unit tests of the engine's parsers and pieces: safetensors validation, config.json, the
 * pre-tokenizers, tokenizer.json loading, UTF-8 helpers, sampling, chat templates, the thread
 * pool and the CPU backend's checkpoint hooks. Model-level checks against the numpy reference
 * are in test_engine.py. */
#include "tap.h"
#include "backend.h"
#include "chat.h"
#include "model.h"
#include "pool.h"
#include "pretok.h"
#include "safetensors.h"
#include "sampler.h"
#include "tokenizer.h"
#include "unicode.h"
#include "flint/buf.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- safetensors --------------------------------------------------------------------------- */

/* A file: 8-byte length, the header, then `data_len` zero bytes. */
static uint8_t *
st_file (const char *header, size_t data_len, size_t *len_out)
{
  size_t h = strlen (header), len = 8 + h + data_len;
  uint8_t *p = calloc (1, len);
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t) ((uint64_t) h >> (8 * i));
  memcpy (p + 8, header, h);
  *len_out = len;
  return p;
}

static const char *
st_error (const char *header, size_t data_len)
{
  static flint_error_t err;
  size_t len;
  uint8_t *p = st_file (header, data_len, &len);
  flint_st_file_t *f = NULL;
  flint_error_clear (&err);
  if (flint_st_parse ("t.safetensors", p, len, &f, &err) == 0)
    {
      flint_st_free (f);
      free (p);
      return NULL;
    }
  free (p);
  return err.msg;
}

static void
test_safetensors (void)
{
  size_t len;
  uint8_t *p = st_file ("{\"b\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[8,20]},"
                        "\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                        "\"__metadata__\":{\"format\":\"pt\"}}", 20, &len);
  flint_st_file_t *f = NULL;
  flint_error_t err = FLINT_ERROR_INIT;
  const flint_st_tensor_t *t;

  ok (flint_st_parse ("t.safetensors", p, len, &f, &err) == 0, "valid file parses: %s", err.msg);
  ok (f && f->n == 2, "two tensors");
  t = f ? flint_st_find (f, "b") : NULL;
  ok (t && t->dtype == FLINT_DTYPE_F16 && t->ndim == 2 && t->shape[1] == 3 && t->bytes == 12, "tensor b described");
  ok (t && t->data == f->data + 8, "data points into the buffer");
  ok (f && flint_st_find (f, "zz") == NULL, "missing name not found");
  flint_st_free (f);
  free (p);

  contains (st_error ("{}", 0) ? "" : "ok", "ok", "an empty header is a valid (empty) file");
  {
    flint_st_file_t *g = NULL;
    flint_error_clear (&err);
    ok (flint_st_parse ("t.safetensors", "\x01\x00", 2, &g, &err) < 0 && strstr (err.msg, "too short"),
        "2-byte file: %s", err.msg);
    ok (flint_st_parse ("t.safetensors", "\xff\xff\xff\xff\xff\xff\xff\x7f{}", 10, &g, &err) < 0
        && strstr (err.msg, "exceeds the limit"), "huge header length: %s", err.msg);
    ok (flint_st_parse ("t.safetensors", "\x40\x00\x00\x00\x00\x00\x00\x00{}", 10, &g, &err) < 0
        && strstr (err.msg, "truncated"), "header past the end: %s", err.msg);
  }
  contains (st_error ("[1,2]", 0), "not a JSON object", "header must be an object");
  contains (st_error ("{\"a\":", 0), "`t.safetensors`: header: line 1", "malformed JSON with its position");
  contains (st_error ("{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1), "unknown dtype `Q4`",
            "unknown dtype");
  contains (st_error ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4),
            "tensor `a`: field `data_offsets`: 4 bytes, but dtype F32 and shape make 8", "size vs dtype x shape");
  contains (st_error ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4), "past the data section",
            "offsets past the end");
  contains (st_error ("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6), "overlaps", "overlap");
  contains (st_error ("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[6,10]}}", 10), "hole of 2 bytes", "hole");
  contains (st_error ("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 9), "5 bytes after the last",
            "trailing bytes");
  contains (st_error ("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                      "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8), "appears twice", "duplicate");
  contains (st_error ("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", 4),
            "overflows", "element count overflow");
  contains (st_error ("{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4), "dimension 0",
            "negative dimension");
  contains (st_error ("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,0]}}", 4), "begin 4 is after end 0",
            "reversed offsets");
  contains (st_error ("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4],\"x\":1}}", 4),
            "unknown field `x`", "unknown field");
  contains (st_error ("{\"__metadata__\":{\"k\":1}}", 0), "__metadata__", "metadata must be strings");
}

/* ---- config.json ---------------------------------------------------------------------------- */

static const char *
cfg_error (const char *json)
{
  static flint_error_t err;
  flint_model_config_t c;
  flint_error_clear (&err);
  if (flint__model_config_parse ("config.json", json, strlen (json), &c, &err) == 0)
    return "(parsed)";
  return err.msg;
}

#define CFG_BASE "\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100"

static void
test_config (void)
{
  flint_model_config_t c;
  flint_error_t err = FLINT_ERROR_INIT;
  const char *ok_cfg = "{\"architectures\":[\"Qwen2ForCausalLM\"]," CFG_BASE ",\"num_key_value_heads\":2,"
                       "\"eos_token_id\":[5,6],\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
                       "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":64}}";
  double inv[16];

  ok (flint__model_config_parse ("config.json", ok_cfg, strlen (ok_cfg), &c, &err) == 0, "config parses: %s", err.msg);
  ok (c.arch == FLINT_ARCH_QWEN2 && c.qkv_bias && c.head_dim == 16 && c.kv_heads == 2 && c.n_eos == 2
      && c.eos_ids[1] == 6 && c.rope_scaling == FLINT_ROPE_LLAMA3 && c.max_pos == 2048,
      "fields and defaults (qwen2 has q/k/v biases, head_dim from hidden/heads)");
  flint__rope_inv_freq (&c, inv);
  ok (fabs (inv[0] - 1.0) < 1e-12, "the highest frequency is kept by llama3 scaling");
  ok (fabs (inv[7] - pow (10000.0, -14.0 / 16) / 8.0) < 1e-12, "the lowest frequency is divided by the factor");
  contains (cfg_error ("{\"architectures\":[\"BertModel\"]," CFG_BASE "}"), "unsupported architecture `BertModel`",
            "unknown architecture");
  contains (cfg_error ("{\"model_type\":\"llama\",\"hidden_size\":64}"), "field `intermediate_size`: missing",
            "missing field");
  contains (cfg_error ("{\"model_type\":\"llama\"," CFG_BASE ",\"num_key_value_heads\":3}"),
            "field `num_key_value_heads`: 3 does not divide", "kv heads must divide heads");
  contains (cfg_error ("{\"model_type\":\"llama\"," CFG_BASE ",\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4}}"),
            "`yarn` is not supported", "yarn refused");
  contains (cfg_error ("{\"model_type\":\"llama\"," CFG_BASE ",\"hidden_act\":\"gelu\"}"), "field `hidden_act`",
            "other activations refused");
  contains (cfg_error ("{\"model_type\":\"llama\"," CFG_BASE ",\"eos_token_id\":1000}"), "field `eos_token_id`",
            "eos beyond the vocabulary");
  contains (cfg_error ("{\"model_type\":\"mistral\"," CFG_BASE ",\"sliding_window\":4096}"), "(parsed)",
            "mistral with a window");
  contains (cfg_error ("[]"), "expected a JSON object", "not an object");
}

/* ---- pre-tokenizers ------------------------------------------------------------------------- */

static char *
split (flint_pretok_t kind, const char *s)
{
  static char out[1024];
  size_t len = strlen (s), i = 0, o = 0;
  while (i < len)
    {
      size_t j = flint__pretok_next (kind, (const uint8_t *) s, len, i);
      o += (size_t) snprintf (out + o, sizeof out - o, "%s%.*s", o ? "|" : "", (int) (j - i), s + i);
      i = j;
    }
  out[o] = '\0';
  return out;
}

static void
test_pretok (void)
{
  is_str (split (FLINT_PRETOK_GPT2, "Hello world, it's  x\n\n y"), "Hello| world|,| it|'s| | x|\n\n| y", "gpt2");
  is_str (split (FLINT_PRETOK_GPT2, "IT'S 12345 ?? "), "IT|'|S| 12345| ??| ", "gpt2 contractions are lower-case only");
  is_str (split (FLINT_PRETOK_LLAMA3, "IT'S 12345 ?? "), "IT|'S| |123|45| ??| ", "llama3: (?i) contractions, 3 digits");
  is_str (split (FLINT_PRETOK_QWEN2, "a 123"), "a| |1|2|3", "qwen2: single digits");
  is_str (split (FLINT_PRETOK_LLAMA3, "ab\r\n\r\n  \tz!!\n"), "ab|\r\n\r\n|  |\tz|!!\n", "llama3 newlines");
  is_str (split (FLINT_PRETOK_LLAMA3, "x  \n"), "x|  \n", "whitespace through the last newline");
  is_str (split (FLINT_PRETOK_LLAMA3, "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac"), "caf\xc3\xa9| \xe6\x97\xa5\xe6\x9c\xac",
          "non-ASCII letters");
  is_str (split (FLINT_PRETOK_GPT2, "a\xff\xfe b"), "a|\xff\xfe| b", "invalid UTF-8 bytes are punctuation");
  ok (flint__pretok_from_regex (flint__pretok_regex (FLINT_PRETOK_QWEN2)) == FLINT_PRETOK_QWEN2, "regex round trip");
  ok (flint__pretok_from_regex ("\\w+") < 0, "unknown regex refused");
}

/* ---- tokenizer ------------------------------------------------------------------------------- */

/* vocab: the 256 byte tokens, then "ab" (256), "abc" (257); added <s> (258, special) and
 * <x> (259) */
static char *
tok_json (const char *extra_model, const char *pre)
{
  flint_buf_t b = FLINT_BUF_INIT;
  uint32_t n = 0;
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
  flint_buf_printf (&b, "\"ab\":256,\"abc\":257}%s},", extra_model);
  flint_buf_printf (&b, "\"pre_tokenizer\":%s,", pre);
  flint_buf_puts (&b, "\"added_tokens\":[{\"id\":258,\"content\":\"<s>\",\"special\":true},"
                      "{\"id\":259,\"content\":\"<x>\",\"special\":false,\"rstrip\":true}],"
                      "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}},"
                      "{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{\"<s>\":{\"ids\":[258]}}}}");
  return flint_buf_steal (&b, NULL);
}

static const char *
tok_error (const char *json)
{
  static flint_error_t err;
  flint_tokenizer_t *t = NULL;
  flint_error_clear (&err);
  if (flint_tokenizer_load ("tokenizer.json", json, strlen (json), &t, &err) == 0)
    {
      flint_tokenizer_free (t);
      return "(loaded)";
    }
  return err.msg;
}

static void
test_tokenizer (void)
{
  char *j = tok_json (",\"merges\":[\"a b\",\"ab c\"]", "{\"type\":\"ByteLevel\",\"use_regex\":true}");
  flint_tokenizer_t *t = NULL;
  flint_error_t err = FLINT_ERROR_INIT;
  flint_tokens_t ids = { 0 };
  flint_buf_t out = FLINT_BUF_INIT;

  ok (flint_tokenizer_load ("tokenizer.json", j, strlen (j), &t, &err) == 0, "tokenizer loads: %s", err.msg);
  if (t)
    {
      ok (flint_tokenizer_encode (t, "abc ab<x>  a", 12, true, &ids) == 0, "encode");
      /* <s> | abc | " ab" = ' ' + ab (no merge for " ab") | <x> eats the spaces after it | a */
      ok (ids.n == 6 && ids.ids[0] == 258 && ids.ids[1] == 257 && ids.ids[2] == ' ' && ids.ids[3] == 256
          && ids.ids[4] == 259 && ids.ids[5] == 'a', "ids: BOS, merged abc, space, ab, added <x> with rstrip, a (%zu)",
          ids.n);
      for (size_t i = 0; i < ids.n; i++)
        flint_tokenizer_decode (t, ids.ids[i], true, &out);
      is_str (out.data, "abc ab<x>a", "decode skips the special BOS; rstrip ate the spaces");
      ok (flint_tokenizer_is_special (t, 258) && !flint_tokenizer_is_special (t, 259), "special flags");
      ok (flint_tokenizer_find (t, "<x>") == 259 && flint_tokenizer_find (t, "abc") == 257, "find by spelling");
      flint_tokens_free (&ids);
      /* a long run exercises the heap-based merge (aaaa... has no merges; ababab... does) */
      {
        char *big = malloc (200001);
        for (int i = 0; i < 200000; i++)
          big[i] = "abc"[i % 3];
        big[200000] = '\0';
        ok (flint_tokenizer_encode (t, big, 200000, false, &ids) == 0 && ids.n == 200000 / 3 + 1,
            "200k letters of abc encode to %zu tokens", ids.n);
        flint_tokens_free (&ids);
        free (big);
      }
    }
  flint_buf_free (&out);
  flint_tokenizer_free (t);
  free (j);

  j = tok_json ("", "{\"type\":\"ByteLevel\"}");
  contains (tok_error (j), "field `model.merges`: missing", "missing merges");
  free (j);
  j = tok_json (",\"merges\":[\"a q\"]", "{\"type\":\"ByteLevel\"}");
  contains (tok_error (j), "field `model.merges[0]`: the merge makes `aq`", "merge result not in the vocabulary");
  free (j);
  j = tok_json (",\"merges\":[\"ab\"]", "{\"type\":\"ByteLevel\"}");
  contains (tok_error (j), "field `model.merges[0]`", "malformed merge");
  free (j);
  j = tok_json (",\"merges\":[],\"byte_fallback\":true", "{\"type\":\"ByteLevel\"}");
  contains (tok_error (j), "byte_fallback", "SentencePiece-style refused");
  free (j);
  j = tok_json (",\"merges\":[]", "{\"type\":\"Metaspace\"}");
  contains (tok_error (j), "unsupported pre-tokenizer `Metaspace`", "metaspace refused");
  free (j);
  j = tok_json (",\"merges\":[]",
                "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\w+\"},"
                "\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\",\"use_regex\":false}]}");
  contains (tok_error (j), "unsupported pattern `\\w+`", "unknown split regex quoted");
  free (j);
  contains (tok_error ("{\"model\":{\"type\":\"Unigram\"}}"), "unsupported tokenizer model `Unigram`", "unigram refused");
  contains (tok_error ("{\"model\":{\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}"),
            "no token for byte 0x00", "byte-level vocabulary must be complete");
  contains (tok_error ("nope"), "`tokenizer.json`: line 1", "not JSON");
}

/* ---- utf-8 ----------------------------------------------------------------------------------- */

static void
test_utf8 (void)
{
  uint32_t cp;
  ok (flint_utf8_decode ((const uint8_t *) "\xe6\x97\xa5", 3, &cp) == 3 && cp == 0x65E5, "3-byte character");
  ok (flint_utf8_decode ((const uint8_t *) "\xe6\x97", 2, &cp) == 1 && (cp & FLINT_UTF8_INVALID), "truncated");
  ok (flint_utf8_decode ((const uint8_t *) "\xc0\x80", 2, &cp) == 1 && (cp & FLINT_UTF8_INVALID), "overlong");
  ok (flint_utf8_decode ((const uint8_t *) "\xed\xa0\x80", 3, &cp) == 1 && (cp & FLINT_UTF8_INVALID), "surrogate");
  ok (flint_utf8_complete_prefix ((const uint8_t *) "ab\xe6\x97", 4) == 2, "incomplete tail held back");
  ok (flint_utf8_complete_prefix ((const uint8_t *) "ab\xe6\x97\xa5", 5) == 5, "complete text");
  ok (flint_utf8_complete_prefix ((const uint8_t *) "\xf0\x9f\x99", 3) == 0, "4-byte sequence missing a byte");
  ok (flint_unicode_is_letter (0x65E5) && flint_unicode_is_number (0x0663) && flint_unicode_is_space (0x3000)
      && !flint_unicode_is_letter ('1') && !flint_unicode_is_number (0x1F642), "character classes");
}

/* ---- sampling -------------------------------------------------------------------------------- */

static void
test_sampler (void)
{
  float logits[8] = { 1, 3, 3, 0, -1, 2.5f, 0.5f, -4 };
  float probs[8];
  flint_sampler_t s;
  flint_rng_t r1, r2;
  flint_sampling_t p = { .temperature = 1.0f, .top_p = 1.0f, .top_k = 0 };
  double sum = 0;
  int counts[8] = { 0 };
  bool same = true;

  flint__sampler_init (&s, 8);
  ok (flint__argmax (logits, 8) == 1, "argmax takes the lowest id among ties");
  flint__sample_probs (&s, logits, &p, probs);
  for (int i = 0; i < 8; i++)
    sum += probs[i];
  ok (fabs (sum - 1.0) < 1e-6 && probs[1] == probs[2] && probs[1] > probs[5], "a distribution, softmax ordered");
  p.top_k = 2;
  flint__sample_probs (&s, logits, &p, probs);
  ok (probs[1] > 0.49f && probs[2] > 0.49f && probs[5] == 0 && probs[0] == 0, "top_k = 2 keeps the two best");
  p.top_k = 0;
  p.top_p = 0.5f;
  flint__sample_probs (&s, logits, &p, probs);
  ok (probs[1] == probs[2] && probs[1] > 0.49f && probs[5] == 0, "top_p keeps the smallest set reaching p");
  p.top_p = 0.3f;
  flint__sample_probs (&s, logits, &p, probs);
  ok (probs[1] == 1.0f && probs[2] == 0, "top_p: ties break towards the lower id");
  p.top_p = 1.0f;
  flint__rng_seed (&r1, 42);
  flint__rng_seed (&r2, 42);
  for (int i = 0; i < 2000; i++)
    {
      int32_t a = flint__sample (&s, logits, &p, &r1), b = flint__sample (&s, logits, &p, &r2);
      same &= a == b;
      counts[a]++;
    }
  ok (same, "one seed, one sequence");
  ok (counts[1] > 400 && counts[2] > 400 && counts[7] < 20, "draws follow the distribution (%d %d %d)", counts[1],
      counts[2], counts[7]);
  p.temperature = 0;
  ok (flint__sample (&s, logits, &p, &r1) == 1, "temperature 0 is greedy");
  flint__sampler_free (&s);
}

/* ---- chat ------------------------------------------------------------------------------------ */

static void
test_chat (void)
{
  flint_chat_msg_t m[] = {
    { "system", "Be brief.", 6, 9 },
    { "user", " Hi ", 4, 4 },
    { "assistant", "Hello", 9, 5 },
    { "user", "Bye", 4, 3 },
  };
  flint_buf_t b = FLINT_BUF_INIT;
  flint_error_t err = FLINT_ERROR_INIT;

  ok (flint__chat_render (FLINT_CHAT_CHATML, m, 2, &b, &err) == 0, "chatml");
  is_str (b.data, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi <|im_end|>\n<|im_start|>assistant\n",
          "chatml text");
  flint_buf_reset (&b);
  ok (flint__chat_render (FLINT_CHAT_LLAMA3, m, 2, &b, &err) == 0, "llama3");
  is_str (b.data, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
          "llama3 text (content trimmed)");
  flint_buf_reset (&b);
  ok (flint__chat_render (FLINT_CHAT_MISTRAL, m, 4, &b, &err) == 0, "mistral");
  is_str (b.data, "<s>[INST] Be brief.\n\n Hi  [/INST]Hello</s>[INST] Bye [/INST]", "mistral text");
  flint_buf_reset (&b);
  ok (flint__chat_render (FLINT_CHAT_LLAMA2, m, 4, &b, &err) == 0, "llama2");
  is_str (b.data, "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi  [/INST] Hello </s><s>[INST] Bye [/INST]", "llama2 text");
  flint_buf_reset (&b);
  ok (flint__chat_render (FLINT_CHAT_MISTRAL, m, 3, &b, &err) < 0 && strstr (err.msg, "last message"),
      "mistral: must end with the user: %s", err.msg);
  ok (flint__chat_render (FLINT_CHAT_MISTRAL, m + 2, 1, &b, &err) < 0 && strstr (err.msg, "messages[0].role"),
      "mistral: order: %s", err.msg);
  {
    flint_chat_msg_t bad = { "Us er", "x", 5, 1 };
    ok (flint__chat_render (FLINT_CHAT_CHATML, &bad, 1, &b, &err) < 0 && strstr (err.msg, "is not a role"),
        "role charset: %s", err.msg);
  }
  ok (flint__chat_render (FLINT_CHAT_NONE, m, 1, &b, &err) < 0 && strstr (err.msg, "no chat template"), "none");
  flint_buf_free (&b);
}

/* ---- pool ------------------------------------------------------------------------------------ */

typedef struct pool_arg_s {
  uint32_t hits[1000];
  uint32_t threads_seen[8];
} pool_arg_t;

static void
pool_task (void *arg, uint32_t task, uint32_t thread)
{
  pool_arg_t *a = arg;
  __atomic_add_fetch (&a->hits[task], 1, __ATOMIC_RELAXED);
  __atomic_store_n (&a->threads_seen[thread], 1, __ATOMIC_RELAXED);
}

static void
test_pool (void)
{
  flint_pool_t *p = NULL;
  pool_arg_t *a = calloc (1, sizeof *a);
  bool all = true;
  ok (flint__pool_new (3, &p) == 0 && flint__pool_threads (p) == 3, "pool of 3");
  for (int round = 0; round < 200; round++)
    flint__pool_run (p, pool_task, a, 1000);
  for (int i = 0; i < 1000; i++)
    all &= a->hits[i] == 200;
  ok (all, "every task ran exactly once per round, 200 rounds");
  flint__pool_free (p);
  free (a);
}

/* ---- CPU backend hooks ----------------------------------------------------------------------- */

static void
test_backend_hooks (void)
{
  flint_backend_options_t o = { .threads = 2 };
  flint_backend_t *be = NULL;
  flint_error_t err = FLINT_ERROR_INIT;
  uint16_t *host = aligned_alloc (4096, 3 * 4096);
  flint_bweight_t w = { .host = host, .bytes = 3 * 4096 };
  flint_bweights_t *set = NULL;
  flint_kv_geom_t g = { .layers = 2, .seqs = 2, .context = 64, .kv_heads = 1, .head_dim = 4 };
  flint_bkv_t *kv = NULL;
  int32_t tok = 0;
  uint32_t zero = 0;
  flint_batch_t b = { 1, &tok, &zero, &zero, 0, NULL };

  for (int i = 0; i < 3 * 2048; i++)
    host[i] = 0x3f80; /* bf16 1.0 */
  ok (flint__backend_open ("cpu", &o, &be, &err) == 0, "cpu backend opens: %s", err.msg);
  ok (flint__backend_open ("tpu", &o, &be, &err) < 0 && strstr (err.msg, "unknown compute backend `tpu`"),
      "unknown backend: %s", err.msg);
  ok (be->ops->weights_upload (be, &w, 1, &set, &err) == 0 && w.dev == host, "CPU weights are used in place");
  ok (be->ops->batch_set (be, &b, &err) == 0, "batch accepted");
  ok (be->ops->weights_release (be, set, &err) == 0, "release");
  ok (be->ops->batch_set (be, &b, &err) < 0 && strstr (err.msg, "released"), "no compute while released: %s", err.msg);
  ok (be->ops->weights_restore (be, set, &err) == 0 && be->ops->batch_set (be, &b, &err) == 0, "restore");
  ok (w.dev == host && host[100] == 0x3f80, "restored weights are where and what they were");
  ok (be->ops->kv_new (be, &g, &kv, &err) == 0, "KV cache");
  be->ops->kv_free (be, kv);
  ok (be->ops->kv_new (be, &g, &kv, &err) == 0, "KV cache again");
  be->ops->kv_free (be, kv);
  be->ops->weights_free (be, set);
  be->ops->close (be);
  free (host);
}

int
main (void)
{
  test_safetensors ();
  test_config ();
  test_pretok ();
  test_tokenizer ();
  test_utf8 ();
  test_sampler ();
  test_chat ();
  test_pool ();
  test_backend_hooks ();
  return tap_done ();
}
