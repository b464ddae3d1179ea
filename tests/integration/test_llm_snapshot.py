"""`kind: llm` workers through the real snapshotter and CRIU, on the CPU: the same code paths a GPU
restore takes except the CUDA calls (issue 7).

The deploy checkpoints the first replica after its model is loaded: the engine's before_checkpoint
hook drops the KV caches and releases the weights (on the CPU the weights are the node weight
store's shared mapping, which the image does not contain); after a restore its after_restore hook
maps them again and re-creates the caches, and the RestoredAck reports both as restore phases.
Checked here: greedy tokens identical before and after restores (image and parked tiers, several
in a row, batched requests), the restore phases in `flint status`, an image smaller than the
weights, and `snapshot_weights: inside` (the benchmark's baseline) giving the same output.

Skips loudly without CRIU (like the snapshot suite)."""
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys

import flinttest
from test_snapshot import SnapshotCase

sys.path.insert(0, os.path.join(flinttest.SOURCE, "tests", "engine"))
import reference  # noqa: E402
import tinymodel  # noqa: E402

MAKE = os.path.join(flinttest.SOURCE, "scripts", "make-tiny-model")


def gen(prompt, n, **kw):
    d = {"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True}
    d.update(kw)
    return json.dumps(d)


class LlmSnapshot(SnapshotCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.src = os.path.join(cls.tmp, "models")
        # big enough that its weights (about 25 MB) dwarf what a checkpoint of the engine holds
        # (about 11 MB in the sanitizer build)
        subprocess.run([MAKE, os.path.join(cls.src, "model"), "--family", "llama", "--layers", "4", "--hidden", "384",
                        "--heads", "6", "--kv-heads", "2", "--intermediate", "1024", "--vocab", "8192",
                        "--tokenizer-size", "400", "--layer-scale", "0.25", "--dtype", "bf16"], check=True)
        cls.model = os.path.join(cls.src, "model")
        cls.weight_bytes = os.path.getsize(os.path.join(cls.model, "model.safetensors"))
        cls.ref = reference.Model(cls.model)
        cls.tok = tinymodel.Tokenizer(os.path.join(cls.model, "tokenizer.json"))

    def deploy_llm(self, name, extra=""):
        d = os.path.join(self.tmp, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        shutil.copytree(self.model, os.path.join(d, "model"))
        with open(os.path.join(d, "flint.yaml"), "w") as f:
            f.write("name: %s\nkind: llm\nmodel: model\n%s" % (name, extra))
        return self.flintd.cli("deploy", d).stdout.decode()

    def generate(self, name, payload):
        r = self.flintd.invoke(name, payload, timeout=60)
        return r.replica, json.loads(r.payload)

    def test_restored_llm_generates_the_same_tokens(self):
        out = self.deploy_llm("llm", "parked_replicas: 0\n")
        self.assertRegex(out, r"snapshot: [0-9.]+ [KM]iB image taken in [0-9]+ ms")
        prompts = [gen("The flint model", 24), gen("one two three", 17), gen("x", 9)]
        want = [self.ref.generate(self.tok.encode(json.loads(p)["prompt"]), json.loads(p)["max_tokens"])
                for p in prompts]
        # the original went through both hooks already (checkpoint at deploy): same tokens
        rep0, r0 = self.generate("llm", prompts[0])
        self.assertEqual(self.tier_of("llm", rep0), "cold")
        self.assertEqual(r0["tokens"], want[0])

        # scale-from-zero restores in a row, from the image
        for i in range(2):
            self.drain("llm")
            rep, r = self.generate("llm", prompts[i % 3])
            self.assertEqual(self.tier_of("llm", rep), "image", "restore %d" % i)
            self.assertEqual(r["tokens"], want[i % 3], "restore %d" % i)
            # and concurrent requests on the restored replica: batched, KV caches re-created
            with concurrent.futures.ThreadPoolExecutor(3) as ex:
                got = list(ex.map(lambda p: self.generate("llm", p)[1]["tokens"], prompts))
            self.assertEqual(got, want, "restore %d, batched" % i)

        # the image holds the process, not the weights (they stay in the node weight store)
        st = self.flintd.status("llm")
        self.assertLess(st["snapshot"]["size_bytes"], self.weight_bytes,
                        "image of %d bytes for %d bytes of weights" % (st["snapshot"]["size_bytes"], self.weight_bytes))
        # the worker's restore phases reached flintd: weight copy and KV re-allocation, then the
        # first token, next to CRIU's and the canary's
        phases = st["cold_start_ms"]
        for key in ("image.restore.p50", "image.weight_copy.p50", "image.kv_alloc.p50", "image.first_token.p50",
                    "image.canary.p50", "image.total.p50"):
            self.assertIn(key, phases)
        self.assertGreater(phases["image.first_token.p50"], 0)
        self.assertNotIn("image.cuda_restore.p50", phases)  # no GPU here: no CUDA restore phase

    def test_parked_llm_and_weights_inside(self):
        self.deploy_llm("llmpark")
        p = gen("parked model", 20)
        want = self.ref.generate(self.tok.encode("parked model"), 20)
        self.wait_parked("llmpark", 1)
        self.drain("llmpark")
        rep, r = self.generate("llmpark", p)
        self.assertEqual(self.tier_of("llmpark", rep), "parked")
        self.assertEqual(r["tokens"], want)

        # the benchmark's baseline: the hooks leave weights and KV caches in place
        out = self.deploy_llm("llminside", "parked_replicas: 0\nconfig:\n  snapshot_weights: inside\n")
        self.assertIn("snapshot:", out)
        self.drain("llminside")
        rep, r = self.generate("llminside", p)
        self.assertEqual(self.tier_of("llminside", rep), "image")
        self.assertEqual(r["tokens"], want)

    def test_bad_snapshot_weights_knob_fails_the_deploy(self):
        d = os.path.join(self.tmp, "badknob")
        os.makedirs(d, exist_ok=True)
        shutil.copytree(self.model, os.path.join(d, "model"), dirs_exist_ok=True)
        with open(os.path.join(d, "flint.yaml"), "w") as f:
            f.write("name: badknob\nkind: llm\nmodel: model\nconfig:\n  snapshot_weights: maybe\n")
        p = self.flintd.cli("deploy", d, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"config `snapshot_weights`: expected `aside` or `inside`, got `maybe`", p.stderr)


if __name__ == "__main__":
    flinttest.main()
