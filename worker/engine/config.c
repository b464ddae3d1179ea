/* config.json of a Hugging Face llama-family model. See model.h for the families. Every field
 * the decoder depends on is checked for type and range; features the engine does not implement
 * (other activations, MLP biases, YaRN scaling, Qwen2's per-layer sliding windows) are refused
 * with the field named, never ignored. */
#include "model.h"
#include "flint/json.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define FAIL(...) flint_error_set (err, FLINT_EPRECONDITION, __VA_ARGS__)

static const struct {
  const char *architecture, *model_type;
  flint_arch_t arch;
} archs[] = {
  { "LlamaForCausalLM", "llama", FLINT_ARCH_LLAMA },
  { "MistralForCausalLM", "mistral", FLINT_ARCH_MISTRAL },
  { "Qwen2ForCausalLM", "qwen2", FLINT_ARCH_QWEN2 },
};

/* A positive integer field (absent: `dflt`, 0 = required). */
static int
get_uint (const char *file, const flint_json_t *root, const char *key, uint32_t dflt, uint32_t max, uint32_t *out,
          flint_error_t *err)
{
  const flint_json_t *v = flint_json_get (root, key);
  if (v == NULL || v->type == FLINT_JSON_NULL)
    {
      if (dflt == 0)
        return FAIL ("`%s`: field `%s`: missing", file, key);
      *out = dflt;
      return 0;
    }
  if (v->type != FLINT_JSON_NUMBER || !v->is_int || v->i64 <= 0 || v->i64 > max)
    return FAIL ("`%s`: field `%s`: expected an integer between 1 and %u", file, key, max);
  *out = (uint32_t) v->i64;
  return 0;
}

static int
get_num (const char *file, const flint_json_t *root, const char *key, double dflt, double *out, flint_error_t *err)
{
  const flint_json_t *v = flint_json_get (root, key);
  if (v == NULL || v->type == FLINT_JSON_NULL)
    {
      *out = dflt;
      return 0;
    }
  if (v->type != FLINT_JSON_NUMBER || !isfinite (v->num) || v->num <= 0)
    return FAIL ("`%s`: field `%s`: expected a positive number", file, key);
  *out = v->num;
  return 0;
}

static int
get_bool (const char *file, const flint_json_t *root, const char *key, bool dflt, bool *out, flint_error_t *err)
{
  const flint_json_t *v = flint_json_get (root, key);
  if (v == NULL || v->type == FLINT_JSON_NULL)
    {
      *out = dflt;
      return 0;
    }
  if (v->type != FLINT_JSON_BOOL)
    return FAIL ("`%s`: field `%s`: expected true or false", file, key);
  *out = v->b;
  return 0;
}

static int
rope_scaling (const char *file, const flint_json_t *rs, flint_model_config_t *c, flint_error_t *err)
{
  const char *type = NULL;
  size_t n;

  if (rs == NULL || rs->type == FLINT_JSON_NULL)
    return 0;
  if (rs->type != FLINT_JSON_OBJECT)
    return FAIL ("`%s`: field `rope_scaling`: expected an object or null", file);
  if (!flint_json_get_string (rs, "rope_type", &type, &n) && !flint_json_get_string (rs, "type", &type, &n))
    return FAIL ("`%s`: field `rope_scaling.rope_type`: missing", file);
  if (strcmp (type, "default") == 0)
    return 0;
  if (get_num (file, rs, "factor", 0, &c->rope_factor, err) < 0)
    return -1;
  if (c->rope_factor < 1.0)
    return FAIL ("`%s`: field `rope_scaling.factor`: expected a number >= 1", file);
  if (strcmp (type, "linear") == 0)
    {
      c->rope_scaling = FLINT_ROPE_LINEAR;
      return 0;
    }
  if (strcmp (type, "llama3") == 0)
    {
      if (get_num (file, rs, "low_freq_factor", 0, &c->rope_low_freq, err) < 0
          || get_num (file, rs, "high_freq_factor", 0, &c->rope_high_freq, err) < 0
          || get_num (file, rs, "original_max_position_embeddings", 0, &c->rope_orig_max_pos, err) < 0)
        return -1;
      if (c->rope_low_freq <= 0 || c->rope_high_freq <= c->rope_low_freq || c->rope_orig_max_pos <= 0)
        return FAIL ("`%s`: field `rope_scaling`: llama3 scaling needs 0 < low_freq_factor < high_freq_factor and "
                     "original_max_position_embeddings", file);
      c->rope_scaling = FLINT_ROPE_LLAMA3;
      return 0;
    }
  return FAIL ("`%s`: field `rope_scaling.rope_type`: `%.40s` is not supported (flint implements linear and llama3)",
               file, type);
}

static int
token_ids (const char *file, const flint_json_t *v, const char *key, flint_model_config_t *c, flint_error_t *err)
{
  if (v == NULL || v->type == FLINT_JSON_NULL)
    return 0;
  if (v->type == FLINT_JSON_NUMBER && v->is_int && v->i64 >= 0 && v->i64 < c->vocab)
    {
      c->eos_ids[c->n_eos++] = (int32_t) v->i64;
      return 0;
    }
  if (v->type == FLINT_JSON_ARRAY && v->len <= FLINT_MAX_EOS)
    {
      for (size_t i = 0; i < v->len; i++)
        {
          const flint_json_t *x = v->items[i];
          if (x->type != FLINT_JSON_NUMBER || !x->is_int || x->i64 < 0 || x->i64 >= c->vocab)
            return FAIL ("`%s`: field `%s`: ids must be integers below vocab_size %u", file, key, c->vocab);
          c->eos_ids[c->n_eos++] = (int32_t) x->i64;
        }
      return 0;
    }
  return FAIL ("`%s`: field `%s`: expected a token id or a list of at most %d", file, key, FLINT_MAX_EOS);
}

int
flint__model_config_parse (const char *file, const char *text, size_t len, flint_model_config_t *c,
                           flint_error_t *err)
{
  flint_json_doc_t *doc = NULL;
  const flint_json_t *root, *v;
  char jerr[160];
  const char *s = NULL, *mt = NULL;
  size_t n;
  bool found = false, b;
  double d = 0;
  int rc = -1;

  memset (c, 0, sizeof *c);
  c->bos_id = -1;
  if (flint_json_parse (text, len, &doc, jerr, sizeof jerr) < 0)
    return FAIL ("`%s`: %s", file, jerr);
  root = flint_json_root (doc);
  if (root->type != FLINT_JSON_OBJECT)
    {
      FAIL ("`%s`: expected a JSON object", file);
      goto out;
    }
  v = flint_json_get (root, "architectures");
  if (v && v->type == FLINT_JSON_ARRAY && v->len >= 1 && v->items[0]->type == FLINT_JSON_STRING)
    s = v->items[0]->str;
  flint_json_get_string (root, "model_type", &mt, &n);
  if (s == NULL && mt == NULL)
    {
      FAIL ("`%s`: field `architectures`: missing (and no `model_type`)", file);
      goto out;
    }
  for (size_t i = 0; i < sizeof archs / sizeof archs[0] && !found; i++)
    if (s ? strcmp (s, archs[i].architecture) == 0 : strcmp (mt, archs[i].model_type) == 0)
      {
        c->arch = archs[i].arch;
        snprintf (c->arch_name, sizeof c->arch_name, "%s", archs[i].architecture);
        found = true;
      }
  if (!found)
    {
      FAIL ("`%s`: field `%s`: unsupported architecture `%.60s` (flint serves LlamaForCausalLM, "
            "MistralForCausalLM and Qwen2ForCausalLM)", file, s ? "architectures" : "model_type", s ? s : mt);
      goto out;
    }

  if (get_uint (file, root, "hidden_size", 0, 1u << 16, &c->hidden, err) < 0
      || get_uint (file, root, "intermediate_size", 0, 1u << 18, &c->intermediate, err) < 0
      || get_uint (file, root, "num_hidden_layers", 0, 1024, &c->layers, err) < 0
      || get_uint (file, root, "num_attention_heads", 0, 1024, &c->heads, err) < 0
      || get_uint (file, root, "num_key_value_heads", c->heads, 1024, &c->kv_heads, err) < 0
      || get_uint (file, root, "vocab_size", 0, 1u << 22, &c->vocab, err) < 0
      || get_uint (file, root, "max_position_embeddings", 2048, 1u << 24, &c->max_pos, err) < 0)
    goto out;
  if (c->hidden % c->heads != 0)
    {
      FAIL ("`%s`: field `num_attention_heads`: %u does not divide hidden_size %u", file, c->heads, c->hidden);
      goto out;
    }
  if (get_uint (file, root, "head_dim", c->hidden / c->heads, 1024, &c->head_dim, err) < 0)
    goto out;
  if (c->head_dim % 2 != 0)
    {
      FAIL ("`%s`: field `head_dim`: %u is odd (rotary embeddings need pairs)", file, c->head_dim);
      goto out;
    }
  if (c->heads % c->kv_heads != 0)
    {
      FAIL ("`%s`: field `num_key_value_heads`: %u does not divide num_attention_heads %u", file, c->kv_heads,
            c->heads);
      goto out;
    }
  if (get_num (file, root, "rms_norm_eps", 1e-6, &d, err) < 0)
    goto out;
  c->rms_eps = (float) d;
  if (get_num (file, root, "rope_theta", 10000.0, &c->rope_theta, err) < 0)
    goto out;
  if (rope_scaling (file, flint_json_get (root, "rope_scaling"), c, err) < 0)
    goto out;
  if (get_bool (file, root, "tie_word_embeddings", false, &c->tie_embeddings,
                err) < 0)
    goto out;
  if (flint_json_get_string (root, "hidden_act", &s, &n) && strcmp (s, "silu") != 0)
    {
      FAIL ("`%s`: field `hidden_act`: `%.40s` is not supported (flint implements silu)", file, s);
      goto out;
    }
  if (get_bool (file, root, "mlp_bias", false, &b, err) < 0)
    goto out;
  if (b)
    {
      FAIL ("`%s`: field `mlp_bias`: MLP biases are not supported", file);
      goto out;
    }
  if (get_bool (file, root, "attention_bias", c->arch == FLINT_ARCH_QWEN2, &c->qkv_bias, err) < 0)
    goto out;
  if (c->arch == FLINT_ARCH_QWEN2)
    {
      if (get_bool (file, root, "use_sliding_window", false, &b, err) < 0)
        goto out;
      if (b)
        {
          FAIL ("`%s`: field `use_sliding_window`: Qwen2's per-layer sliding window is not supported", file);
          goto out;
        }
    }
  else if (c->arch == FLINT_ARCH_MISTRAL)
    {
      v = flint_json_get (root, "sliding_window");
      if (v && v->type != FLINT_JSON_NULL
          && get_uint (file, root, "sliding_window", 0, 1u << 24, &c->sliding_window, err) < 0)
        goto out;
    }
  v = flint_json_get (root, "bos_token_id");
  if (v && v->type == FLINT_JSON_NUMBER && v->is_int && v->i64 >= 0 && v->i64 < c->vocab)
    c->bos_id = (int32_t) v->i64;
  else if (v && v->type != FLINT_JSON_NULL)
    {
      FAIL ("`%s`: field `bos_token_id`: expected a token id below vocab_size %u", file, c->vocab);
      goto out;
    }
  if (token_ids (file, flint_json_get (root, "eos_token_id"), "eos_token_id", c, err) < 0)
    goto out;
  rc = 0;
out:
  flint_json_doc_free (doc);
  return rc;
}

void
flint__rope_inv_freq (const flint_model_config_t *c, double *inv)
{
  uint32_t half = c->head_dim / 2;

  for (uint32_t j = 0; j < half; j++)
    {
      double f = 1.0 / pow (c->rope_theta, (double) (2 * j) / (double) c->head_dim);
      if (c->rope_scaling == FLINT_ROPE_LINEAR)
        f /= c->rope_factor;
      else if (c->rope_scaling == FLINT_ROPE_LLAMA3)
        {
          /* long wavelengths are slowed by `factor`, short ones kept, the band between blended */
          double wl = 2 * M_PI / f;
          double lo_wl = c->rope_orig_max_pos / c->rope_low_freq, hi_wl = c->rope_orig_max_pos / c->rope_high_freq;
          if (wl > lo_wl)
            f /= c->rope_factor;
          else if (wl >= hi_wl)
            {
              double s = (c->rope_orig_max_pos / wl - c->rope_low_freq) / (c->rope_high_freq - c->rope_low_freq);
              f = (1 - s) * f / c->rope_factor + s * f;
            }
        }
      inv[j] = f;
    }
}
