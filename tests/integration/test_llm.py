"""`kind: llm` end to end: generated tiny models deployed with the real CLI into a real flintd
(sandboxed workers, weights in the node weight store), invoked through the Python gRPC client;
outputs checked against the numpy reference (tests/engine/reference.py)."""
import concurrent.futures
import json
import os
import shutil
import struct
import subprocess
import sys
import time

import flinttest
from flinttest import FlintTestCase, stubs

sys.path.insert(0, os.path.join(flinttest.SOURCE, "tests", "engine"))
import reference  # noqa: E402
import tinymodel  # noqa: E402

MAKE = os.path.join(flinttest.SOURCE, "scripts", "make-tiny-model")


def gen(prompt, n, **kw):
    d = {"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True}
    d.update(kw)
    return json.dumps(d)


class Llm(FlintTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.src = os.path.join(cls.tmp, "models")
        subprocess.run([MAKE, os.path.join(cls.src, "model"), "--family", "llama", "--layers", "3", "--layer-scale",
                        "0.25", "--shards", "2", "--draft", os.path.join(cls.src, "draft")], check=True)
        cls.model = os.path.join(cls.src, "model")
        cls.ref = reference.Model(cls.model)
        cls.tok = tinymodel.Tokenizer(os.path.join(cls.model, "tokenizer.json"))

    def bundle(self, name, extra="", draft=False, model_src=None):
        d = os.path.join(self.tmp, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        shutil.copytree(model_src or self.model, os.path.join(d, "model"))
        manifest = "name: %s\nkind: llm\nmodel: model\n" % name
        if draft:
            shutil.copytree(os.path.join(self.src, "draft"), os.path.join(d, "draft"))
            manifest += "draft_model: draft\n"
        with open(os.path.join(d, "flint.yaml"), "w") as f:
            f.write(manifest + extra)
        return d

    def deployed(self, name, **kw):
        if not hasattr(type(self), "_deployed"):
            type(self)._deployed = set()
        if name not in self._deployed:
            out = self.flintd.cli("deploy", self.bundle(name, **kw)).stdout.decode()
            self.assertIn("deployed %s version" % name, out)
            self._deployed.add(name)
        return name

    def generate(self, name, payload, timeout=60):
        r = self.flintd.invoke(name, payload, timeout=timeout)
        return json.loads(r.payload)

    def stream(self, name, payload):
        s = stubs()
        chunks = list(self.flintd.stub().InvokeStream(s.pb.InvokeRequest(endpoint=name, payload=payload.encode()),
                                                       timeout=60))
        return [json.loads(c.data) for c in chunks]

    # ---- generation ---------------------------------------------------------------------------
    def test_01_greedy_matches_reference(self):
        name = self.deployed("tiny")
        r = self.generate(name, gen("The flint model", 24))
        prompt = self.tok.encode("The flint model")
        self.assertEqual(r["tokens"], self.ref.generate(prompt, 24))
        self.assertEqual(r["text"], self.tok.decode(r["tokens"]))
        self.assertEqual(r["finish_reason"], "length")
        self.assertEqual(r["usage"], {"prompt_tokens": len(prompt), "completion_tokens": 24})
        for k in ("ttft_ms", "total_ms", "tokens_per_s"):
            self.assertGreater(r["timings"][k], 0)
        self.assertNotIn("speculative", r)

    def test_02_stream_one_chunk_per_token(self):
        name = self.deployed("tiny")
        unary = self.generate(name, gen("stream me", 16))
        lines = self.stream(name, gen("stream me", 16))
        toks, final = lines[:-1], lines[-1]
        self.assertEqual([t["id"] for t in toks], unary["tokens"])
        self.assertEqual("".join(t["token"] for t in toks), unary["text"])
        self.assertTrue(final["done"])
        self.assertEqual(final["usage"], unary["usage"])
        self.assertEqual(final["finish_reason"], "length")
        self.assertIn("ttft_ms", final["timings"])

    def test_03_concurrent_requests_batch_and_match_sequential(self):
        name = self.deployed("tiny")
        payloads = [gen("request number %d" % i, 12 + 3 * i) for i in range(6)]
        payloads += [gen("sampled %d" % i, 15, temperature=0.9, seed=100 + i) for i in range(2)]
        sequential = [self.generate(name, p)["tokens"] for p in payloads]
        with concurrent.futures.ThreadPoolExecutor(len(payloads)) as ex:
            together = list(ex.map(lambda p: self.generate(name, p)["tokens"], payloads))
        self.assertEqual(together, sequential)
        # one replica served them all (max_concurrency 8): they were batched, not spread
        st = self.flintd.status(name)
        self.assertEqual(len([r for r in st["replicas"] if r["state"] == "ready"]), 1)

    def test_04_seeds_and_stop_strings(self):
        name = self.deployed("tiny")
        a = self.generate(name, gen("seeded", 20, temperature=1.0, seed=5))
        b = self.generate(name, gen("seeded", 20, temperature=1.0, seed=5))
        c = self.generate(name, gen("seeded", 20, temperature=1.0, seed=6))
        self.assertEqual(a["tokens"], b["tokens"])
        self.assertNotEqual(a["tokens"], c["tokens"])
        full = self.generate(name, gen("stop here", 40))
        text = full["text"]
        # two printable ASCII characters from the second half (the random model also writes bytes
        # that are not UTF-8, shown as U+FFFD, which no stop string can match)
        stop = next(text[i:i + 2] for i in range(len(text) // 2, len(text) - 1)
                    if all(" " < ch < "\x7f" for ch in text[i:i + 2]))
        r = self.generate(name, gen("stop here", 40, stop=stop))
        self.assertEqual(r["finish_reason"], "stop")
        self.assertEqual(r["text"], text[:text.index(stop)])
        streamed = self.stream(name, gen("stop here", 40, stop=[stop]))
        self.assertEqual("".join(t["token"] for t in streamed[:-1]), r["text"])

    def test_05_chat_messages(self):
        name = self.deployed("tiny")
        msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello!"}]
        r = self.generate(name, json.dumps({"messages": msgs, "max_tokens": 8, "temperature": 0,
                                            "ignore_eos": True}))
        rendered = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
        prompt = self.tok.encode(rendered, add_special=False)
        self.assertEqual(r["usage"]["prompt_tokens"], len(prompt))
        self.assertEqual(r["tokens"], self.ref.generate(prompt, 8))

    def test_06_speculative_decoding(self):
        plain = self.deployed("tiny")
        spec = self.deployed("tiny-spec", draft=True)
        for p in (gen("The flint model", 30), gen("x", 17)):
            a, b = self.generate(plain, p), self.generate(spec, p)
            self.assertEqual(b["tokens"], a["tokens"])
            self.assertGreater(b["speculative"]["acceptance_length"], 1.0)
            self.assertEqual(b["speculative"]["draft_tokens"], 4)
        # the engine statistics reach `flint status` through the periodic pings
        def engine():
            st = self.flintd.status(spec)
            return st.get("engine") if st.get("engine", {}).get("tokens_total", "0") != "0" else None
        eng = self.flintd.wait_for(engine, timeout=10, what="engine statistics of tiny-spec")
        self.assertGreater(float(eng["spec_acceptance_length"]), 1.0)
        self.assertGreaterEqual(float(eng["tokens_total"]), 47)
        self.assertGreater(float(eng["ttft_p50_ms"]), 0)
        self.assertGreater(float(eng["kv_capacity_tokens"]), 0)
        human = self.flintd.cli("status", spec).stdout.decode()
        self.assertIn("engine     first token p50", human)
        self.assertIn("speculative acceptance length", human)

    def test_07_weights_come_from_the_store_mapped_shared(self):
        name = self.deployed("tiny")
        st = self.flintd.status(name)
        pid = [r for r in st["replicas"] if r["state"] == "ready"][0]["pid"]
        with open("/proc/%d/maps" % pid) as f:
            maps = f.read().splitlines()
        shards = sorted(n for n in os.listdir(self.model) if n.endswith(".safetensors"))
        for shard in shards:
            lines = [m for m in maps if m.endswith("/weights/" + shard)]
            self.assertTrue(lines, "%s not mapped from /weights:\n%s" % (shard, "\n".join(maps)))
            self.assertTrue(all(m.split()[1] == "r--s" for m in lines), lines)
        self.assertFalse([m for m in maps if "/bundle/" in m and m.endswith(".safetensors")])
        # the store holds each shard once, content-addressed
        objects = os.listdir(os.path.join(self.flintd.run, "weights", "objects"))
        self.assertGreaterEqual(len(objects), len(shards))

    # ---- bad input ----------------------------------------------------------------------------
    def test_08_prompt_too_long_is_invalid_argument(self):
        name = self.deployed("tiny-short", extra="config:\n  context: \"64\"\n")
        s = stubs()
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.invoke(name, json.dumps({"prompt": "flint " * 100}))
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("context holds 64 tokens", cm.exception.details())
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.invoke(name, json.dumps({"prompt": "x", "temperature": "hot"}))
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("field `temperature`", cm.exception.details())
        # the replica is fine afterwards
        self.assertEqual(len(self.generate(name, gen("ok", 3))["tokens"]), 3)

    def bad_deploy(self, name, mutate):
        d = self.bundle(name)
        mutate(os.path.join(d, "model"))
        p = self.flintd.cli("deploy", d, check=False)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        return p.stderr.decode()

    def test_09_bad_models_fail_the_deploy(self):
        def truncate(m):
            st = sorted(n for n in os.listdir(m) if n.endswith(".safetensors"))[0]
            p = os.path.join(m, st)
            with open(p, "r+b") as f:
                f.truncate(os.path.getsize(p) // 2)

        msg = self.bad_deploy("bad-trunc", truncate)
        self.assertIn("model-00001-of-00002.safetensors", msg)
        self.assertIn("field `data_offsets`", msg)

        def garbage_header(m):
            with open(os.path.join(m, "model-00002-of-00002.safetensors"), "wb") as f:
                f.write(struct.pack("<Q", 5) + b"{\"a\":")

        msg = self.bad_deploy("bad-header", garbage_header)
        self.assertIn("`model-00002-of-00002.safetensors`: header", msg)

        def shape(m):
            with open(os.path.join(m, "config.json")) as f:
                cfg = json.load(f)
            cfg["hidden_size"] = 32
            cfg["head_dim"] = 8
            with open(os.path.join(m, "config.json"), "w") as f:
                json.dump(cfg, f)

        msg = self.bad_deploy("bad-shape", shape)
        self.assertIn("field `shape`", msg)
        self.assertIn("does not match config.json", msg)

        def arch(m):
            with open(os.path.join(m, "config.json")) as f:
                cfg = json.load(f)
            cfg["architectures"] = ["FalconForCausalLM"]
            with open(os.path.join(m, "config.json"), "w") as f:
                json.dump(cfg, f)

        msg = self.bad_deploy("bad-arch", arch)
        self.assertIn("`config.json`: field `architectures`: unsupported architecture `FalconForCausalLM`", msg)

        def merges(m):
            with open(os.path.join(m, "tokenizer.json")) as f:
                tj = json.load(f)
            del tj["model"]["merges"]
            with open(os.path.join(m, "tokenizer.json"), "w") as f:
                json.dump(tj, f)

        msg = self.bad_deploy("bad-merges", merges)
        self.assertIn("`tokenizer.json`: field `model.merges`: missing", msg)
        # nothing of the failed deploys serves, flintd is fine
        self.assertEqual(self.flintd.health(), 1)
        self.assertEqual(len(self.generate(self.deployed("tiny"), gen("still", 2))["tokens"]), 2)


if __name__ == "__main__":
    flinttest.main()
