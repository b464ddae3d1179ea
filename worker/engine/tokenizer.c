/* Byte-level BPE tokenizer. See tokenizer.h.
 *
 * Tables: `enc[id]` is a token's spelling in tokenizer.json (the byte-level alphabet, where each
 * byte is one printable character), `dec[id]` the bytes it stands for. A string → id hash finds
 * tokens by spelling (loading merges, ignore_merges lookups); a (left, right) → (rank, merged)
 * hash drives the merges. All strings live in one arena freed with the tokenizer. */
#include "tokenizer.h"
#include "pretok.h"
#include "unicode.h"
#include "flint/json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MIN_I(a, b) ((a) < (b) ? (a) : (b))
#define MAX_VOCAB (1u << 22)   /* ids above this are refused: no real vocabulary comes close */
#define MAX_ADDED 65536

typedef struct added_s {
  int32_t id;
  const char *content;
  size_t len;
  bool special, lstrip, rstrip, single_word;
} added_t;

typedef struct merge_slot_s {
  uint64_t key;      /* left << 32 | right; UINT64_MAX = empty */
  uint32_t rank;
  int32_t merged;
} merge_slot_t;

struct flint_tokenizer_s {
  uint32_t size;           /* max id + 1 */
  char **enc;              /* [size] spelling (NULL for ids without a token) */
  uint8_t **dec;           /* [size] bytes */
  uint32_t *dec_len;
  uint8_t *special;        /* [size] 1 for special added tokens */
  int32_t *str_slots;      /* spelling hash: id + 1, 0 = empty */
  size_t str_mask;
  merge_slot_t *merges;
  size_t merge_mask;
  size_t n_merges;
  int32_t byte_id[256];    /* id of the token of each single byte */
  uint16_t bchar[256];     /* the byte-level alphabet: byte → code point */
  int16_t cbyte[324];      /* and back (-1: not in the alphabet) */
  added_t *added;          /* longest content first */
  size_t n_added;
  int32_t first_added[256][2]; /* per first byte: [begin, end) into added, by a stable sort */
  flint_pretok_t pretok;
  bool add_prefix_space;
  bool ignore_merges;
  int32_t prefix[4], suffix[4];
  size_t n_prefix, n_suffix;
  /* arena */
  char **blocks;
  size_t n_blocks;
  char *cur;
  size_t cur_left;
};

/* ---- small helpers ------------------------------------------------------------------------ */

int
flint_tokens_push (flint_tokens_t *t, int32_t id)
{
  if (t->n == t->cap)
    {
      size_t cap = t->cap ? t->cap * 2 : 64;
      int32_t *p = realloc (t->ids, cap * sizeof *p);
      if (p == NULL)
        return -ENOMEM;
      t->ids = p;
      t->cap = cap;
    }
  t->ids[t->n++] = id;
  return 0;
}

void
flint_tokens_free (flint_tokens_t *t)
{
  free (t->ids);
  t->ids = NULL;
  t->n = t->cap = 0;
}

static void *
arena (flint_tokenizer_t *t, size_t n)
{
  void *r;
  n = (n + 7) & ~(size_t) 7;
  if (n > t->cur_left)
    {
      size_t cap = n > (1u << 20) ? n : (1u << 20);
      char **b = realloc (t->blocks, (t->n_blocks + 1) * sizeof *b);
      if (b == NULL)
        return NULL;
      t->blocks = b;
      if ((b[t->n_blocks] = malloc (cap)) == NULL)
        return NULL;
      t->cur = b[t->n_blocks++];
      t->cur_left = cap;
    }
  r = t->cur;
  t->cur += n;
  t->cur_left -= n;
  return r;
}

static uint64_t
hash_bytes (const void *p, size_t n)
{
  const uint8_t *s = p;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ s[i]) * 1099511628211ull;
  return h ^ (h >> 29);
}

static uint64_t
hash_u64 (uint64_t x)
{
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

static int32_t
str_find (const flint_tokenizer_t *t, const char *s, size_t n)
{
  if (t->str_slots == NULL)
    return -1;
  for (size_t i = hash_bytes (s, n) & t->str_mask;; i = (i + 1) & t->str_mask)
    {
      int32_t v = t->str_slots[i];
      if (v == 0)
        return -1;
      if (strlen (t->enc[v - 1]) == n && memcmp (t->enc[v - 1], s, n) == 0)
        return v - 1;
    }
}

static void
str_insert (flint_tokenizer_t *t, int32_t id)
{
  const char *s = t->enc[id];
  for (size_t i = hash_bytes (s, strlen (s)) & t->str_mask;; i = (i + 1) & t->str_mask)
    if (t->str_slots[i] == 0)
      {
        t->str_slots[i] = id + 1;
        return;
      }
}

static const merge_slot_t *
merge_find (const flint_tokenizer_t *t, int32_t a, int32_t b)
{
  uint64_t key = (uint64_t) (uint32_t) a << 32 | (uint32_t) b;
  if (t->merges == NULL)
    return NULL;
  for (size_t i = hash_u64 (key) & t->merge_mask;; i = (i + 1) & t->merge_mask)
    {
      if (t->merges[i].key == key)
        return &t->merges[i];
      if (t->merges[i].key == UINT64_MAX)
        return NULL;
    }
}

/* ---- the byte-level alphabet -------------------------------------------------------------- */

/* GPT-2's map of bytes to printable characters: printable Latin-1 bytes stand for themselves,
 * the others (controls, space, soft hyphen) move to U+0100 and up in byte order. */
static void
alphabet_init (flint_tokenizer_t *t)
{
  uint16_t n = 0;
  for (int c = 0; c < 324; c++)
    t->cbyte[c] = -1;
  for (int c = 0; c < 256; c++)
    {
      bool printable = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
      t->bchar[c] = printable ? (uint16_t) c : (uint16_t) (256 + n++);
      t->cbyte[t->bchar[c]] = (int16_t) c;
    }
}

static int
char_byte (const flint_tokenizer_t *t, uint32_t cp)
{
  return cp < 324 ? t->cbyte[cp] : -1;
}

static size_t
utf8_put (uint32_t cp, char *out)
{
  if (cp < 0x80)
    {
      out[0] = (char) cp;
      return 1;
    }
  out[0] = (char) (0xC0 | (cp >> 6));
  out[1] = (char) (0x80 | (cp & 0x3F));
  return 2; /* the byte-level alphabet stays below U+0800 */
}

/* Spelling of raw bytes in the byte-level alphabet (at most 2 bytes out per byte in). */
static size_t
byte_level (const flint_tokenizer_t *t, const uint8_t *s, size_t n, char *out)
{
  size_t o = 0;
  for (size_t i = 0; i < n; i++)
    o += utf8_put (t->bchar[s[i]], out + o);
  out[o] = '\0';
  return o;
}

/* ---- loading ------------------------------------------------------------------------------ */

#define FAIL(...) flint_error_set (err, FLINT_EPRECONDITION, __VA_ARGS__)

static bool
json_bool (const flint_json_t *o, const char *key, bool dflt)
{
  const flint_json_t *v = flint_json_get (o, key);
  return v && v->type == FLINT_JSON_BOOL ? v->b : dflt;
}

static bool
json_null (const flint_json_t *v)
{
  return v == NULL || v->type == FLINT_JSON_NULL;
}

static int
set_token (flint_tokenizer_t *t, const char *file, int32_t id, const char *s, size_t n, bool byte_level_spelling,
           flint_error_t *err)
{
  char *e;
  uint8_t *d;
  size_t dl = 0;

  if (t->enc[id] != NULL)
    return 0; /* an added token that is also in the vocabulary keeps the vocabulary's entry */
  e = arena (t, n + 1);
  d = arena (t, n + 1);
  if (e == NULL || d == NULL)
    return FAIL ("`%s`: out of memory", file);
  memcpy (e, s, n);
  e[n] = '\0';
  if (!byte_level_spelling)
    {
      memcpy (d, s, n);
      dl = n;
    }
  else
    for (size_t i = 0; i < n;)
      {
        uint32_t cp;
        int b;
        i += flint_utf8_decode ((const uint8_t *) s + i, n - i, &cp);
        b = char_byte (t, cp);
        if (b < 0)
          return FAIL ("`%s`: field `model.vocab`: token `%.60s` (id %d) has a character outside the byte-level "
                       "alphabet (not a byte-level BPE vocabulary?)", file, s, id);
        d[dl++] = (uint8_t) b;
      }
  t->enc[id] = e;
  t->dec[id] = d;
  t->dec_len[id] = (uint32_t) dl;
  return 0;
}

static int
load_pretokenizer (flint_tokenizer_t *t, const char *file, const flint_json_t *pt, flint_error_t *err)
{
  const char *type;
  size_t tl;

  t->pretok = FLINT_PRETOK_NONE;
  if (json_null (pt))
    return FAIL ("`%s`: field `pre_tokenizer`: missing (flint supports byte-level BPE tokenizers)", file);
  if (!flint_json_get_string (pt, "type", &type, &tl))
    return FAIL ("`%s`: field `pre_tokenizer.type`: missing", file);
  if (strcmp (type, "ByteLevel") == 0)
    {
      t->add_prefix_space = json_bool (pt, "add_prefix_space", false);
      t->pretok = json_bool (pt, "use_regex", true) ? FLINT_PRETOK_GPT2 : FLINT_PRETOK_NONE;
      return 0;
    }
  if (strcmp (type, "Sequence") == 0)
    {
      const flint_json_t *list = flint_json_get (pt, "pretokenizers");
      bool have_bl = false, have_split = false;
      if (list == NULL || list->type != FLINT_JSON_ARRAY)
        return FAIL ("`%s`: field `pre_tokenizer.pretokenizers`: missing or not a list", file);
      for (size_t i = 0; i < list->len; i++)
        {
          const flint_json_t *p = list->items[i];
          const char *pty, *re;
          size_t n;
          if (!flint_json_get_string (p, "type", &pty, &n))
            return FAIL ("`%s`: field `pre_tokenizer.pretokenizers[%zu].type`: missing", file, i);
          if (strcmp (pty, "Split") == 0 && !have_split && !have_bl)
            {
              const flint_json_t *pat = flint_json_get (p, "pattern");
              const char *beh = "";
              int k;
              flint_json_get_string (p, "behavior", &beh, &n);
              if (!flint_json_get_string (pat, "Regex", &re, &n))
                return FAIL ("`%s`: field `pre_tokenizer.pretokenizers[%zu].pattern`: only Regex patterns are "
                             "supported", file, i);
              k = flint__pretok_from_regex (re);
              if (k < 0)
                return FAIL ("`%s`: field `pre_tokenizer.pretokenizers[%zu].pattern.Regex`: unsupported pattern "
                             "`%.200s` (flint knows the GPT-2, Llama 3 and Qwen2 patterns)", file, i, re);
              if (strcmp (beh, "Isolated") != 0 || json_bool (p, "invert", false))
                return FAIL ("`%s`: field `pre_tokenizer.pretokenizers[%zu].behavior`: only Isolated, not "
                             "inverted, is supported", file, i);
              t->pretok = (flint_pretok_t) k;
              have_split = true;
            }
          else if (strcmp (pty, "ByteLevel") == 0 && !have_bl)
            {
              if (json_bool (p, "use_regex", true))
                {
                  if (have_split)
                    return FAIL ("`%s`: field `pre_tokenizer.pretokenizers[%zu].use_regex`: a Split and the "
                                 "ByteLevel regex together are not supported", file, i);
                  t->pretok = FLINT_PRETOK_GPT2;
                }
              t->add_prefix_space = json_bool (p, "add_prefix_space", false);
              have_bl = true;
            }
          else
            return FAIL ("`%s`: field `pre_tokenizer.pretokenizers[%zu]`: unsupported pre-tokenizer `%s` here", file,
                         i, pty);
        }
      if (!have_bl)
        return FAIL ("`%s`: field `pre_tokenizer`: no ByteLevel step (flint supports byte-level BPE tokenizers)",
                     file);
      return 0;
    }
  return FAIL ("`%s`: field `pre_tokenizer.type`: unsupported pre-tokenizer `%s` (flint supports byte-level BPE "
               "tokenizers)", file, type);
}

/* post_processor: TemplateProcessing ("single": tokens around the sequence $A), ByteLevel (a
 * no-op for encoding), or a Sequence of those. */
static int
load_post (flint_tokenizer_t *t, const char *file, const flint_json_t *pp, flint_error_t *err)
{
  const char *type;
  size_t n;

  if (json_null (pp))
    return 0;
  if (!flint_json_get_string (pp, "type", &type, &n))
    return FAIL ("`%s`: field `post_processor.type`: missing", file);
  if (strcmp (type, "ByteLevel") == 0)
    return 0;
  if (strcmp (type, "Sequence") == 0)
    {
      const flint_json_t *list = flint_json_get (pp, "processors");
      if (list == NULL || list->type != FLINT_JSON_ARRAY)
        return FAIL ("`%s`: field `post_processor.processors`: missing", file);
      for (size_t i = 0; i < list->len; i++)
        if (load_post (t, file, list->items[i], err) < 0)
          return -1;
      return 0;
    }
  if (strcmp (type, "TemplateProcessing") == 0)
    {
      const flint_json_t *single = flint_json_get (pp, "single"), *specials = flint_json_get (pp, "special_tokens");
      bool seen_seq = false;
      if (single == NULL || single->type != FLINT_JSON_ARRAY)
        return FAIL ("`%s`: field `post_processor.single`: missing", file);
      for (size_t i = 0; i < single->len; i++)
        {
          const flint_json_t *item = single->items[i], *st = flint_json_get (item, "SpecialToken"), *ids;
          const char *name;
          if (flint_json_get (item, "Sequence"))
            {
              seen_seq = true;
              continue;
            }
          if (!flint_json_get_string (st, "id", &name, &n))
            return FAIL ("`%s`: field `post_processor.single[%zu]`: expected SpecialToken or Sequence", file, i);
          ids = flint_json_get (flint_json_get (specials, name), "ids");
          if (ids == NULL || ids->type != FLINT_JSON_ARRAY)
            return FAIL ("`%s`: field `post_processor.special_tokens`: no ids for `%.60s`", file, name);
          for (size_t j = 0; j < ids->len; j++)
            {
              const flint_json_t *v = ids->items[j];
              size_t *cnt = seen_seq ? &t->n_suffix : &t->n_prefix;
              if (v->type != FLINT_JSON_NUMBER || !v->is_int || v->i64 < 0 || v->i64 >= t->size)
                return FAIL ("`%s`: field `post_processor.special_tokens.%.60s.ids`: not a token id", file, name);
              if (*cnt >= 4)
                return FAIL ("`%s`: field `post_processor.single`: more than 4 special tokens", file);
              (seen_seq ? t->suffix : t->prefix)[(*cnt)++] = (int32_t) v->i64;
            }
        }
      return 0;
    }
  return FAIL ("`%s`: field `post_processor.type`: unsupported post-processor `%s`", file, type);
}

static int
cmp_added (const void *a, const void *b)
{
  const added_t *x = a, *y = b;
  if ((uint8_t) x->content[0] != (uint8_t) y->content[0])
    return (uint8_t) x->content[0] < (uint8_t) y->content[0] ? -1 : 1;
  if (x->len != y->len)
    return x->len > y->len ? -1 : 1; /* longest first */
  return x->id < y->id ? -1 : x->id > y->id;
}

int
flint_tokenizer_load (const char *file, const char *text, size_t len, flint_tokenizer_t **out, flint_error_t *err)
{
  flint_json_doc_t *doc = NULL;
  const flint_json_t *root, *model, *vocab, *merges, *added, *v;
  flint_tokenizer_t *t = NULL;
  const char *s;
  size_t n;
  char jerr[160];
  int64_t max_id = -1;
  int rc = -1;

  if (flint_json_parse (text, len, &doc, jerr, sizeof jerr) < 0)
    return FAIL ("`%s`: %s", file, jerr);
  root = flint_json_root (doc);
  model = flint_json_get (root, "model");
  if (model == NULL || model->type != FLINT_JSON_OBJECT)
    {
      FAIL ("`%s`: field `model`: missing or not an object", file);
      goto out;
    }
  if (!flint_json_get_string (model, "type", &s, &n))
    s = "BPE"; /* older files leave the type out */
  if (strcmp (s, "BPE") != 0)
    {
      FAIL ("`%s`: field `model.type`: unsupported tokenizer model `%.40s` (flint supports byte-level BPE)", file, s);
      goto out;
    }
  if (json_bool (model, "byte_fallback", false))
    {
      FAIL ("`%s`: field `model.byte_fallback`: SentencePiece-style BPE with byte fallback is not supported "
            "(flint supports byte-level BPE)", file);
      goto out;
    }
  if ((flint_json_get_string (model, "continuing_subword_prefix", &s, &n) && n)
      || (flint_json_get_string (model, "end_of_word_suffix", &s, &n) && n))
    {
      FAIL ("`%s`: field `model.continuing_subword_prefix`: subword prefixes and suffixes are not supported", file);
      goto out;
    }
  v = flint_json_get (root, "normalizer");
  if (!json_null (v) && !(flint_json_get_string (v, "type", &s, &n) && strcmp (s, "NFC") == 0))
    {
      FAIL ("`%s`: field `normalizer`: unsupported normalizer (flint accepts none or NFC)", file);
      goto out;
    }
  v = flint_json_get (root, "decoder");
  if (!json_null (v) && !(flint_json_get_string (v, "type", &s, &n) && strcmp (s, "ByteLevel") == 0))
    {
      FAIL ("`%s`: field `decoder`: unsupported decoder (flint supports ByteLevel)", file);
      goto out;
    }
  vocab = flint_json_get (model, "vocab");
  if (vocab == NULL || vocab->type != FLINT_JSON_OBJECT || vocab->len == 0)
    {
      FAIL ("`%s`: field `model.vocab`: missing, empty or not an object", file);
      goto out;
    }
  merges = flint_json_get (model, "merges");
  if (merges == NULL || merges->type != FLINT_JSON_ARRAY)
    {
      FAIL ("`%s`: field `model.merges`: missing (a BPE tokenizer needs its merges)", file);
      goto out;
    }
  added = flint_json_get (root, "added_tokens");
  if (!json_null (added) && added->type != FLINT_JSON_ARRAY)
    {
      FAIL ("`%s`: field `added_tokens`: not a list", file);
      goto out;
    }
  if (!json_null (added) && added->len > MAX_ADDED)
    {
      FAIL ("`%s`: field `added_tokens`: %zu entries (at most %u)", file, added->len, MAX_ADDED);
      goto out;
    }

  /* ids: the vocabulary's and the added tokens' */
  for (size_t i = 0; i < vocab->len; i++)
    {
      v = vocab->items[i];
      if (v->type != FLINT_JSON_NUMBER || !v->is_int || v->i64 < 0 || v->i64 >= MAX_VOCAB)
        {
          FAIL ("`%s`: field `model.vocab`: token `%.60s` has id that is not an integer in [0, %u)", file,
                vocab->keys[i], MAX_VOCAB);
          goto out;
        }
      max_id = v->i64 > max_id ? v->i64 : max_id;
    }
  for (size_t i = 0; added && i < added->len; i++)
    {
      int64_t id;
      if (!flint_json_get_int (added->items[i], "id", &id) || id < 0 || id >= MAX_VOCAB
          || !flint_json_get_string (added->items[i], "content", &s, &n) || n == 0)
        {
          FAIL ("`%s`: field `added_tokens[%zu]`: needs an `id` in [0, %u) and a non-empty `content`", file, i,
                MAX_VOCAB);
          goto out;
        }
      max_id = id > max_id ? id : max_id;
    }

  t = calloc (1, sizeof *t);
  if (t == NULL)
    goto oom;
  t->size = (uint32_t) max_id + 1;
  t->enc = calloc (t->size, sizeof *t->enc);
  t->dec = calloc (t->size, sizeof *t->dec);
  t->dec_len = calloc (t->size, sizeof *t->dec_len);
  t->special = calloc (t->size, 1);
  for (t->str_mask = 1; t->str_mask < 2 * (size_t) t->size; t->str_mask <<= 1)
    ;
  t->str_slots = calloc (t->str_mask, sizeof *t->str_slots);
  t->str_mask--;
  if (!t->enc || !t->dec || !t->dec_len || !t->special || !t->str_slots)
    goto oom;
  t->ignore_merges = json_bool (model, "ignore_merges", false);
  alphabet_init (t);

  for (size_t i = 0; i < vocab->len; i++)
    {
      int32_t id = (int32_t) vocab->items[i]->i64;
      if (t->enc[id] != NULL)
        {
          FAIL ("`%s`: field `model.vocab`: id %d is given to both `%.40s` and `%.40s`", file, id, t->enc[id],
                vocab->keys[i]);
          goto out;
        }
      if (str_find (t, vocab->keys[i], vocab->key_lens[i]) >= 0)
        {
          FAIL ("`%s`: field `model.vocab`: token `%.60s` appears twice", file, vocab->keys[i]);
          goto out;
        }
      if (set_token (t, file, id, vocab->keys[i], vocab->key_lens[i], true, err) < 0)
        goto out;
      str_insert (t, id);
    }
  for (int b = 0; b < 256; b++)
    {
      char sp[4];
      size_t sl = utf8_put (t->bchar[b], sp);
      t->byte_id[b] = str_find (t, sp, sl);
      if (t->byte_id[b] < 0)
        {
          FAIL ("`%s`: field `model.vocab`: no token for byte 0x%02X (a byte-level vocabulary has all 256)", file, b);
          goto out;
        }
    }

  if (added && added->len)
    {
      t->added = calloc (added->len, sizeof *t->added);
      if (t->added == NULL)
        goto oom;
      for (size_t i = 0; i < added->len; i++)
        {
          const flint_json_t *a = added->items[i];
          added_t *ad = &t->added[t->n_added++];
          int64_t id;
          flint_json_get_int (a, "id", &id);
          flint_json_get_string (a, "content", &s, &n);
          ad->id = (int32_t) id;
          ad->special = json_bool (a, "special", false);
          ad->lstrip = json_bool (a, "lstrip", false);
          ad->rstrip = json_bool (a, "rstrip", false);
          ad->single_word = json_bool (a, "single_word", false);
          if (t->enc[id] != NULL && !(t->dec_len[id] == n && memcmp (t->dec[id], s, n) == 0))
            {
              FAIL ("`%s`: field `added_tokens[%zu]`: id %d is `%.40s` in the vocabulary", file, i, (int) id, t->enc[id]);
              goto out;
            }
          if (set_token (t, file, (int32_t) id, s, n, false, err) < 0)
            goto out;
          if (str_find (t, s, n) < 0)
            str_insert (t, (int32_t) id);
          ad->content = arena (t, n + 1);
          if (ad->content == NULL)
            goto oom;
          memcpy ((char *) ad->content, s, n);
          ((char *) ad->content)[n] = '\0';
          ad->len = n;
          t->special[id] = ad->special;
        }
      qsort (t->added, t->n_added, sizeof *t->added, cmp_added);
    }
  for (int b = 0; b < 256; b++)
    t->first_added[b][0] = t->first_added[b][1] = 0;
  for (size_t i = 0; i < t->n_added; i++)
    {
      uint8_t b = (uint8_t) t->added[i].content[0];
      if (t->first_added[b][1] == 0)
        t->first_added[b][0] = (int32_t) i;
      t->first_added[b][1] = (int32_t) i + 1;
    }

  /* merges: "left right" strings, or [left, right] pairs in newer files */
  for (t->merge_mask = 1; t->merge_mask < 2 * merges->len + 2; t->merge_mask <<= 1)
    ;
  t->merges = malloc (t->merge_mask * sizeof *t->merges);
  if (t->merges == NULL)
    goto oom;
  for (size_t i = 0; i < t->merge_mask; i++)
    t->merges[i].key = UINT64_MAX;
  t->merge_mask--;
  for (size_t i = 0; i < merges->len; i++)
    {
      const flint_json_t *m = merges->items[i];
      const char *l, *r;
      size_t ll, rl;
      char buf[1024];
      int32_t a, b, ab;
      uint64_t key;
      size_t slot;

      if (m->type == FLINT_JSON_STRING)
        {
          const char *sp = memchr (m->str, ' ', m->len);
          if (sp == NULL)
            {
              FAIL ("`%s`: field `model.merges[%zu]`: `%.60s` is not two tokens separated by a space", file, i, m->str);
              goto out;
            }
          l = m->str, ll = (size_t) (sp - m->str), r = sp + 1, rl = m->len - ll - 1;
        }
      else if (m->type == FLINT_JSON_ARRAY && m->len == 2 && m->items[0]->type == FLINT_JSON_STRING
               && m->items[1]->type == FLINT_JSON_STRING)
        l = m->items[0]->str, ll = m->items[0]->len, r = m->items[1]->str, rl = m->items[1]->len;
      else
        {
          FAIL ("`%s`: field `model.merges[%zu]`: expected \"left right\" or [left, right]", file, i);
          goto out;
        }
      a = str_find (t, l, ll);
      b = str_find (t, r, rl);
      if (a < 0 || b < 0 || ll + rl >= sizeof buf)
        {
          FAIL ("`%s`: field `model.merges[%zu]`: `%.*s` or `%.*s` is not in the vocabulary", file, i, (int) MIN_I (ll, 60),
                l, (int) MIN_I (rl, 60), r);
          goto out;
        }
      memcpy (buf, l, ll);
      memcpy (buf + ll, r, rl);
      ab = str_find (t, buf, ll + rl);
      if (ab < 0)
        {
          FAIL ("`%s`: field `model.merges[%zu]`: the merge makes `%.*s`, which is not in the vocabulary", file, i,
                (int) MIN_I (ll + rl, 80), buf);
          goto out;
        }
      key = (uint64_t) (uint32_t) a << 32 | (uint32_t) b;
      for (slot = hash_u64 (key) & t->merge_mask; t->merges[slot].key != UINT64_MAX && t->merges[slot].key != key;
           slot = (slot + 1) & t->merge_mask)
        ;
      if (t->merges[slot].key == key)
        continue; /* a repeated merge keeps its first (lowest) rank */
      t->merges[slot].key = key;
      t->merges[slot].rank = (uint32_t) i;
      t->merges[slot].merged = ab;
      t->n_merges++;
    }

  if (load_pretokenizer (t, file, flint_json_get (root, "pre_tokenizer"), err) < 0)
    goto out;
  if (load_post (t, file, flint_json_get (root, "post_processor"), err) < 0)
    goto out;
  *out = t;
  t = NULL;
  rc = 0;
  goto out;
oom:
  FAIL ("`%s`: out of memory", file);
out:
  flint_json_doc_free (doc);
  flint_tokenizer_free (t);
  return rc;
}

void
flint_tokenizer_free (flint_tokenizer_t *t)
{
  if (t == NULL)
    return;
  for (size_t i = 0; i < t->n_blocks; i++)
    free (t->blocks[i]);
  free (t->blocks);
  free (t->enc);
  free (t->dec);
  free (t->dec_len);
  free (t->special);
  free (t->str_slots);
  free (t->merges);
  free (t->added);
  free (t);
}

/* ---- encoding ----------------------------------------------------------------------------- */

/* A candidate merge in the heap: symbols `left` and the one after it, as they were when pushed
 * (stale entries are skipped when popped). */
typedef struct cand_s {
  uint32_t rank;
  uint32_t left;
  int32_t left_id, right_id;
} cand_t;

static inline bool
cand_less (const cand_t *a, const cand_t *b)
{
  return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}

static void
heap_push (cand_t *h, size_t *n, cand_t c)
{
  size_t i = (*n)++;
  while (i > 0)
    {
      size_t p = (i - 1) / 2;
      if (!cand_less (&c, &h[p]))
        break;
      h[i] = h[p];
      i = p;
    }
  h[i] = c;
}

static cand_t
heap_pop (cand_t *h, size_t *n)
{
  cand_t top = h[0], last = h[--(*n)];
  size_t i = 0;
  for (;;)
    {
      size_t l = 2 * i + 1, r = l + 1, m = i;
      const cand_t *mv = &last;
      if (l < *n && cand_less (&h[l], mv))
        m = l, mv = &h[l];
      if (r < *n && cand_less (&h[r], mv))
        m = r;
      if (m == i)
        break;
      h[i] = h[m];
      i = m;
    }
  if (*n)
    h[i] = last;
  return top;
}

typedef struct bpe_scratch_s {
  int32_t *id;
  uint32_t *prev, *next;
  cand_t *heap;
  char *spell;
  size_t cap;
} bpe_scratch_t;

static int
scratch_grow (bpe_scratch_t *s, size_t n)
{
  if (n <= s->cap)
    return 0;
  free (s->id), free (s->prev), free (s->next), free (s->heap), free (s->spell);
  s->cap = n < 256 ? 256 : n;
  s->id = malloc (s->cap * sizeof *s->id);
  s->prev = malloc (s->cap * sizeof *s->prev);
  s->next = malloc (s->cap * sizeof *s->next);
  /* every merge pushes at most two candidates */
  s->heap = malloc (3 * s->cap * sizeof *s->heap);
  s->spell = malloc (2 * s->cap + 1);
  if (!s->id || !s->prev || !s->next || !s->heap || !s->spell)
    {
      s->cap = 0;
      return -ENOMEM;
    }
  return 0;
}

static void
push_pair (const flint_tokenizer_t *t, bpe_scratch_t *s, size_t *hn, uint32_t left)
{
  uint32_t right = s->next[left];
  const merge_slot_t *m;
  if (right == UINT32_MAX)
    return;
  m = merge_find (t, s->id[left], s->id[right]);
  if (m)
    heap_push (s->heap, hn, (cand_t) { m->rank, left, s->id[left], s->id[right] });
}

/* BPE on one piece (raw bytes). */
static int
bpe_piece (const flint_tokenizer_t *t, const uint8_t *p, size_t n, bpe_scratch_t *s, flint_tokens_t *out)
{
  size_t hn = 0;
  int r;

  if (n == 0)
    return 0;
  if ((r = scratch_grow (s, n)) < 0)
    return r;
  if (t->ignore_merges)
    {
      size_t sl = byte_level (t, p, n, s->spell);
      int32_t id = str_find (t, s->spell, sl);
      if (id >= 0)
        return flint_tokens_push (out, id);
    }
  for (size_t i = 0; i < n; i++)
    {
      s->id[i] = t->byte_id[p[i]];
      s->prev[i] = i ? (uint32_t) i - 1 : UINT32_MAX;
      s->next[i] = i + 1 < n ? (uint32_t) i + 1 : UINT32_MAX;
    }
  for (size_t i = 0; i + 1 < n; i++)
    push_pair (t, s, &hn, (uint32_t) i);
  while (hn)
    {
      cand_t c = heap_pop (s->heap, &hn);
      uint32_t right = s->next[c.left];
      const merge_slot_t *m;
      /* stale: the left symbol was merged away or changed, or its right neighbour did */
      if (s->id[c.left] != c.left_id || right == UINT32_MAX || s->id[right] != c.right_id)
        continue;
      m = merge_find (t, c.left_id, c.right_id);
      s->id[c.left] = m->merged;
      s->id[right] = -1;
      s->next[c.left] = s->next[right];
      if (s->next[right] != UINT32_MAX)
        s->prev[s->next[right]] = c.left;
      if (s->prev[c.left] != UINT32_MAX)
        push_pair (t, s, &hn, s->prev[c.left]);
      push_pair (t, s, &hn, c.left);
    }
  for (uint32_t i = 0; i != UINT32_MAX; i = s->next[i])
    if ((r = flint_tokens_push (out, s->id[i])) < 0)
      return r;
  return 0;
}

static int
encode_segment (const flint_tokenizer_t *t, const uint8_t *p, size_t n, bpe_scratch_t *s, flint_tokens_t *out)
{
  uint8_t *tmp = NULL;
  size_t i = 0;
  int r = 0;

  if (n == 0)
    return 0;
  if (t->add_prefix_space && p[0] != ' ')
    {
      tmp = malloc (n + 1);
      if (tmp == NULL)
        return -ENOMEM;
      tmp[0] = ' ';
      memcpy (tmp + 1, p, n);
      p = tmp;
      n++;
    }
  while (i < n && r == 0)
    {
      size_t j = flint__pretok_next (t->pretok, p, n, i);
      r = bpe_piece (t, p + i, j - i, s, out);
      i = j;
    }
  free (tmp);
  return r;
}

static bool
word_char (const uint8_t *s, size_t len, size_t i)
{
  uint32_t cp;
  flint_utf8_decode (s + i, len - i, &cp);
  return cp == '_' || flint_unicode_is_letter (cp) || flint_unicode_is_number (cp);
}

/* The added token matching at i, longest first, or NULL. */
static const added_t *
match_added (const flint_tokenizer_t *t, const uint8_t *s, size_t len, size_t i)
{
  int32_t b = t->first_added[s[i]][0], e = t->first_added[s[i]][1];
  for (int32_t k = b; k < e; k++)
    {
      const added_t *a = &t->added[k];
      if (a->len > len - i || memcmp (s + i, a->content, a->len) != 0)
        continue;
      if (a->single_word
          && ((i > 0 && word_char (s, len, i - 1)) || (i + a->len < len && word_char (s, len, i + a->len))))
        continue;
      return a;
    }
  return NULL;
}

int
flint_tokenizer_encode (const flint_tokenizer_t *t, const char *text, size_t len, bool add_special,
                        flint_tokens_t *out)
{
  const uint8_t *s = (const uint8_t *) text;
  bpe_scratch_t sc = { 0 };
  size_t start = 0, i = 0;
  int r = 0;

  if (add_special)
    for (size_t k = 0; k < t->n_prefix && r == 0; k++)
      r = flint_tokens_push (out, t->prefix[k]);
  while (i < len && r == 0)
    {
      const added_t *a = t->n_added ? match_added (t, s, len, i) : NULL;
      size_t seg_end = i, next;
      if (a == NULL)
        {
          i++;
          continue;
        }
      next = i + a->len;
      if (a->lstrip)
        while (seg_end > start && (s[seg_end - 1] == ' ' || s[seg_end - 1] == '\t' || s[seg_end - 1] == '\n'))
          seg_end--;
      if (a->rstrip)
        while (next < len && (s[next] == ' ' || s[next] == '\t' || s[next] == '\n'))
          next++;
      r = encode_segment (t, s + start, seg_end - start, &sc, out);
      if (r == 0)
        r = flint_tokens_push (out, a->id);
      start = i = next;
    }
  if (r == 0)
    r = encode_segment (t, s + start, len - start, &sc, out);
  if (add_special)
    for (size_t k = 0; k < t->n_suffix && r == 0; k++)
      r = flint_tokens_push (out, t->suffix[k]);
  free (sc.id), free (sc.prev), free (sc.next), free (sc.heap), free (sc.spell);
  return r;
}

/* ---- decoding and lookups ----------------------------------------------------------------- */

void
flint_tokenizer_decode (const flint_tokenizer_t *t, int32_t id, bool skip_special, flint_buf_t *out)
{
  if (id < 0 || (uint32_t) id >= t->size || t->dec[id] == NULL)
    return;
  if (skip_special && t->special[id])
    return;
  flint_buf_append (out, t->dec[id], t->dec_len[id]);
}

int32_t
flint_tokenizer_find (const flint_tokenizer_t *t, const char *content)
{
  return str_find (t, content, strlen (content));
}

uint32_t
flint_tokenizer_size (const flint_tokenizer_t *t)
{
  return t->size;
}

bool
flint_tokenizer_is_special (const flint_tokenizer_t *t, int32_t id)
{
  return id >= 0 && (uint32_t) id < t->size && t->special[id];
}

size_t
flint_tokenizer_prefix (const flint_tokenizer_t *t, const int32_t **ids_out)
{
  *ids_out = t->prefix;
  return t->n_prefix;
}
