#!/usr/bin/python3
"""GPU snapshots end to end (issue 7): an llm worker on the CUDA backend with a generated model of
about 2 GB, checkpointed by the real snapshotter (cuCheckpointProcessLock/Checkpoint around the
CRIU dump, weights released and KV caches dropped first) and restored five times in a row from the
image (CRIU restore, cuCheckpointProcessRestore/Unlock, weights copied back by the worker's
after_restore hook at the same device addresses). Greedy tokens must be identical before and after
every restore; the CUDA restore, weight copy and KV phases must show in `flint status`; the image
must not contain the weights.

Without a GPU (or without the CUDA backend, or CRIU) it prints "skipped: no GPU (...)" / says why
and exits 77. Environment: FLINT_BUILD_DIR, FLINT_SOURCE_DIR, FLINT_BENCH_DIR (where the model is
generated, default /dev/shm/flint-bench-gpu, shared with the GPU benchmarks).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("FLINT_SOURCE_DIR") or os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))
import flinttest  # noqa: E402
from test_snapshot import SnapshotCase  # noqa: E402

MODELS = os.environ.get("FLINT_BENCH_DIR") or "/dev/shm/flint-bench-gpu"


def gen(prompt, n):
    return json.dumps({"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True})


def gpu_status():
    tool = flinttest.build_path("tests", "engine", "engine-tool")
    d = tempfile.mkdtemp(prefix="flint-gpu-probe-")
    try:
        subprocess.run([sys.executable, os.path.join(SOURCE, "scripts", "make-tiny-model"), os.path.join(d, "m")],
                       check=True, capture_output=True)
        p = subprocess.run([tool, "--backend", "cuda", "open", os.path.join(d, "m")], capture_output=True, text=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return None if p.stdout.startswith("ok: cuda") else (p.stdout + p.stderr).strip()


class GpuSnapshot(SnapshotCase):
    @classmethod
    def setUpClass(cls):
        cls.model = os.path.join(MODELS, "model-2gb")
        if not os.path.exists(os.path.join(cls.model, "model.safetensors")):
            subprocess.run([sys.executable, os.path.join(SOURCE, "scripts", "make-bench-model"), cls.model, "--size",
                            "2gb"], check=True)
        cls.weight_bytes = os.path.getsize(os.path.join(cls.model, "model.safetensors"))
        super().setUpClass()

    def deploy_llm(self, name):
        d = os.path.join(self.tmp, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(os.path.join(d, "model"))
        for fn in os.listdir(self.model):
            os.link(os.path.join(self.model, fn), os.path.join(d, "model", fn))
        with open(os.path.join(d, "flint.yaml"), "w") as f:
            f.write("name: %s\nkind: llm\nmodel: model\nparked_replicas: 0\nmax_concurrency: 2\n"
                    "startup_timeout: 600s\nresources:\n  gpu: true\n  memory: 16Gi\n"
                    "config:\n  backend: cuda\n  context: \"512\"\n" % name)
        return self.flintd.cli("deploy", d, timeout=1800).stdout.decode()

    def generate(self, name, payload):
        r = self.flintd.invoke(name, payload, timeout=600)
        return r.replica, json.loads(r.payload)

    def test_five_restores_in_a_row_keep_the_tokens(self):
        out = self.deploy_llm("gpullm")
        self.assertRegex(out, r"snapshot: [0-9.]+ [KMG]iB image taken in [0-9]+ ms")
        p = gen("The flint model", 16)
        rep0, r0 = self.generate("gpullm", p)
        self.assertEqual(self.tier_of("gpullm", rep0), "cold")
        want = r0["tokens"]
        self.assertEqual(len(want), 16)
        for i in range(5):
            self.drain("gpullm")
            rep, r = self.generate("gpullm", p)
            self.assertEqual(self.tier_of("gpullm", rep), "image", "restore %d" % i)
            self.assertEqual(r["tokens"], want, "restore %d" % i)
            sys.stderr.write("restore %d: %s\n" % (i, json.dumps(
                {k: v for k, v in self.flintd.status("gpullm")["cold_start_ms"].items() if k.startswith("image.")})))
        st = self.flintd.status("gpullm")
        phases = st["cold_start_ms"]
        for key in ("image.restore.p50", "image.cuda_restore.p50", "image.weight_copy.p50", "image.kv_alloc.p50",
                    "image.first_token.p50"):
            self.assertIn(key, phases)
        # weights aside: the image holds the process and its small device state, not the weights
        self.assertLess(st["snapshot"]["size_bytes"], self.weight_bytes / 2)
        sys.stderr.write("snapshot: %s\n" % json.dumps(st["snapshot"]))


if __name__ == "__main__":
    why = gpu_status()
    if why is not None:
        print("skipped: no GPU (%s)" % why)
        sys.stderr.write("skipped: no GPU (%s)\n" % why)
        sys.exit(77)
    flinttest.main()
