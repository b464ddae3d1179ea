/* Byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json (GPT-2, Llama 3, Qwen2 and
 * the models that copy them).
 *
 * Encoding: the text is first split on added tokens (special ones such as <|im_start|> and plain
 * ones), longest match first; every other segment is cut by the pre-tokenizer (pretok.h), each
 * piece's bytes become byte-level symbols, and merges apply lowest rank first, leftmost first,
 * until none applies. A post-processor template may put tokens (a BOS) around the result.
 * Decoding maps each token back to its bytes; text assembly across tokens (a character split
 * over two tokens) is the caller's business.
 *
 * tokenizer.json is untrusted input: every field is checked, and an error names the file and
 * the field ("`tokenizer.json`: field `model.merges`: missing"). What flint does not implement
 * (SentencePiece-style byte fallback, other pre-tokenizer patterns, normalizers other than NFC)
 * is refused at load time, never approximated silently. The NFC normalizer is accepted and not
 * applied: text is expected in NFC, which is what nearly all text is. */
#ifndef FLINT_ENGINE_TOKENIZER_H
#define FLINT_ENGINE_TOKENIZER_H

#include "flint/buf.h"
#include "flint/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct flint_tokenizer_s flint_tokenizer_t;

/* A growable list of token ids. */
typedef struct flint_tokens_s {
  int32_t *ids;
  size_t n, cap;
} flint_tokens_t;

/* Appends one id; -ENOMEM on allocation failure. */
int flint_tokens_push (flint_tokens_t *t, int32_t id);
void flint_tokens_free (flint_tokens_t *t);

/* Loads a tokenizer from the `len` bytes of tokenizer.json at `text`; `file` names it in
 * messages. Returns 0 and a tokenizer owned by the caller (flint_tokenizer_free), or -1 with
 * FLINT_EPRECONDITION and a message naming the field. Cost: one pass over the JSON plus hash
 * tables of the vocabulary and the merges (a 150k-token vocabulary loads in tens of ms). */
int flint_tokenizer_load (const char *file, const char *text, size_t len, flint_tokenizer_t **out, flint_error_t *err);
void flint_tokenizer_free (flint_tokenizer_t *t);

/* Encodes `len` bytes of UTF-8 `text`, appending ids to `out`. With `add_special` the
 * post-processor's tokens (a BOS) surround the result. Added tokens written in the text are
 * recognised as such. Returns 0 or -ENOMEM. Cost: O(n log n) in the text length. */
int flint_tokenizer_encode (const flint_tokenizer_t *t, const char *text, size_t len, bool add_special,
                            flint_tokens_t *out);

/* Appends the bytes of token `id` to `out` (nothing for ids without a token, nor for special
 * tokens when `skip_special`). The bytes of one token need not be whole UTF-8 characters. */
void flint_tokenizer_decode (const flint_tokenizer_t *t, int32_t id, bool skip_special, flint_buf_t *out);

/* The id of the token spelled `content` (an added token, or a vocabulary entry in its
 * byte-level spelling), or -1. */
int32_t flint_tokenizer_find (const flint_tokenizer_t *t, const char *content);

/* One more than the largest id the tokenizer knows. */
uint32_t flint_tokenizer_size (const flint_tokenizer_t *t);

bool flint_tokenizer_is_special (const flint_tokenizer_t *t, int32_t id);

/* The ids the post-processor puts before an encoded text (e.g. the BOS), for chat templates
 * that write their own. */
size_t flint_tokenizer_prefix (const flint_tokenizer_t *t, const int32_t **ids_out);

#endif
