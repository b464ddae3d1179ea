"""Tiny llama-family models in the real Hugging Face formats, for flint's engine tests.

Everything here is written from the format descriptions, in plain Python and numpy (Debian's
python3-numpy), and is deliberately independent of the C engine: the tests compare the two.

  - safetensors: read and write (BF16, F16, F32), one or several shards plus the index file;
  - a byte-level BPE tokenizer: the pre-tokenizer patterns of GPT-2, Llama 3 and Qwen2 written
    out by hand (Python's `re` has no \\p{L}), BPE training on a generated corpus, encoding and
    decoding, tokenizer.json with added and special tokens;
  - config.json for llama, qwen2 and mistral style models, random weights, an optional draft
    model that shares the tokenizer and agrees with the target often enough for speculative
    decoding to accept tokens.

scripts/make-tiny-model is the command-line front end; tests/engine/reference.py holds the
float64 forward pass that checks the C engine's logits.
"""
import json
import os
import struct
import unicodedata

import numpy as np

# ---- safetensors --------------------------------------------------------------------------

DTYPES = {"bf16": "BF16", "fp16": "F16", "fp32": "F32"}
_ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def to_dtype_bytes(a, dtype):
    """float array -> raw little-endian bytes of `dtype` (BF16 rounds to nearest even)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.astype("<f4").tobytes()
    if dtype == "F16":
        return a.astype("<f2").tobytes()
    if dtype == "BF16":
        u = a.view(np.uint32).astype(np.uint64)
        rounding = ((u >> 16) & 1) + 0x7FFF
        return ((u + rounding) >> 16).astype("<u2").tobytes()
    raise ValueError("dtype " + dtype)


def from_dtype_bytes(buf, dtype, shape):
    """raw bytes -> float64 array."""
    if dtype == "F32":
        a = np.frombuffer(buf, dtype="<f4")
    elif dtype == "F16":
        a = np.frombuffer(buf, dtype="<f2")
    elif dtype == "BF16":
        a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        raise ValueError("unsupported dtype " + dtype)
    return a.astype(np.float64).reshape(shape)


def write_safetensors(path, tensors, dtype, metadata=None):
    """tensors: list of (name, shape, make) where make() returns the float array (called one at
    a time while writing, so a 1B-parameter model never sits in memory whole). Writes the
    header padded to 8 bytes, then the data in order."""
    header = {}
    off = 0
    size = _ITEMSIZE[dtype]
    for name, shape, _make in tensors:
        n = int(np.prod(shape)) * size
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = metadata or {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, shape, make in tensors:
            a = make()
            assert tuple(a.shape) == tuple(shape), name
            f.write(to_dtype_bytes(a, dtype))


def read_safetensors(path):
    """-> {name: float64 array}."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        out[name] = from_dtype_bytes(data[base + b:base + e], t["dtype"], t["shape"])
    return out


def read_model_tensors(model_dir):
    out = {}
    for fn in sorted(os.listdir(model_dir)):
        if fn.endswith(".safetensors"):
            out.update(read_safetensors(os.path.join(model_dir, fn)))
    return out


# ---- Unicode classes used by the pre-tokenizers ---------------------------------------------

# \s of the regex engines the tokenizers use: Unicode White_Space.
WHITE_SPACE = set([0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680] + list(range(0x2000, 0x200B))
                  + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000])


def is_space(c):
    return ord(c) in WHITE_SPACE


def is_letter(c):
    return unicodedata.category(c).startswith("L")


def is_number(c):
    return unicodedata.category(c).startswith("N")


PATTERN_GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PATTERN_LLAMA3 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                  r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
PATTERN_QWEN2 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")

CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]


def _run(s, i, pred):
    j = i
    while j < len(s) and pred(s[j]):
        j += 1
    return j


def _ws_tail(s, i):
    """\\s+(?!\\S) then \\s+ at i (whitespace at s[i] is known). Returns the end."""
    j = _run(s, i, is_space)
    if j == len(s):
        return j
    if j - 1 > i:
        return j - 1
    return j  # \s+ alone


def _other(c):
    return not is_space(c) and not is_letter(c) and not is_number(c)


def split_gpt2(s):
    out = []
    i = 0
    n = len(s)
    while i < n:
        j = None
        for c in CONTRACTIONS:
            if s.startswith(c, i):
                j = i + len(c)
                break
        if j is None:
            # ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': the optional space belongs to the run
            k = i + 1 if s[i] == " " and i + 1 < n and not is_space(s[i + 1]) else i
            for pred in (is_letter, is_number, _other):
                if pred(s[k]):
                    j = _run(s, k, pred)
                    break
        if j is None:
            j = _ws_tail(s, i)
        out.append(s[i:j])
        i = j
    return out


def _contraction_ci(s, i):
    for c in CONTRACTIONS:
        if i + len(c) <= len(s) and s[i] == "'":
            ok = True
            for a, b in zip(s[i + 1:i + len(c)], c[1:]):
                if not (a == b or a == b.upper() or (b == "s" and a == "\u017f")):
                    ok = False
                    break
            if ok:
                return i + len(c)
    return None


def _split_llama_like(s, max_digits):
    out = []
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        j = _contraction_ci(s, i)
        if j is None:
            # [^\r\n\p{L}\p{N}]?\p{L}+
            if c not in "\r\n" and not is_letter(c) and not is_number(c) and i + 1 < n and is_letter(s[i + 1]):
                j = _run(s, i + 1, is_letter)
            elif is_letter(c):
                j = _run(s, i, is_letter)
        if j is None and is_number(c):
            j = i + 1
            while j < n and j - i < max_digits and is_number(s[j]):
                j += 1
        if j is None:
            # ' ?[^\s\p{L}\p{N}]+[\r\n]*'
            k = i + 1 if c == " " and i + 1 < n and _other(s[i + 1]) else i
            if _other(s[k]) if k < n else False:
                j = _run(s, k, _other)
                while j < n and s[j] in "\r\n":
                    j += 1
        if j is None:
            # \s*[\r\n]+ : up to and including the last CR/LF of the whitespace run
            e = _run(s, i, is_space)
            last = None
            for p in range(i, e):
                if s[p] in "\r\n":
                    last = p
            if last is not None:
                j = last + 1
        if j is None:
            j = _ws_tail(s, i)
        out.append(s[i:j])
        i = j
    return out


def split_llama3(s):
    return _split_llama_like(s, 3)


def split_qwen2(s):
    return _split_llama_like(s, 1)


PRETOKENIZERS = {"gpt2": (PATTERN_GPT2, split_gpt2), "llama3": (PATTERN_LLAMA3, split_llama3),
                 "qwen2": (PATTERN_QWEN2, split_qwen2)}


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_CHARS = bytes_to_unicode()
CHAR_BYTES = {c: b for b, c in BYTE_CHARS.items()}


def to_byte_level(piece):
    return "".join(BYTE_CHARS[b] for b in piece.encode("utf-8"))


# ---- corpus and BPE -------------------------------------------------------------------------

def make_corpus(rng, n_words=6000):
    """Generated text with the things tokenizers trip over: capitals, contractions, digits,
    punctuation, runs of spaces, tabs and newlines, accented letters, other scripts, emoji."""
    syll = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "an", "el", "or", "in", "ve", "qu", "th", "st", "ing",
            "er", "on", "ba"]
    words = []
    for _ in range(400):
        k = int(rng.integers(1, 4))
        words.append("".join(syll[int(rng.integers(0, len(syll)))] for _ in range(k)))
    words += ["the", "a", "of", "and", "to", "in", "is", "it", "that", "flint", "model", "token", "café", "naïve",
              "Привет", "мир", "日本語", "テスト", "中文", "😀", "🙂", "über", "straße"]
    out = []
    for i in range(n_words):
        w = words[int(rng.integers(0, len(words)))]
        r = rng.random()
        if r < 0.08:
            w = w.capitalize()
        elif r < 0.1:
            w = w + ["'s", "'ll", "'re", "'t", "'ve", "'d", "'m"][int(rng.integers(0, 7))]
        elif r < 0.14:
            w = str(int(rng.integers(0, 100000)))
        out.append(w)
        r = rng.random()
        if r < 0.08:
            out.append([".", ",", "!", "?", ";", ":", " -", " (x)", " \"q\"", "..."][int(rng.integers(0, 10))])
        r = rng.random()
        if r < 0.04:
            out.append("\n")
        elif r < 0.05:
            out.append("\n\n")
        elif r < 0.055:
            out.append("\t")
        elif r < 0.06:
            out.append("   ")
        else:
            out.append(" ")
    return "".join(out)


def train_bpe(text, split, n_merges):
    """Byte-level BPE: returns the merges [(a, b)] in rank order. Ties break on the pair's text so
    the result does not depend on dict order."""
    counts = {}
    for piece in split(text):
        bl = to_byte_level(piece)
        counts[bl] = counts.get(bl, 0) + 1
    words = [[list(w), c] for w, c in counts.items()]
    merges = []
    for _ in range(n_merges):
        pairs = {}
        for syms, c in words:
            for a, b in zip(syms, syms[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        new = best[0] + best[1]
        for w in words:
            syms = w[0]
            i = 0
            out = []
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == best[0] and syms[i + 1] == best[1]:
                    out.append(new)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            w[0] = out
    return merges


class Tokenizer:
    """Encoder/decoder over a tokenizer.json written by this module (or compatible ones)."""

    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        model = tj["model"]
        self.vocab = dict(model["vocab"])
        self.ranks = {}
        for r, m in enumerate(model["merges"]):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            self.ranks[(a, b)] = r
        self.ignore_merges = bool(model.get("ignore_merges", False))
        self.added = sorted(tj.get("added_tokens", []), key=lambda t: -len(t["content"]))
        self.id_to_token = {v: k for k, v in self.vocab.items()}
        self.special_ids = set()
        for t in tj.get("added_tokens", []):
            self.id_to_token[t["id"]] = t["content"]
            if t.get("special"):
                self.special_ids.add(t["id"])
        self.added_ids = {t["id"] for t in tj.get("added_tokens", [])}
        pt = tj["pre_tokenizer"]
        pattern = None
        if pt["type"] == "ByteLevel":
            pattern = PATTERN_GPT2 if pt.get("use_regex", True) else None
        elif pt["type"] == "Sequence":
            for p in pt["pretokenizers"]:
                if p["type"] == "Split":
                    pattern = p["pattern"]["Regex"]
        self.split = None
        for _name, (pat, fn) in PRETOKENIZERS.items():
            if pat == pattern:
                self.split = fn
        if self.split is None:
            self.split = lambda s: [s]
        self.prefix = []
        post = tj.get("post_processor")
        if post and post.get("type") == "TemplateProcessing":
            for item in post["single"]:
                if "SpecialToken" in item:
                    self.prefix.append(post["special_tokens"][item["SpecialToken"]["id"]]["ids"][0])
                else:
                    break

    def bpe(self, piece):
        if self.ignore_merges and piece in self.vocab:
            return [self.vocab[piece]]
        syms = list(piece)
        while len(syms) > 1:
            best = None
            for i in range(len(syms) - 1):
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            syms[i:i + 2] = [syms[i] + syms[i + 1]]
        return [self.vocab[s] for s in syms]

    def encode(self, text, add_special=True):
        ids = list(self.prefix) if add_special else []
        i = 0
        start = 0
        segments = []
        while i < len(text):
            hit = None
            for t in self.added:
                if text.startswith(t["content"], i):
                    hit = t
                    break
            if hit:
                segments.append(text[start:i])
                segments.append(hit)
                i += len(hit["content"])
                start = i
            else:
                i += 1
        segments.append(text[start:])
        for seg in segments:
            if isinstance(seg, dict):
                ids.append(seg["id"])
                continue
            for piece in self.split(seg):
                ids += self.bpe(to_byte_level(piece))
        return ids

    def decode(self, ids, skip_special=True):
        out = b""
        for i in ids:
            if i in self.added_ids:
                if skip_special and i in self.special_ids:
                    continue
                out += self.id_to_token[i].encode()
            elif i in self.id_to_token:
                out += bytes(CHAR_BYTES[c] for c in self.id_to_token[i])
        return out.decode("utf-8", errors="replace")


# ---- families ------------------------------------------------------------------------------

FAMILIES = {
    "llama": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "pretok": "llama3",
        "specials": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                     "<|eot_id|>"],
        "bos": "<|begin_of_text|>", "eos": ["<|end_of_text|>", "<|eot_id|>"], "ignore_merges": True,
    },
    "qwen2": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "pretok": "qwen2",
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "bos": None, "eos": ["<|endoftext|>", "<|im_end|>"], "ignore_merges": False,
    },
    "mistral": {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "pretok": "gpt2",
        "specials": ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
        "bos": "<s>", "eos": ["</s>"], "ignore_merges": False,
    },
}

# A non-special added token: matched in input text, kept in decoded output.
PLAIN_ADDED = "<flint>"


def tokenizer_json(family, merges, n_base):
    fam = FAMILIES[family]
    base = [BYTE_CHARS[b] for b in range(256)]
    vocab = {c: i for i, c in enumerate(base)}
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    added = []
    for s in fam["specials"]:
        added.append({"id": len(vocab) + len(added), "content": s, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    added.append({"id": len(vocab) + len(added), "content": PLAIN_ADDED, "single_word": False, "lstrip": False,
                  "rstrip": False, "normalized": True, "special": False})
    pattern = PRETOKENIZERS[fam["pretok"]][0]
    if fam["pretok"] == "gpt2":
        pre = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    else:
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre,
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": fam["ignore_merges"], "vocab": vocab,
                  "merges": [a + " " + b for a, b in merges]},
    }
    if fam["bos"]:
        bos_id = [t["id"] for t in added if t["content"] == fam["bos"]][0]
        tj["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": fam["bos"], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": fam["bos"], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": fam["bos"], "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {fam["bos"]: {"id": fam["bos"], "ids": [bos_id], "tokens": [fam["bos"]]}},
        }
    return tj


def make_tokenizer(family, n_vocab, seed):
    """-> tokenizer.json dict with exactly n_vocab tokens (base + merges + added)."""
    fam = FAMILIES[family]
    rng = np.random.default_rng(seed + 1000)
    text = make_corpus(rng)
    n_added = len(fam["specials"]) + 1
    n_merges = n_vocab - 256 - n_added
    if n_merges < 1:
        raise SystemExit("vocab too small: need more than %d tokens" % (256 + n_added))
    merges = train_bpe(text, PRETOKENIZERS[fam["pretok"]][1], n_merges)
    # pad with merges of rare pairs if the corpus ran out of pairs (tiny vocab sizes never do)
    return tokenizer_json(family, merges, 256)


# ---- weights -------------------------------------------------------------------------------

def model_config(family, a, vocab, bos_id, eos_ids):
    fam = FAMILIES[family]
    hd = a.hidden // a.heads
    cfg = {
        "architectures": fam["architectures"],
        "model_type": fam["model_type"],
        "hidden_size": a.hidden,
        "intermediate_size": a.intermediate,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads,
        "head_dim": hd,
        "hidden_act": "silu",
        "max_position_embeddings": a.context,
        "rms_norm_eps": 1e-5 if family != "qwen2" else 1e-6,
        "rope_theta": a.rope_theta,
        "rope_scaling": None,
        "tie_word_embeddings": bool(a.tie),
        "vocab_size": vocab,
        "torch_dtype": {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[a.dtype],
        "bos_token_id": bos_id,
        "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else eos_ids,
    }
    if a.rope_scaling == "linear":
        cfg["rope_scaling"] = {"type": "linear", "factor": 2.0}
    elif a.rope_scaling == "llama3":
        cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 64}
    if family == "llama":
        cfg["attention_bias"] = False
        cfg["mlp_bias"] = False
    if family == "mistral":
        cfg["sliding_window"] = a.sliding_window or None
    if family == "qwen2":
        cfg["use_sliding_window"] = False
        cfg["sliding_window"] = a.context
        cfg["max_window_layers"] = a.layers
    return cfg


def random_weights(family, a, vocab, rng, base=None):
    """-> [(name, shape, make)] in the HF naming, `make` drawing the values lazily (in order, so
    the result depends only on the seed). `base` ({name: array}, a target model's tensors)
    makes a draft: it shares the embeddings, the final norm and the head, and copies the first
    layers."""
    hd = a.hidden // a.heads
    h, inter = a.hidden, a.intermediate
    t = []

    def normal(name, shape, std, mean=0.0):
        def make():
            x = rng.standard_normal(shape, dtype=np.float32)
            x *= np.float32(std)
            if mean:
                x += np.float32(mean)
            return x
        t.append((name, tuple(shape), make))

    def copy(name):
        arr = base[name]
        t.append((name, tuple(arr.shape), lambda: arr.astype(np.float32)))

    if base is not None:
        copy("model.embed_tokens.weight")
    else:
        normal("model.embed_tokens.weight", (vocab, h), 1.0)
    for i in range(a.layers):
        p = "model.layers.%d." % i
        if base is not None:
            for name in sorted(base):
                if name.startswith(p):
                    copy(name)
            continue
        normal(p + "input_layernorm.weight", (h,), 0.1, 1.0)
        normal(p + "self_attn.q_proj.weight", (a.heads * hd, h), 1.0 / np.sqrt(h))
        normal(p + "self_attn.k_proj.weight", (a.kv_heads * hd, h), 1.0 / np.sqrt(h))
        normal(p + "self_attn.v_proj.weight", (a.kv_heads * hd, h), 1.0 / np.sqrt(h))
        if family == "qwen2":
            normal(p + "self_attn.q_proj.bias", (a.heads * hd,), 0.1)
            normal(p + "self_attn.k_proj.bias", (a.kv_heads * hd,), 0.1)
            normal(p + "self_attn.v_proj.bias", (a.kv_heads * hd,), 0.1)
        # small output projections keep the residual stream close to the embeddings, which is
        # what lets a shallower draft guess the target's tokens
        normal(p + "self_attn.o_proj.weight", (h, a.heads * hd), a.layer_scale / np.sqrt(a.heads * hd))
        normal(p + "post_attention_layernorm.weight", (h,), 0.1, 1.0)
        normal(p + "mlp.gate_proj.weight", (inter, h), 1.0 / np.sqrt(h))
        normal(p + "mlp.up_proj.weight", (inter, h), 1.0 / np.sqrt(h))
        normal(p + "mlp.down_proj.weight", (h, inter), a.layer_scale / np.sqrt(inter))
    if base is not None:
        copy("model.norm.weight")
        if "lm_head.weight" in base:
            copy("lm_head.weight")
    else:
        normal("model.norm.weight", (h,), 0.1, 1.0)
        if not a.tie:
            normal("lm_head.weight", (vocab, h), a.head_scale / np.sqrt(h))
    return t


def write_model(out, family, a, tokenizer, tensors, vocab):
    os.makedirs(out, exist_ok=True)
    fam = FAMILIES[family]
    ids = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    bos = ids[fam["bos"]] if fam["bos"] else None
    eos = [ids[e] for e in fam["eos"]]
    cfg = model_config(family, a, vocab, bos, eos)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False, indent=1)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": eos}, f)
    dtype = DTYPES[a.dtype]
    for fn in os.listdir(out):
        if fn.endswith(".safetensors") or fn.endswith(".safetensors.index.json"):
            os.unlink(os.path.join(out, fn))
    if a.shards <= 1:
        write_safetensors(os.path.join(out, "model.safetensors"), tensors, dtype)
        return
    per = (len(tensors) + a.shards - 1) // a.shards
    weight_map = {}
    for s in range(a.shards):
        part = tensors[s * per:(s + 1) * per]
        name = "model-%05d-of-%05d.safetensors" % (s + 1, a.shards)
        write_safetensors(os.path.join(out, name), part, dtype)
        for n, _shape, _make in part:
            weight_map[n] = name
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
