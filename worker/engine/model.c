/* Opening a model: config.json, the safetensors shards (mapped, never copied into private
 * memory), tensor binding with shape and dtype checks, placement on the backend, activation
 * buffers and the RoPE table. See model.h. */
#include "model.h"
#include "flint/cleanup.h"
#include "flint/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_SHARDS 4096
#define MAX_CONFIG_BYTES (16u << 20)

/* The default map function: the file itself, MAP_SHARED read-only (tests and benchmarks; the
 * worker maps through the node weight store instead). The mapping is recorded in `own` so that
 * the model unmaps what it mapped. */
typedef struct own_map_s {
  void *addr;
  size_t len;
} own_map_t;

static int
map_file (const char *dir, const char *file, const void **addr_out, size_t *len_out, own_map_t *own,
          flint_error_t *err)
{
  char path[4096];
  _cleanup_close_ int fd = -1;
  struct stat st;
  void *p;

  snprintf (path, sizeof path, "%s/%s", dir, file);
  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat (fd, &st) < 0)
    return flint_error_set_errno (err, FLINT_EPRECONDITION, errno, "open `%s`", path);
  if (st.st_size == 0)
    return flint_error_set (err, FLINT_EPRECONDITION, "`%s`: empty file", file);
  p = mmap (NULL, (size_t) st.st_size, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    return flint_error_set_errno (err, FLINT_EINTERNAL, errno, "mmap `%s`", path);
  own->addr = p;
  own->len = (size_t) st.st_size;
  *addr_out = p;
  *len_out = (size_t) st.st_size;
  return 0;
}

typedef struct model_priv_s {
  flint_model_t pub;
  own_map_t *own;          /* [n_shards] mappings the model made itself */
  uint8_t **used;          /* [n_shards][tensors]: bound by the config */
} model_priv_t;

static int
cmp_str (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

static bool
has_suffix (const char *s, const char *sfx)
{
  size_t a = strlen (s), b = strlen (sfx);
  return a >= b && strcmp (s + a - b, sfx) == 0;
}

/* The *.safetensors names of `dir`, sorted. */
static int
list_shards (const char *dir, char ***names_out, size_t *n_out, flint_error_t *err)
{
  DIR *d = opendir (dir);
  struct dirent *de;
  char **names = NULL;
  size_t n = 0;

  if (d == NULL)
    return flint_error_set_errno (err, FLINT_EPRECONDITION, errno, "model directory `%s`", dir);
  while ((de = readdir (d)) != NULL)
    {
      char **nn;
      if (!has_suffix (de->d_name, ".safetensors") || de->d_name[0] == '.')
        continue;
      if (n == MAX_SHARDS || (nn = realloc (names, (n + 1) * sizeof *names)) == NULL)
        {
          closedir (d);
          for (size_t i = 0; i < n; i++)
            free (names[i]);
          free (names);
          return flint_error_set (err, FLINT_EPRECONDITION, "model directory `%s`: too many safetensors files", dir);
        }
      names = nn;
      names[n] = strdup (de->d_name);
      if (names[n] == NULL)
        abort ();
      n++;
    }
  closedir (d);
  if (n == 0)
    {
      free (names);
      return flint_error_set (err, FLINT_EPRECONDITION, "model directory `%s`: no *.safetensors files", dir);
    }
  qsort (names, n, sizeof *names, cmp_str);
  *names_out = names;
  *n_out = n;
  return 0;
}

/* ---- binding ------------------------------------------------------------------------------ */

typedef struct binder_s {
  model_priv_t *m;
  flint_bweight_t *up;     /* tensors to place on the backend */
  flint_wmat_t **slots;    /* where each one's device pointer goes */
  size_t n_up, cap;
  flint_error_t *err;
} binder_t;

static const char *
shape_str (const flint_st_tensor_t *t, char *buf, size_t len)
{
  size_t o = 0;
  o += (size_t) snprintf (buf + o, len - o, "[");
  for (uint32_t i = 0; i < t->ndim && o < len; i++)
    o += (size_t) snprintf (buf + o, len - o, "%s%llu", i ? ", " : "", (unsigned long long) t->shape[i]);
  if (o < len)
    snprintf (buf + o, len - o, "]");
  return buf;
}

/* Binds tensor `name` of shape rows x cols (cols == 0: a vector of `rows`) to *w. `why` says
 * which config fields set the shape. Absent optional tensors leave *w zeroed and return 1. */
static int
bind (binder_t *b, const char *name, uint32_t rows, uint32_t cols, const char *why, bool optional, flint_wmat_t *w)
{
  flint_model_t *m = &b->m->pub;
  const flint_st_tensor_t *t = NULL;
  size_t shard = 0;
  char got[128];
  bool ok_shape;

  for (size_t i = 0; i < m->n_shards; i++)
    {
      const flint_st_tensor_t *x = flint_st_find (m->shards[i], name);
      if (x == NULL)
        continue;
      if (t != NULL)
        return flint_error_set (b->err, FLINT_EPRECONDITION, "tensor `%s` is in both `%s` and `%s`", name,
                                m->shard_names[shard], m->shard_names[i]);
      t = x;
      shard = i;
    }
  if (t == NULL)
    {
      if (optional)
        {
          memset (w, 0, sizeof *w);
          return 1;
        }
      return flint_error_set (b->err, FLINT_EPRECONDITION,
                              "`%s`: tensor `%s` is in none of the safetensors files (config.json: %s)", m->dir, name, why);
    }
  if (t->dtype != FLINT_DTYPE_F32 && t->dtype != FLINT_DTYPE_F16 && t->dtype != FLINT_DTYPE_BF16)
    return flint_error_set (b->err, FLINT_EPRECONDITION,
                            "`%s`: tensor `%s`: field `dtype`: %s is not supported (F32, F16 or BF16)",
                            m->shard_names[shard], name, flint_dtype_name (t->dtype));
  ok_shape = cols ? t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols : t->ndim == 1 && t->shape[0] == rows;
  if (!ok_shape)
    {
      if (cols)
        return flint_error_set (b->err, FLINT_EPRECONDITION,
                                "`%s`: tensor `%s`: field `shape`: %s does not match config.json ([%u, %u] from %s)",
                                m->shard_names[shard], name, shape_str (t, got, sizeof got), rows, cols, why);
      return flint_error_set (b->err, FLINT_EPRECONDITION,
                              "`%s`: tensor `%s`: field `shape`: %s does not match config.json ([%u] from %s)",
                              m->shard_names[shard], name, shape_str (t, got, sizeof got), rows, why);
    }
  b->m->used[shard][t - m->shards[shard]->tensors] = 1;
  w->data = t->data; /* host address until placed on the backend */
  w->dtype = t->dtype;
  w->rows = cols ? rows : 1;
  w->cols = cols ? cols : rows;
  if (b->n_up == b->cap)
    {
      size_t cap = b->cap ? 2 * b->cap : 64;
      flint_bweight_t *u = realloc (b->up, cap * sizeof *u);
      flint_wmat_t **s = realloc (b->slots, cap * sizeof *s);
      if (u)
        b->up = u;
      if (s)
        b->slots = s;
      if (!u || !s)
        return flint_error_set (b->err, FLINT_EINTERNAL, "out of memory");
      b->cap = cap;
    }
  b->up[b->n_up] = (flint_bweight_t) { .host = t->data, .bytes = t->bytes };
  b->slots[b->n_up++] = w;
  return 0;
}

static int
bind_all (binder_t *b)
{
  flint_model_t *m = &b->m->pub;
  const flint_model_config_t *c = &m->cfg;
  uint32_t qd = c->heads * c->head_dim, kvd = c->kv_heads * c->head_dim;
  char name[160];
  int r;

#define BIND(w, rows, cols, why, opt)                                                                  \
  do                                                                                                   \
    {                                                                                                  \
      if ((r = bind (b, name, rows, cols, why, opt, w)) < 0)                                           \
        return -1;                                                                                     \
    }                                                                                                  \
  while (0)

  snprintf (name, sizeof name, "model.embed_tokens.weight");
  BIND (&m->embed, c->vocab, c->hidden, "vocab_size x hidden_size", false);
  snprintf (name, sizeof name, "model.norm.weight");
  BIND (&m->norm, c->hidden, 0, "hidden_size", false);
  snprintf (name, sizeof name, "lm_head.weight");
  BIND (&m->head, c->vocab, c->hidden, "vocab_size x hidden_size; tie_word_embeddings is false",
        c->tie_embeddings);
  for (uint32_t l = 0; l < c->layers; l++)
    {
      flint_layer_t *L = &m->layer[l];
#define LAYER(field, suffix, rows, cols, why, opt)                                                     \
      snprintf (name, sizeof name, "model.layers.%u.%s", l, suffix);                                   \
      BIND (&L->field, rows, cols, why, opt)
      LAYER (attn_norm, "input_layernorm.weight", c->hidden, 0, "hidden_size", false);
      LAYER (q, "self_attn.q_proj.weight", qd, c->hidden, "num_attention_heads x head_dim by hidden_size", false);
      LAYER (k, "self_attn.k_proj.weight", kvd, c->hidden, "num_key_value_heads x head_dim by hidden_size", false);
      LAYER (v, "self_attn.v_proj.weight", kvd, c->hidden, "num_key_value_heads x head_dim by hidden_size", false);
      if (c->qkv_bias)
        {
          LAYER (q_bias, "self_attn.q_proj.bias", qd, 0, "num_attention_heads x head_dim", false);
          LAYER (k_bias, "self_attn.k_proj.bias", kvd, 0, "num_key_value_heads x head_dim", false);
          LAYER (v_bias, "self_attn.v_proj.bias", kvd, 0, "num_key_value_heads x head_dim", false);
        }
      LAYER (o, "self_attn.o_proj.weight", c->hidden, qd, "hidden_size by num_attention_heads x head_dim", false);
      LAYER (mlp_norm, "post_attention_layernorm.weight", c->hidden, 0, "hidden_size", false);
      LAYER (gate, "mlp.gate_proj.weight", c->intermediate, c->hidden, "intermediate_size by hidden_size", false);
      LAYER (up, "mlp.up_proj.weight", c->intermediate, c->hidden, "intermediate_size by hidden_size", false);
      LAYER (down, "mlp.down_proj.weight", c->hidden, c->intermediate, "hidden_size by intermediate_size", false);
#undef LAYER
    }
#undef BIND

  /* anything left over means the config describes another model */
  for (size_t i = 0; i < m->n_shards; i++)
    for (size_t j = 0; j < m->shards[i]->n; j++)
      {
        const char *tn = m->shards[i]->tensors[j].name;
        if (b->m->used[i][j] || has_suffix (tn, ".rotary_emb.inv_freq"))
          continue;
        return flint_error_set (b->err, FLINT_EPRECONDITION,
                                "`%s`: tensor `%s` is not part of a %s with the shape in config.json (%u layers%s)",
                                m->shard_names[i], tn, c->arch_name, c->layers,
                                c->qkv_bias ? ", q/k/v biases" : ", no biases");
      }
  return 0;
}

/* ---- open / free -------------------------------------------------------------------------- */

static uint64_t
wbytes (const flint_wmat_t *w)
{
  return w->data ? (uint64_t) w->rows * w->cols * flint_dtype_size (w->dtype) : 0;
}

int
flint__model_open (const char *dir, const flint_model_options_t *o, flint_model_t **out, flint_error_t *err)
{
  model_priv_t *mp;
  flint_model_t *m;
  flint_backend_t *be = o->be;
  _cleanup_free_ char *cfg_text = NULL;
  size_t cfg_len = 0;
  char path[4096];
  binder_t b = { 0 };
  double *inv = NULL;
  float *table = NULL;
  int r;

  mp = calloc (1, sizeof *mp);
  if (mp == NULL)
    return flint_error_set (err, FLINT_EINTERNAL, "out of memory");
  m = &mp->pub;
  m->be = be;
  m->dir = strdup (dir);
  if (m->dir == NULL)
    abort ();

  snprintf (path, sizeof path, "%s/config.json", dir);
  r = flint_read_file (path, MAX_CONFIG_BYTES, &cfg_text, &cfg_len);
  if (r < 0)
    {
      flint_error_set_errno (err, FLINT_EPRECONDITION, r, "read `%s`", path);
      goto fail;
    }
  if (flint__model_config_parse ("config.json", cfg_text, cfg_len, &m->cfg, err) < 0)
    goto fail;

  if (list_shards (dir, &m->shard_names, &m->n_shards, err) < 0)
    goto fail;
  m->shards = calloc (m->n_shards, sizeof *m->shards);
  mp->own = calloc (m->n_shards, sizeof *mp->own);
  mp->used = calloc (m->n_shards, sizeof *mp->used);
  if (!m->shards || !mp->own || !mp->used)
    abort ();
  for (size_t i = 0; i < m->n_shards; i++)
    {
      const void *addr;
      size_t len;
      if (o->map)
        r = o->map (o->map_data, dir, m->shard_names[i], &addr, &len, err);
      else
        r = map_file (dir, m->shard_names[i], &addr, &len, &mp->own[i], err);
      if (r < 0)
        goto fail;
      if (flint_st_parse (m->shard_names[i], addr, len, &m->shards[i], err) < 0)
        goto fail;
      mp->used[i] = calloc (m->shards[i]->n + 1, 1);
      if (mp->used[i] == NULL)
        abort ();
    }

  m->layer = calloc (m->cfg.layers, sizeof *m->layer);
  if (m->layer == NULL)
    abort ();
  b.m = mp;
  b.err = err;
  if (bind_all (&b) < 0)
    goto fail;
  if (be->ops->weights_upload (be, b.up, b.n_up, &m->wset, err) < 0)
    {
      flint_error_prefix (err, "place the weights of `%s` on the %s backend", dir, be->name);
      goto fail;
    }
  for (size_t i = 0; i < b.n_up; i++)
    b.slots[i]->data = b.up[i].dev;
  if (m->head.data == NULL)
    m->head = m->embed; /* tied: the embedding matrix is the head */

  m->weight_bytes = wbytes (&m->norm) + wbytes (&m->head);
  for (uint32_t l = 0; l < m->cfg.layers; l++)
    {
      const flint_layer_t *L = &m->layer[l];
      m->weight_bytes += wbytes (&L->attn_norm) + wbytes (&L->q) + wbytes (&L->k) + wbytes (&L->v) + wbytes (&L->o)
                         + wbytes (&L->mlp_norm) + wbytes (&L->gate) + wbytes (&L->up) + wbytes (&L->down)
                         + wbytes (&L->q_bias) + wbytes (&L->k_bias) + wbytes (&L->v_bias);
    }

  /* activations and the RoPE table */
  if (o->context > m->cfg.max_pos)
    {
      flint_error_set (err, FLINT_EPRECONDITION, "config `context`: %u positions exceed `config.json` field "
                       "`max_position_embeddings` (%u)", o->context, m->cfg.max_pos);
      goto fail;
    }
  m->context = o->context ? o->context : m->cfg.max_pos < 4096 ? m->cfg.max_pos : 4096;
  m->max_tokens = o->max_tokens ? o->max_tokens : 1;
  m->max_out = o->max_out ? o->max_out : 1;
  {
    const flint_model_config_t *c = &m->cfg;
    size_t T = m->max_tokens, half = c->head_dim / 2;
#define ALLOC(p, n)                                                                                    \
    if ((p = be->ops->alloc (be, (size_t) (n) * sizeof (float))) == NULL)                             \
      {                                                                                                \
        flint_error_set (err, FLINT_EEXHAUSTED, "allocate %zu bytes of activations on the %s backend", \
                         (size_t) (n) * sizeof (float), be->name);                                     \
        goto fail;                                                                                     \
      }
    ALLOC (m->x, T * c->hidden);
    ALLOC (m->xn, T * c->hidden);
    ALLOC (m->q, T * c->heads * c->head_dim);
    ALLOC (m->k, T * c->kv_heads * c->head_dim);
    ALLOC (m->v, T * c->kv_heads * c->head_dim);
    ALLOC (m->att, T * c->heads * c->head_dim);
    ALLOC (m->gate, T * c->intermediate);
    ALLOC (m->up, T * c->intermediate);
    ALLOC (m->sel, (size_t) m->max_out * c->hidden);
    ALLOC (m->logits, (size_t) m->max_out * c->vocab);
    ALLOC (m->rope, (size_t) m->context * half * 2);
#undef ALLOC
    inv = malloc (half * sizeof *inv);
    table = malloc ((size_t) m->context * half * 2 * sizeof *table);
    if (!inv || !table)
      abort ();
    flint__rope_inv_freq (c, inv);
    /* angles in double: at position 100k a float product is already off by radians */
    for (size_t p = 0; p < m->context; p++)
      for (size_t j = 0; j < half; j++)
        {
          double a = (double) p * inv[j];
          table[(p * half + j) * 2] = (float) cos (a);
          table[(p * half + j) * 2 + 1] = (float) sin (a);
        }
    if (be->ops->upload (be, m->rope, table, (size_t) m->context * half * 2 * sizeof *table, err) < 0)
      goto fail;
  }
  free (inv);
  free (table);
  free (b.up);
  free (b.slots);
  *out = m;
  return 0;

fail:
  free (inv);
  free (table);
  free (b.up);
  free (b.slots);
  flint__model_free (m);
  return -1;
}

void
flint__model_free (flint_model_t *m)
{
  model_priv_t *mp = (model_priv_t *) m;
  flint_backend_t *be;

  if (m == NULL)
    return;
  be = m->be;
  {
    float *bufs[] = { m->x, m->xn, m->q, m->k, m->v, m->att, m->gate, m->up, m->sel, m->logits, m->rope };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
      if (bufs[i])
        be->ops->free (be, bufs[i]);
  }
  if (m->wset)
    be->ops->weights_free (be, m->wset);
  for (size_t i = 0; i < m->n_shards; i++)
    {
      if (m->shards)
        flint_st_free (m->shards[i]);
      if (mp->own && mp->own[i].addr)
        munmap (mp->own[i].addr, mp->own[i].len);
      if (mp->used)
        free (mp->used[i]);
      free (m->shard_names[i]);
    }
  free (m->shards);
  free (m->shard_names);
  free (mp->own);
  free (mp->used);
  free (m->layer);
  free (m->dir);
  free (mp);
}

flint_kv_geom_t
flint__model_kv_geom (const flint_model_t *m, uint32_t seqs, uint32_t context)
{
  return (flint_kv_geom_t) { .layers = m->cfg.layers, .seqs = seqs, .context = context,
                             .kv_heads = m->cfg.kv_heads, .head_dim = m->cfg.head_dim };
}
