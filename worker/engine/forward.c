/* The decoder's forward pass, written once against the backend table (backend.h). It fixes
 * the order of operations; the backend owns memory and kernels. Every operation is row-wise or
 * per (row, head), so a token's result does not depend on what else is in the batch: the
 * scheduler can mix prompt chunks, decode steps and speculative verification freely. */
#include "model.h"

#include <math.h>

int
flint__model_forward (flint_model_t *m, flint_bkv_t *kv, const flint_batch_t *b, float *logits_out, flint_error_t *err)
{
  flint_backend_t *be = m->be;
  const flint_backend_ops_t *op = be->ops;
  const flint_model_config_t *c = &m->cfg;
  uint32_t T = b->n;
  flint_attn_params_t ap = {
    .heads = c->heads,
    .kv_heads = c->kv_heads,
    .head_dim = c->head_dim,
    .scale = 1.0f / sqrtf ((float) c->head_dim),
    .window = c->sliding_window,
  };

  if (T == 0 || T > m->max_tokens || b->n_out > m->max_out)
    return flint_error_set (err, FLINT_EINTERNAL, "forward pass of %u rows (%u logits) exceeds the model's buffers "
                            "(%u, %u)", T, b->n_out, m->max_tokens, m->max_out);
  for (uint32_t i = 0; i < T; i++)
    if (b->pos[i] >= m->context || b->tokens[i] < 0 || (uint32_t) b->tokens[i] >= c->vocab)
      return flint_error_set (err, FLINT_EINTERNAL, "forward pass: row %u has position %u / token %d out of range", i,
                              b->pos[i], b->tokens[i]);
  if (op->batch_set (be, b, err) < 0)
    return -1;
  op->embed (be, m->x, &m->embed);
  for (uint32_t l = 0; l < c->layers; l++)
    {
      const flint_layer_t *L = &m->layer[l];
      op->rmsnorm (be, m->xn, m->x, &L->attn_norm, T, c->rms_eps);
      op->matmul (be, m->q, m->xn, T, &L->q, L->q_bias.data ? &L->q_bias : NULL);
      op->matmul (be, m->k, m->xn, T, &L->k, L->k_bias.data ? &L->k_bias : NULL);
      op->matmul (be, m->v, m->xn, T, &L->v, L->v_bias.data ? &L->v_bias : NULL);
      op->rope (be, m->q, c->heads, c->head_dim, m->rope);
      op->rope (be, m->k, c->kv_heads, c->head_dim, m->rope);
      op->attention (be, m->att, m->q, m->k, m->v, kv, l, &ap);
      op->matmul (be, m->xn, m->att, T, &L->o, NULL);
      op->add (be, m->x, m->xn, (size_t) T * c->hidden);
      op->rmsnorm (be, m->xn, m->x, &L->mlp_norm, T, c->rms_eps);
      op->matmul (be, m->gate, m->xn, T, &L->gate, NULL);
      op->matmul (be, m->up, m->xn, T, &L->up, NULL);
      op->silu_mul (be, m->gate, m->gate, m->up, (size_t) T * c->intermediate);
      op->matmul (be, m->xn, m->gate, T, &L->down, NULL);
      op->add (be, m->x, m->xn, (size_t) T * c->hidden);
    }
  if (b->n_out == 0)
    return op->download (be, NULL, NULL, 0, err);
  /* only the rows whose logits are wanted go through the final norm and the head */
  op->gather (be, m->sel, m->x, c->hidden);
  op->rmsnorm (be, m->sel, m->sel, &m->norm, b->n_out, c->rms_eps);
  op->matmul (be, m->logits, m->sel, b->n_out, &m->head, NULL);
  return op->download (be, logits_out, m->logits, (size_t) b->n_out * c->vocab * sizeof (float), err);
}
