#!/usr/bin/python3
"""Reference forward pass of a llama-family decoder in numpy float64, written from the
published architecture (Llama / Mistral / Qwen2 as in Hugging Face transformers), to check
flint's C engine against.

  reference.py logits MODEL_DIR ID...          logits of every position, JSON [[...], ...]
  reference.py generate MODEL_DIR N ID...      N greedy tokens after the prompt, JSON [...]
  reference.py encode MODEL_DIR TEXT           token ids (with the model's prefix tokens), JSON
  reference.py decode MODEL_DIR ID...          text, JSON string

No KV cache: every step recomputes the whole sequence, which is slow and obviously correct.
"""
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tinymodel  # noqa: E402


class Model:
    def __init__(self, d):
        with open(os.path.join(d, "config.json")) as f:
            self.cfg = c = json.load(f)
        self.w = tinymodel.read_model_tensors(d)
        self.h = c["hidden_size"]
        self.nh = c["num_attention_heads"]
        self.nkv = c.get("num_key_value_heads") or self.nh
        self.hd = c.get("head_dim") or self.h // self.nh
        self.layers = c["num_hidden_layers"]
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.window = c.get("sliding_window") if c.get("model_type") == "mistral" else None
        theta = c.get("rope_theta", 10000.0)
        inv = 1.0 / (theta ** (np.arange(0, self.hd, 2, dtype=np.float64) / self.hd))
        rs = c.get("rope_scaling")
        if rs:
            kind = rs.get("rope_type", rs.get("type"))
            if kind == "linear":
                inv = inv / rs["factor"]
            elif kind == "llama3":
                factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
                old = rs["original_max_position_embeddings"]
                lo_wl, hi_wl = old / lo, old / hi
                out = []
                for f in inv:
                    wl = 2 * math.pi / f
                    if wl < hi_wl:
                        out.append(f)
                    elif wl > lo_wl:
                        out.append(f / factor)
                    else:
                        s = (old / wl - lo) / (hi - lo)
                        out.append((1 - s) * f / factor + s * f)
                inv = np.array(out)
            else:
                raise SystemExit("reference: rope_scaling %r not implemented" % kind)
        self.inv_freq = inv
        self.head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])

    def rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):
        # x: [T, heads, hd]; rotate_half layout (first half, second half)
        ang = np.outer(pos, self.inv_freq)          # [T, hd/2]
        cos = np.cos(ang)[:, None, :]
        sin = np.sin(ang)[:, None, :]
        x1, x2 = x[..., :self.hd // 2], x[..., self.hd // 2:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    def lin(self, x, name):
        y = x @ self.w[name + ".weight"].T
        b = self.w.get(name + ".bias")
        return y + b if b is not None else y

    def logits(self, ids):
        w = self.w
        T = len(ids)
        pos = np.arange(T, dtype=np.float64)
        x = w["model.embed_tokens.weight"][np.array(ids)]
        mask = np.tril(np.ones((T, T), dtype=bool))
        if self.window:
            mask &= ~np.tril(np.ones((T, T), dtype=bool), -self.window)
        for i in range(self.layers):
            p = "model.layers.%d." % i
            hn = self.rmsnorm(x, w[p + "input_layernorm.weight"])
            q = self.lin(hn, p + "self_attn.q_proj").reshape(T, self.nh, self.hd)
            k = self.lin(hn, p + "self_attn.k_proj").reshape(T, self.nkv, self.hd)
            v = self.lin(hn, p + "self_attn.v_proj").reshape(T, self.nkv, self.hd)
            q, k = self.rope(q, pos), self.rope(k, pos)
            group = self.nh // self.nkv
            out = np.zeros((T, self.nh, self.hd))
            for h in range(self.nh):
                kh, vh = k[:, h // group], v[:, h // group]
                s = q[:, h] @ kh.T / math.sqrt(self.hd)
                s = np.where(mask, s, -np.inf)
                s = np.exp(s - s.max(axis=1, keepdims=True))
                s /= s.sum(axis=1, keepdims=True)
                out[:, h] = s @ vh
            x = x + self.lin(out.reshape(T, -1), p + "self_attn.o_proj")
            hn = self.rmsnorm(x, w[p + "post_attention_layernorm.weight"])
            g = self.lin(hn, p + "mlp.gate_proj")
            u = self.lin(hn, p + "mlp.up_proj")
            x = x + self.lin(g / (1 + np.exp(-g)) * u, p + "mlp.down_proj")
        x = self.rmsnorm(x, w["model.norm.weight"])
        return x @ self.head.T

    def generate(self, ids, n):
        ids = list(ids)
        out = []
        for _ in range(n):
            t = int(np.argmax(self.logits(ids)[-1]))
            out.append(t)
            ids.append(t)
        return out


def main():
    cmd, d = sys.argv[1], sys.argv[2]
    if cmd == "logits":
        ids = [int(x) for x in sys.argv[3:]]
        print(json.dumps(Model(d).logits(ids).tolist()))
    elif cmd == "generate":
        n = int(sys.argv[3])
        ids = [int(x) for x in sys.argv[4:]]
        print(json.dumps(Model(d).generate(ids, n)))
    elif cmd == "encode":
        print(json.dumps(tinymodel.Tokenizer(os.path.join(d, "tokenizer.json")).encode(sys.argv[3])))
    elif cmd == "decode":
        ids = [int(x) for x in sys.argv[3:]]
        print(json.dumps(tinymodel.Tokenizer(os.path.join(d, "tokenizer.json")).decode(ids)))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
