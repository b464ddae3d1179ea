/* A llama-family decoder: its configuration (config.json), its weights bound from safetensors
 * shards, and the forward pass over a batch of tokens written against the backend interface.
 *
 * Families: Llama (1-3, with linear or llama3 RoPE scaling), Mistral (sliding window) and Qwen2
 * (biases on q/k/v). Architecture of one layer, pre-norm:
 *   x += o_proj(attention(rope(q_proj(rmsnorm(x))), rope(k_proj(..)), v_proj(..)))
 *   x += down_proj(silu(gate_proj(rmsnorm(x))) * up_proj(rmsnorm(x)))
 * then logits = lm_head(rmsnorm(x)), lm_head being the embedding matrix when tied.
 *
 * Binding checks every tensor the configuration implies: present in exactly one shard, dtype
 * F32/F16/BF16, shape as the config says; unexpected tensors are errors too (a wrong
 * architecture or a config from another model shows up at deploy time, not as garbage). */
#ifndef FLINT_ENGINE_MODEL_H
#define FLINT_ENGINE_MODEL_H

#include "backend.h"
#include "safetensors.h"
#include "flint/error.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum flint_arch_e {
  FLINT_ARCH_LLAMA,
  FLINT_ARCH_MISTRAL,
  FLINT_ARCH_QWEN2,
} flint_arch_t;

typedef enum flint_rope_scaling_e {
  FLINT_ROPE_NONE,
  FLINT_ROPE_LINEAR,
  FLINT_ROPE_LLAMA3,
} flint_rope_scaling_t;

#define FLINT_MAX_EOS 8

typedef struct flint_model_config_s {
  flint_arch_t arch;
  char arch_name[64];          /* as config.json spells it (architectures[0]) */
  uint32_t hidden, intermediate, layers, heads, kv_heads, head_dim, vocab, max_pos;
  float rms_eps;
  double rope_theta;
  flint_rope_scaling_t rope_scaling;
  double rope_factor, rope_low_freq, rope_high_freq, rope_orig_max_pos;
  bool tie_embeddings;
  bool qkv_bias;
  uint32_t sliding_window;     /* 0 = none */
  int32_t bos_id;              /* -1 = none */
  int32_t eos_ids[FLINT_MAX_EOS];
  size_t n_eos;
} flint_model_config_t;

/* Parses config.json (`len` bytes). `file` names it in messages. Returns 0, or -1 with
 * FLINT_EPRECONDITION naming the field: "`config.json`: field `num_key_value_heads`: ...". */
int flint__model_config_parse (const char *file, const char *text, size_t len, flint_model_config_t *out,
                               flint_error_t *err);

/* The rotary frequencies of the config (head_dim / 2 of them), scaling applied. */
void flint__rope_inv_freq (const flint_model_config_t *c, double *inv_freq_out);

/* How the engine gets at a weight file: maps `file` (a name in the model directory) read-only
 * and shared, and returns its address and size. The mapping outlives the model. */
typedef int (*flint_model_map_fn) (void *data, const char *dir, const char *file, const void **addr_out,
                                   size_t *len_out, flint_error_t *err);

typedef struct flint_layer_s {
  flint_wmat_t attn_norm, q, k, v, q_bias, k_bias, v_bias, o, mlp_norm, gate, up, down;
} flint_layer_t;

typedef struct flint_model_s {
  flint_model_config_t cfg;
  char *dir;
  flint_backend_t *be;           /* borrowed */
  flint_st_file_t **shards;
  char **shard_names;
  size_t n_shards;
  flint_bweights_t *wset;
  flint_wmat_t embed, norm, head;
  flint_layer_t *layer;
  uint64_t weight_bytes;         /* the bytes a decode step reads from weights */
  uint32_t context;              /* positions the RoPE table covers */
  uint32_t max_tokens;           /* rows one forward pass may have */
  uint32_t max_out;              /* logit rows one forward pass may have */
  /* device buffers */
  float *rope;                   /* [context][head_dim/2][2] */
  float *x, *xn, *q, *k, *v, *att, *gate, *up, *sel, *logits;
} flint_model_t;

typedef struct flint_model_options_s {
  flint_backend_t *be;
  flint_model_map_fn map;       /* NULL: mmap the files itself (tests, benchmarks) */
  void *map_data;
  uint32_t context;             /* positions served (<= max_position_embeddings; 0 = that, at most 4096) */
  uint32_t max_tokens;          /* rows per forward pass */
  uint32_t max_out;             /* logit rows per forward pass */
} flint_model_options_t;

/* Opens the model in `dir`: config.json, every *.safetensors file (in name order; the index file
 * is not needed), tensors bound and placed on the backend, activations allocated. Returns 0, or
 * -1 with a message naming the file and the field. */
int flint__model_open (const char *dir, const flint_model_options_t *o, flint_model_t **out, flint_error_t *err);
void flint__model_free (flint_model_t *m);

/* One forward pass of `b` (b->n <= max_tokens, b->n_out <= max_out) against `kv`: writes
 * b->n_out x vocab logits (F32) to `logits_out` on the host. Returns 0 or -1 (backend failure). */
int flint__model_forward (flint_model_t *m, flint_bkv_t *kv, const flint_batch_t *b, float *logits_out,
                          flint_error_t *err);

/* The KV-cache geometry of the model for `seqs` sequences of `context` positions. */
flint_kv_geom_t flint__model_kv_geom (const flint_model_t *m, uint32_t seqs, uint32_t context);

#endif
