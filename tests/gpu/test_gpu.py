#!/usr/bin/python3
"""The model engine on the CUDA backend, against the CPU backend and the numpy reference.

engine-tool --backend cuda runs the same commands as in tests/engine/test_engine.py: logits
within tolerance of the CPU's and of the float64 reference, greedy tokens identical to the CPU's,
continuous batching and speculative decoding leaving greedy output unchanged, the checkpoint
hooks (KV caches dropped, weights released and restored at the same device addresses) leaving
the output unchanged, CUDA graphs and direct launches bit-identical, both weight copy paths, and
the cuBLAS prefill path within tolerance.

Without a GPU (or in a build without the CUDA backend) it prints "skipped: no GPU" with the
backend's reason and exits 77.

Environment: ENGINE_TOOL, FLINT_SOURCE_DIR.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("FLINT_SOURCE_DIR") or os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(SOURCE, "tests", "engine"))
import reference  # noqa: E402

TOOL = os.environ.get("ENGINE_TOOL") or os.path.join(SOURCE, "build-test", "tests", "engine", "engine-tool")
MAKE = os.path.join(SOURCE, "scripts", "make-tiny-model")


def tool(*args, env=None, check=True):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([TOOL] + [str(a) for a in args], capture_output=True, timeout=600, env=e)
    if check and p.returncode != 0:
        raise AssertionError("engine-tool %s failed (%d):\n%s\n%s" % (
            " ".join(map(str, args)), p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")))
    return p.stdout.decode()


def cuda(*args, env=None):
    return tool("--backend", "cuda", *args, env=env)


def cpu(*args):
    return tool("--backend", "cpu", *args)


def payload(prompt, n, **kw):
    d = {"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True}
    d.update(kw)
    return json.dumps(d)


def results(out):
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def gpu_status():
    """None when a GPU answers, else the reason."""
    d = tempfile.mkdtemp(prefix="flint-gpu-probe-")
    try:
        subprocess.run([sys.executable, MAKE, os.path.join(d, "m")], check=True, capture_output=True)
        out = tool("--backend", "cuda", "open", os.path.join(d, "m"), check=False).strip()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return None if out.startswith("ok: cuda") else out


class Gpu(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="flint-gpu-test-")
        cls.models = {}

        def make(name, *args):
            d = os.path.join(cls.tmp, name)
            # this interpreter (it has numpy), not the script's #! (a GPU machine's may not)
            subprocess.run([sys.executable, MAKE, d] + list(args), check=True, capture_output=True)
            cls.models[name] = d

        make("llama", "--family", "llama", "--dtype", "bf16", "--draft", os.path.join(cls.tmp, "llama-draft"),
             "--layer-scale", "0.25", "--layers", "3")
        cls.models["llama-draft"] = os.path.join(cls.tmp, "llama-draft")
        make("qwen2", "--family", "qwen2", "--dtype", "fp16", "--shards", "2", "--tie", "--seed", "2")
        make("mistral", "--family", "mistral", "--dtype", "fp32", "--shards", "3", "--sliding-window", "6",
             "--seed", "3", "--hidden", "48", "--heads", "6", "--kv-heads", "3", "--intermediate", "100")
        make("llama3-rope", "--family", "llama", "--rope-scaling", "llama3", "--rope-theta", "500000", "--seed", "4")
        # wide enough for the 16-byte kernel paths, several blocks per matrix and GQA 4:1
        make("wide", "--family", "llama", "--dtype", "bf16", "--hidden", "512", "--heads", "8", "--kv-heads", "2",
             "--intermediate", "1376", "--layers", "4", "--vocab", "2048", "--tokenizer-size", "400", "--seed", "6")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    IDS = [5, 17, 300, 42, 42, 9, 250, 100, 1, 77, 360, 12, 8, 8, 8, 140, 3, 1, 4, 1, 5, 9, 2, 6]

    def logits(self, fn, name, env=None):
        args = ["logits", self.models[name]] + self.IDS
        out = fn(*args, env=env) if fn is cuda else fn(*args)
        return np.array(json.loads(out))

    def test_logits_match_cpu_and_reference(self):
        for name in ("llama", "qwen2", "mistral", "llama3-rope", "wide", "llama-draft"):
            with self.subTest(model=name):
                g = self.logits(cuda, name)
                c = self.logits(cpu, name)
                want = reference.Model(self.models[name]).logits(self.IDS)
                scale = max(np.abs(want).max(), 1.0)
                self.assertLess(np.abs(g - c).max(), 1e-4 * scale, "%s: GPU vs CPU" % name)
                self.assertLess(np.abs(g - want).max(), 1e-4 * scale, "%s: GPU vs float64 reference" % name)
                self.assertTrue((g.argmax(1) == c.argmax(1)).all(), name)

    def test_greedy_tokens_match_cpu(self):
        ps = [payload("The model said", 40), payload("one two three four", 33), payload("x", 25)]
        for name in ("llama", "qwen2", "mistral", "wide"):
            with self.subTest(model=name):
                d = self.models[name]
                g = results(cuda("generate", d, *ps))
                c = results(cpu("generate", d, *ps))
                self.assertEqual([r["tokens"] for r in g], [r["tokens"] for r in c])
                self.assertEqual([r["text"] for r in g], [r["text"] for r in c])

    def test_batched_equals_sequential(self):
        d = self.models["llama"]
        ps = [payload("one two three", 16), payload("a", 9), payload("the flint model token " * 6, 12),
              payload("x", 20, temperature=0.9, seed=11), payload("café", 14, temperature=0.7, top_k=20, seed=5),
              payload("zz", 10, temperature=1.2, top_p=0.8, seed=1)]
        seq = results(cuda("--sequential", "generate", d, *ps))
        bat = results(cuda("--max-seqs", "4", "--chunk", "5", "generate", d, *ps))
        self.assertEqual([r["tokens"] for r in bat], [r["tokens"] for r in seq])
        # sampling too: the CPU draws from the same logits up to rounding, so greedy is compared
        # with the CPU above and sampled runs are compared only GPU with GPU here

    def test_speculative_decoding_keeps_greedy_output(self):
        d, draft = self.models["llama"], self.models["llama-draft"]
        ps = [payload("The model said", 24), payload("one two", 17), payload("flint", 30)]
        plain = results(cuda("generate", d, *ps))
        for k in ("1", "4"):
            spec = results(cuda("--draft", draft, "--spec", k, "generate", d, *ps))
            self.assertEqual([r["tokens"] for r in spec], [r["tokens"] for r in plain], "k=" + k)

    def test_checkpoint_hooks_keep_output(self):
        # engine-tool checkpoint: generate, before_checkpoint (KV freed, weights released, device
        # addresses kept), after_restore (weights mapped and copied again), generate again
        for mode in ("staging", "register"):
            with self.subTest(upload=mode):
                out = results(cuda("--draft", self.models["llama-draft"], "checkpoint", self.models["llama"],
                                   payload("The model said", 20), env={"FLINT_CUDA_UPLOAD": mode}))
                self.assertEqual(len(out), 2, out)
                self.assertEqual(out[0]["tokens"], out[1]["tokens"])

    def test_graphs_and_direct_launches_are_identical(self):
        for name in ("llama", "mistral"):
            with self.subTest(model=name):
                a = self.logits(cuda, name)
                b = self.logits(cuda, name, env={"FLINT_CUDA_GRAPHS": "0"})
                self.assertTrue(np.array_equal(a, b), name)
        ps = [payload("The model said", 30), payload("one two", 17)]
        d = self.models["wide"]
        a = results(cuda("generate", d, *ps))
        b = results(cuda("generate", d, *ps, env={"FLINT_CUDA_GRAPHS": "0"}))
        self.assertEqual([r["tokens"] for r in a], [r["tokens"] for r in b])

    def test_cublas_prefill_within_tolerance(self):
        env = {"FLINT_CUDA_MATMUL": "cublas", "FLINT_CUDA_CUBLAS_ROWS": "4"}
        for name in ("llama", "qwen2", "mistral", "wide"):
            with self.subTest(model=name):
                g = self.logits(cuda, name, env=env)
                want = reference.Model(self.models[name]).logits(self.IDS)
                scale = max(np.abs(want).max(), 1.0)
                self.assertLess(np.abs(g - want).max(), 1e-3 * scale, name)
                self.assertTrue((g.argmax(1) == want.argmax(1)).all(), name)


if __name__ == "__main__":
    why = gpu_status()
    if why is not None:
        print("skipped: no GPU (%s)" % why)
        sys.stderr.write("skipped: no GPU (%s)\n" % why)
        sys.exit(77)
    unittest.main(verbosity=2)
