/* Chat templates: turning a list of messages into the prompt text a chat-tuned model expects.
 *
 * Hugging Face ships these as Jinja programs in tokenizer_config.json; flint implements the few
 * that its model families use, in C, and picks one from the tokenizer's special tokens (or by
 * name from the manifest's `config: chat_template:`):
 *   chatml   <|im_start|>ROLE\nCONTENT<|im_end|>\n ... <|im_start|>assistant\n      (Qwen2)
 *   llama3   <|begin_of_text|><|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>
 *            ... <|start_header_id|>assistant<|end_header_id|>\n\n                  (Llama 3)
 *   mistral  <s>[INST] SYSTEM\n\nUSER [/INST]ASSISTANT</s>[INST] USER [/INST]      (Mistral)
 *   llama2   <s>[INST] <<SYS>>\nSYSTEM\n<</SYS>>\n\nUSER [/INST] ASSISTANT </s><s>[INST] ...
 * The rendered text carries the special tokens as text; the tokenizer recognises them. */
#ifndef FLINT_ENGINE_CHAT_H
#define FLINT_ENGINE_CHAT_H

#include "tokenizer.h"
#include "flint/buf.h"
#include "flint/error.h"

#include <stddef.h>
#include <stdint.h>

typedef enum flint_chat_e {
  FLINT_CHAT_NONE,
  FLINT_CHAT_CHATML,
  FLINT_CHAT_LLAMA3,
  FLINT_CHAT_MISTRAL,
  FLINT_CHAT_LLAMA2,
} flint_chat_t;

typedef struct flint_chat_msg_s {
  const char *role, *content;
  size_t role_len, content_len;
} flint_chat_msg_t;

/* Picks the template: by `name` when given (checked against the tokenizer), else from the
 * tokenizer's special tokens (`is_mistral` breaks the [INST] tie). Returns 0, or -1 with
 * FLINT_EPRECONDITION for an unknown name or one the tokenizer cannot support. */
int flint__chat_choose (const char *name, const flint_tokenizer_t *t, bool is_mistral, flint_chat_t *out,
                        flint_error_t *err);
const char *flint__chat_name (flint_chat_t kind);

/* Renders `n` messages into `out`. Returns 0, or -1 with FLINT_EINVAL naming the message at
 * fault (bad role, wrong order for the [INST] templates, no template). */
int flint__chat_render (flint_chat_t kind, const flint_chat_msg_t *m, size_t n, flint_buf_t *out, flint_error_t *err);

/* The id of the token that ends an assistant turn under `kind` (<|im_end|>, <|eot_id|>), or -1. */
int32_t flint__chat_end_token (flint_chat_t kind, const flint_tokenizer_t *t);

#endif
