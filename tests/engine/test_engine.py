#!/usr/bin/python3
"""The model engine against the numpy reference, on tiny models written by make-tiny-model.

engine-tool (linking libflint-engine) produces logits, greedy tokens and tokenizations;
reference.py computes the same in float64 from the published architecture. Also: batching,
speculative decoding, seeds, stop strings, checkpoint hooks and bad models, at the library level
(tests/integration/test_llm.py does the same end to end through flintd).

Environment: ENGINE_TOOL (the engine-tool binary), FLINT_SOURCE_DIR.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference  # noqa: E402
import tinymodel  # noqa: E402

SOURCE = os.environ.get("FLINT_SOURCE_DIR") or os.path.join(HERE, "..", "..")
TOOL = os.environ.get("ENGINE_TOOL") or os.path.join(SOURCE, "build-test", "tests", "engine", "engine-tool")
MAKE = os.path.join(SOURCE, "scripts", "make-tiny-model")

TEXTS = [
    "Hello world, it's 12345 café 日本語",
    "  leading spaces\tand\ttabs\n\n\nnew   lines  ",
    "IT'S WE'LL they'RE 3.14159 1234567 ١٢٣ naïve straße Привет мир 🙂🙂",
    "punctuation!!! (x) \"q\" ... ?? -- <flint> added <flint>tokens",
    "\r\n\r\n  \t x \u3000 y\u00a0z",
    "",
]


def tool(*args, check=True):
    p = subprocess.run([TOOL] + [str(a) for a in args], capture_output=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError("engine-tool %s failed (%d):\n%s\n%s" % (
            " ".join(map(str, args)), p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")))
    return p.stdout.decode()


def payload(prompt, n, **kw):
    d = {"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True}
    d.update(kw)
    return json.dumps(d)


def load_json(path):
    with open(path) as f:
        return json.load(f)


def save_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


def results(out):
    return [json.loads(line) for line in out.splitlines() if line.strip()]


class Engine(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="flint-engine-test-")
        cls.models = {}

        def make(name, *args):
            d = os.path.join(cls.tmp, name)
            subprocess.run([MAKE, d] + list(args), check=True)
            cls.models[name] = d
            return d

        make("llama", "--family", "llama", "--dtype", "bf16", "--draft", os.path.join(cls.tmp, "llama-draft"),
             "--layer-scale", "0.25", "--layers", "3")
        cls.models["llama-draft"] = os.path.join(cls.tmp, "llama-draft")
        make("qwen2", "--family", "qwen2", "--dtype", "fp16", "--shards", "2", "--tie", "--seed", "2")
        make("mistral", "--family", "mistral", "--dtype", "fp32", "--shards", "3", "--sliding-window", "6",
             "--seed", "3", "--hidden", "48", "--heads", "6", "--kv-heads", "3", "--intermediate", "100")
        make("llama3-rope", "--family", "llama", "--rope-scaling", "llama3", "--rope-theta", "500000", "--seed", "4")
        make("linear-rope", "--family", "llama", "--rope-scaling", "linear", "--seed", "5", "--heads", "2",
             "--kv-heads", "1")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- tokenizer ----------------------------------------------------------------------------
    def test_tokenizer_matches_reference(self):
        for fam in ("llama", "qwen2", "mistral"):
            d = self.models[fam]
            tok = tinymodel.Tokenizer(os.path.join(d, "tokenizer.json"))
            for text in TEXTS:
                want = tok.encode(text)
                got = json.loads(tool("encode", d, text))
                self.assertEqual(got, want, "%s: %r" % (fam, text))
                if got:
                    back = json.loads(tool("decode", d, *got))
                    self.assertEqual(back, text.replace("<flint>", "<flint>"), "%s: decode %r" % (fam, text))

    def test_pretokenizers_match_reference_on_generated_text(self):
        # a wider sweep: the generator's corpus, in chunks, against the Python splitter's BPE
        rng = np.random.default_rng(9)
        text = tinymodel.make_corpus(rng, n_words=600)
        for fam in ("llama", "qwen2", "mistral"):
            d = self.models[fam]
            tok = tinymodel.Tokenizer(os.path.join(d, "tokenizer.json"))
            for i in range(0, len(text), 700):
                chunk = text[i:i + 700]
                self.assertEqual(json.loads(tool("encode", d, chunk)), tok.encode(chunk), "%s at %d" % (fam, i))

    # ---- forward pass -------------------------------------------------------------------------
    def check_logits(self, name, ids, **tool_opts):
        d = self.models[name]
        opts = []
        for k, v in tool_opts.items():
            opts += ["--" + k, v]
        got = np.array(json.loads(tool(*opts, "logits", d, *ids)))
        want = reference.Model(d).logits(ids)
        self.assertEqual(got.shape, want.shape)
        err = np.abs(got - want).max()
        scale = np.abs(want).max()
        self.assertLess(err, 1e-4 * max(scale, 1.0), "%s: max logit error %g (scale %g)" % (name, err, scale))
        self.assertTrue((got.argmax(1) == want.argmax(1)).all(), name)
        return got

    def test_logits_match_reference(self):
        ids = [5, 17, 300, 42, 42, 9, 250, 100, 1, 77, 360, 12, 8, 8, 8, 140]
        for name in ("llama", "qwen2", "mistral", "llama3-rope", "linear-rope", "llama-draft"):
            with self.subTest(model=name):
                self.check_logits(name, ids)

    def test_kernel_builds_agree(self):
        ids = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
        base = self.check_logits("llama", ids, kernels="generic")
        for k in ("avx2", "avx512"):
            other = self.check_logits("llama", ids, kernels=k)
            self.assertLess(np.abs(other - base).max(), 1e-3)
        for k in ("generic", "avx2"):
            self.check_logits("qwen2", ids, kernels=k)
            self.check_logits("mistral", ids, kernels=k)

    def test_greedy_matches_reference(self):
        for name in ("llama", "qwen2", "mistral"):
            with self.subTest(model=name):
                d = self.models[name]
                r = results(tool("generate", d, payload("The model said", 20)))[0]
                prompt = json.loads(tool("encode", d, "The model said"))
                want = reference.Model(d).generate(prompt, 20)
                self.assertEqual(r["tokens"], want)
                self.assertEqual(r["usage"], {"prompt_tokens": len(prompt), "completion_tokens": 20})
                self.assertEqual(r["finish_reason"], "length")

    # ---- scheduling ---------------------------------------------------------------------------
    def test_batched_equals_sequential(self):
        d = self.models["llama"]
        ps = [payload("one two three", 16), payload("a", 9), payload("the flint model token " * 6, 12),
              payload("x", 20, temperature=0.9, seed=11), payload("café", 14, temperature=0.7, top_k=20, seed=5),
              payload("zz", 10, temperature=1.2, top_p=0.8, seed=1)]
        seq = results(tool("--sequential", "generate", d, *ps))
        # all at once, 4 slots and a tiny prefill budget: prompts are chunked and mixed with decodes
        bat = results(tool("--max-seqs", "4", "--chunk", "5", "generate", d, *ps))
        self.assertEqual([r["tokens"] for r in bat], [r["tokens"] for r in seq])
        self.assertEqual([r["text"] for r in bat], [r["text"] for r in seq])

    def test_speculative_decoding_keeps_greedy_output(self):
        d, draft = self.models["llama"], self.models["llama-draft"]
        ps = [payload("The model said", 24), payload("one two", 17), payload("flint", 30)]
        plain = results(tool("generate", d, *ps))
        for k in ("1", "4", "7"):
            spec = results(tool("--draft", draft, "--spec", k, "generate", d, *ps))
            self.assertEqual([r["tokens"] for r in spec], [r["tokens"] for r in plain], "k=" + k)
            for r in spec:
                s = r["speculative"]
                self.assertEqual(s["draft_tokens"], int(k))
                self.assertGreater(s["steps"], 0)
                self.assertGreater(s["acceptance_length"], 1.0)
                self.assertLessEqual(s["acceptance_length"], int(k) + 1)
        # the draft model of the test shares the first layers: most proposals pass
        st = json.loads(tool("--draft", draft, "--stats", "generate", d, *ps).splitlines()[-1])
        self.assertGreater(st["spec_acceptance_length"], 1.5)

    def test_speculative_sampling_is_reproducible(self):
        d, draft = self.models["llama"], self.models["llama-draft"]
        p = payload("The model said", 20, temperature=0.8, seed=42)
        a = results(tool("--draft", draft, "generate", d, p, p))
        self.assertEqual(a[0]["tokens"], a[1]["tokens"])
        self.assertEqual(len(a[0]["tokens"]), 20)

    def test_seeds(self):
        d = self.models["llama"]
        p1 = payload("hello", 24, temperature=1.0, seed=7)
        p2 = payload("hello", 24, temperature=1.0, seed=8)
        r = results(tool("generate", d, p1, p2, p1))
        self.assertEqual(r[0]["tokens"], r[2]["tokens"])
        self.assertNotEqual(r[0]["tokens"], r[1]["tokens"])
        # top_k = 1 is greedy whatever the temperature
        g = results(tool("generate", d, payload("hello", 16), payload("hello", 16, temperature=2.0, top_k=1, seed=3)))
        self.assertEqual(g[0]["tokens"], g[1]["tokens"])

    def test_stop_strings_and_streaming(self):
        d = self.models["llama"]
        full = results(tool("generate", d, payload("The model said", 40)))[0]
        text = full["text"]
        # a stop string from the middle of the output (at least 2 bytes, not at the start)
        raw = text.encode()
        start = len(raw) // 2
        stop = None
        for i in range(start, len(raw) - 3):
            cand = raw[i:i + 3]
            try:
                stop = cand.decode()
            except UnicodeDecodeError:
                continue
            break
        self.assertIsNotNone(stop, text)
        cut = raw[:raw.index(stop.encode())].decode(errors="replace")
        r = results(tool("generate", d, payload("The model said", 40, stop=[stop, "\u0000never"])))[0]
        self.assertEqual(r["finish_reason"], "stop")
        self.assertEqual(r["text"], cut)
        self.assertTrue(full["tokens"][:len(r["tokens"])] == r["tokens"])
        # the stream releases exactly the unary text, one line per token, then the final record
        lines = results(tool("stream", d, payload("The model said", 40, stop=stop)))
        toks, final = lines[:-1], lines[-1]
        self.assertTrue(final["done"])
        self.assertEqual(final["finish_reason"], "stop")
        self.assertEqual([t["id"] for t in toks], r["tokens"])
        self.assertEqual("".join(t["token"] for t in toks), r["text"])
        self.assertEqual(final["usage"]["completion_tokens"], len(toks))

    def test_eos_ends_generation(self):
        d = self.models["llama"]
        with open(os.path.join(d, "config.json")) as f:
            eos = json.load(f)["eos_token_id"]
        eos = eos if isinstance(eos, list) else [eos]
        # force the model towards an EOS: sample hot until one shows up, then check the record
        for seed in range(40):
            r = results(tool("generate", d, payload("x", 60, temperature=5.0, seed=seed, ignore_eos=False)))[0]
            if r["finish_reason"] == "stop":
                self.assertIn(r["tokens"][-1], eos)
                return
        self.skipTest("no EOS sampled in 40 tries")

    def test_chat_templates(self):
        for name, marker in (("qwen2", "<|im_start|>"), ("llama", "<|start_header_id|>"), ("mistral", "[INST]")):
            d = self.models[name]
            msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
            r = results(tool("generate", d, json.dumps({"messages": msgs, "max_tokens": 4, "temperature": 0,
                                                         "ignore_eos": True})))[0]
            self.assertEqual(len(r["tokens"]), 4, r)
            self.assertGreater(r["usage"]["prompt_tokens"], 6)
        bad = results(tool("generate", self.models["mistral"], json.dumps(
            {"messages": [{"role": "assistant", "content": "x"}]}), check=False))[0]
        self.assertIn("messages[0].role", bad["error"])

    def test_checkpoint_hooks(self):
        d, draft = self.models["llama"], self.models["llama-draft"]
        out = results(tool("--draft", draft, "checkpoint", d, payload("before and after", 16)))
        self.assertEqual(len(out), 2, out)
        self.assertEqual(out[0]["tokens"], out[1]["tokens"])

    def test_cancel(self):
        d = self.models["llama"]
        p = payload("cancel me", 200)
        for after in (0, 3):
            first, again = results(tool("cancel", d, after, p))
            self.assertEqual(first["finish_reason"], "cancelled", after)
            self.assertLess(first["usage"]["completion_tokens"], 200)
            self.assertGreaterEqual(first["usage"]["completion_tokens"], after)
            # the slot was given back: the same request runs to the end afterwards
            self.assertEqual(again["finish_reason"], "length")
            self.assertEqual(again["usage"]["completion_tokens"], 200)

    # ---- bad input ----------------------------------------------------------------------------
    def test_bad_payloads(self):
        d = self.models["llama"]
        cases = [
            ("not json", "not JSON"),
            ('{"prompt": "x", "bogus": 1}', "field `bogus`: unknown"),
            ('{"max_tokens": 3}', "exactly one of `prompt` and `messages`"),
            ('{"prompt": "x", "max_tokens": 0}', "field `max_tokens`"),
            ('{"prompt": "x", "temperature": -1}', "field `temperature`"),
            ('{"prompt": "x", "top_p": 0}', "field `top_p`"),
            ('{"prompt": "x", "stop": [1]}', "field `stop`"),
            ('{"messages": [{"role": "user"}]}', "messages[0]"),
            ('{"prompt": "x", "seed": -4}', "field `seed`"),
        ]
        for p, msg in cases:
            r = results(tool("generate", d, p, check=False))[0]
            self.assertIn(msg, r["error"], p)
            self.assertEqual(r["code"], 3, p)
        long = json.dumps({"prompt": "flint " * 200})
        r = results(tool("--context", "64", "generate", d, long, check=False))[0]
        self.assertIn("context holds 64 tokens", r["error"])
        self.assertEqual(r["code"], 3)

    def copy_model(self, src, name):
        d = os.path.join(self.tmp, name)
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(self.models[src], d)
        return d

    def open_error(self, d):
        p = subprocess.run([TOOL, "open", d], capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 1, p.stdout)
        return p.stdout.decode()

    def test_bad_models(self):
        # truncated safetensors
        d = self.copy_model("llama", "bad-trunc")
        st = os.path.join(d, "model.safetensors")
        with open(st, "r+b") as f:
            f.truncate(os.path.getsize(st) - 100)
        msg = self.open_error(d)
        self.assertIn("model.safetensors", msg)
        self.assertIn("data_offsets", msg)
        # malformed header
        with open(st, "wb") as f:
            f.write(struct.pack("<Q", 12) + b'{"a": [1, 2')
        msg = self.open_error(d)
        self.assertIn("`model.safetensors`: header", msg)
        # header size past the end
        with open(st, "wb") as f:
            f.write(struct.pack("<Q", 1 << 40) + b"{}")
        self.assertIn("exceeds the limit", self.open_error(d))
        # shape mismatch with config.json
        d = self.copy_model("llama", "bad-shape")
        cfg = load_json(os.path.join(d, "config.json"))
        cfg["intermediate_size"] = cfg["intermediate_size"] + 16
        save_json(os.path.join(d, "config.json"), cfg)
        msg = self.open_error(d)
        self.assertIn("mlp.gate_proj.weight", msg)
        self.assertIn("field `shape`", msg)
        self.assertIn("intermediate_size", msg)
        # dtype the engine does not compute with
        d = self.copy_model("llama", "bad-dtype")
        t = tinymodel.read_safetensors(os.path.join(d, "model.safetensors"))
        names = list(t)
        specs = [(n, t[n].shape, (lambda a=t[n]: a.astype(np.float32))) for n in names]
        tinymodel.write_safetensors(os.path.join(d, "model.safetensors"), specs, "BF16")
        with open(os.path.join(d, "model.safetensors"), "rb") as f:
            raw = f.read()
        (hl,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + hl])
        header["model.norm.weight"]["dtype"] = "I16"
        h = json.dumps(header).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + raw[8 + hl:])
        msg = self.open_error(d)
        self.assertIn("model.norm.weight", msg)
        self.assertIn("field `dtype`", msg)
        # unknown architecture
        d = self.copy_model("llama", "bad-arch")
        cfg = load_json(os.path.join(d, "config.json"))
        cfg["architectures"] = ["GPTNeoXForCausalLM"]
        save_json(os.path.join(d, "config.json"), cfg)
        msg = self.open_error(d)
        self.assertIn("config.json", msg)
        self.assertIn("unsupported architecture `GPTNeoXForCausalLM`", msg)
        # tokenizer.json without merges
        d = self.copy_model("llama", "bad-merges")
        tj = load_json(os.path.join(d, "tokenizer.json"))
        del tj["model"]["merges"]
        save_json(os.path.join(d, "tokenizer.json"), tj)
        msg = self.open_error(d)
        self.assertIn("tokenizer.json", msg)
        self.assertIn("field `model.merges`: missing", msg)
        # a draft with another vocabulary
        other = os.path.join(self.tmp, "other-vocab")
        subprocess.run([MAKE, other, "--vocab", "300"], check=True)
        msg = subprocess.run([TOOL, "--draft", other, "open", self.models["llama"]],
                             capture_output=True).stdout.decode()
        self.assertIn("draft model", msg)
        self.assertIn("vocab_size", msg)


if __name__ == "__main__":
    unittest.main(verbosity=2)
