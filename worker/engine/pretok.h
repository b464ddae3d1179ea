/* Pre-tokenizers: how a byte-level BPE tokenizer cuts text into pieces before merging.
 *
 * Hugging Face tokenizers describe this with a regular expression in tokenizer.json. Rather than
 * embed a regex engine, flint recognises the patterns of the model families it serves and runs
 * each as a hand-written scanner with the same leftmost-first semantics:
 *   gpt2    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *           (GPT-2, and ByteLevel with use_regex: true)
 *   llama3  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
 *           | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+          (Llama 3)
 *   qwen2   the same with \p{N} instead of \p{N}{1,3}                  (Qwen2, Qwen2.5)
 * A tokenizer.json with any other pattern is refused at load time with the pattern quoted. */
#ifndef FLINT_ENGINE_PRETOK_H
#define FLINT_ENGINE_PRETOK_H

#include <stddef.h>
#include <stdint.h>

typedef enum flint_pretok_e {
  FLINT_PRETOK_NONE,     /* the whole segment is one piece */
  FLINT_PRETOK_GPT2,
  FLINT_PRETOK_LLAMA3,
  FLINT_PRETOK_QWEN2,
} flint_pretok_t;

/* The pre-tokenizer whose pattern is exactly `regex`, or -1. */
int flint__pretok_from_regex (const char *regex);
/* The regex text of `kind` (for messages and tests). */
const char *flint__pretok_regex (flint_pretok_t kind);

/* End (exclusive) of the piece that starts at byte i of s[0..len), i < len. Always > i. */
size_t flint__pretok_next (flint_pretok_t kind, const uint8_t *s, size_t len, size_t i);

#endif
