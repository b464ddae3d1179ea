#!/usr/bin/python3
"""GPU scale-from-zero to first token through flintd (issue 7), for generated llm models of about
1, 4 and 16 GB of BF16 weights (scripts/make-bench-model), three ways:

  cold    exec, engine open, weights uploaded from the node weight store (`snapshot: false`)
  inside  the anchors' method: the whole CUDA process checkpointed (cuCheckpointProcess* + CRIU)
          with its weights and KV caches in device memory, restored the same way
          (`config: snapshot_weights: inside`, image tier)
  aside   flint's: the llm hooks release the weights and drop the KV caches before the CUDA
          checkpoint; after the CUDA restore the weights are copied back from the pinned-staged
          weight store (default `snapshot_weights: aside`, image tier)

and the pinned host-to-device bandwidth H2D measured in the same run (bench-engine-gpu --h2d).
Each trial drains the endpoint (no replica left), then times one InvokeStream from a Python gRPC
client on the same machine until its first token arrives. Per-phase times come from flintd
(CRIU restore, CUDA restore, weight copy, KV re-allocation, canary, first token).

Goals (issue 7), per size with W the weight bytes:
  aside <= W / (0.8 x H2D) + 0.3 s,   aside >= 20x faster than cold,   aside >= 5x faster than inside.

Without a GPU it prints "skipped: no GPU (...)" and exits 77. Needs root, CRIU, a release build.
Prints a Markdown section for tests/bench/report.py on stdout, progress on stderr; --raw FILE
writes every measurement as JSON.

usage: bench.py [--sizes 1gb,4gb,16gb] [--trials N] [--methods cold,inside,aside] [--build DIR]
                [--models DIR] [--deadline-s S] [--raw FILE] [--dry-run-cpu]

--dry-run-cpu checks the benchmark itself where there is no GPU: the same deploys, drains,
streamed requests and phase collection with a tiny model on the CPU backend (no numbers).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
METHODS = ("cold", "inside", "aside")
PHASES = ("sandbox", "restore", "cuda_restore", "reconnect", "weight_copy", "kv_alloc", "canary", "init", "total",
          "first_token")
PAYLOAD = json.dumps({"prompt": "flint", "max_tokens": 2, "temperature": 0, "ignore_eos": True}).encode()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def gb(n):
    return "%.2f GB" % (n / 1e9)


class Bench:
    def __init__(self, ft, flintd, tmp, trials, deadline):
        self.ft, self.f, self.tmp, self.trials, self.deadline = ft, flintd, tmp, trials, deadline
        self.s = ft.stubs()
        self.stub = flintd.stub()

    def left(self):
        return self.deadline - time.time()

    def endpoint(self, name):
        return self.stub.GetEndpoint(self.s.pb.GetEndpointRequest(name=name), timeout=60)

    def wait(self, pred, what, timeout=600):
        end = time.time() + timeout
        while time.time() < end:
            if pred():
                return
            time.sleep(0.02)
        raise RuntimeError("timed out waiting for " + what + "\n" + self.f.read_log()[-3000:])

    cpu = False

    def bundle(self, name, model, method, weights):
        d = os.path.join(self.tmp, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(os.path.join(d, "model"))
        for fn in os.listdir(model):
            # hard links: the bundle costs nothing to make (same tmpfs)
            os.link(os.path.join(model, fn), os.path.join(d, "model", fn))
        # the process image holds its device memory after a CUDA checkpoint: room for the
        # weights (inside) plus the engine's own
        mem = max(8, int(weights * 2.5 / (1 << 30)) + 8)
        m = ["name: %s" % name, "kind: llm", "model: model", "max_concurrency: 2", "startup_timeout: 900s",
             "resources:", "  memory: %dGi" % mem] + ([] if self.cpu else ["  gpu: true"]) + [
             "config:", "  backend: %s" % ("cpu" if self.cpu else "cuda"), '  context: "%d"' % (128 if self.cpu else 512),
             "  snapshot_weights: %s" % ("inside" if method == "inside" else "aside")]
        m.append("snapshot: false" if method == "cold" else "parked_replicas: 0")
        with open(os.path.join(d, "flint.yaml"), "w") as fh:
            fh.write("\n".join(m) + "\n")
        return d

    def deploy(self, name, model, method, weights):
        d = self.bundle(name, model, method, weights)
        t0 = time.time()
        out = self.f.cli("deploy", d, timeout=3600).stdout.decode()
        log("  deployed %s in %.1f s: %s" % (name, time.time() - t0, " ".join(out.split())[-200:]))
        return out

    def drain(self, name):
        self.stub.Drain(self.s.pb.DrainRequest(name=name), timeout=60)
        self.wait(lambda: not [r for r in self.endpoint(name).replicas if r.state != "parked"], name + " drained")

    def trial(self, name, want_tier):
        self.drain(name)
        time.sleep(0.05)  # the previous replica's teardown and the slot refill
        req = self.s.pb.InvokeRequest(endpoint=name, payload=PAYLOAD)
        t0 = time.perf_counter()
        first = None
        for _chunk in self.stub.InvokeStream(req, timeout=1800):
            if first is None:
                first = (time.perf_counter() - t0) * 1000
        if first is None:
            raise RuntimeError("%s: no token came back" % name)
        # the endpoint was drained: the one replica running now served the request
        tiers = [x.tier for x in self.endpoint(name).replicas if x.state != "parked"]
        if tiers != [want_tier]:
            raise RuntimeError("%s: the trial was served from tier %s, not %s (last error: %s)" % (
                name, tiers, want_tier, self.endpoint(name).last_error))
        return first

    def run_size(self, size, model, weights):
        res = {}
        for method in self.methods:
            name = "gc-%s-%s" % (size, method)
            tier = "cold" if method == "cold" else "image"
            if self.left() < 60:
                res[method] = {"error": "not measured: out of time"}
                continue
            try:
                out = self.deploy(name, model, method, weights)
                if method != "cold" and "image taken" not in out:
                    raise RuntimeError("no snapshot: " + " ".join(out.split())[-400:])
                ttft = []
                for i in range(self.trials):
                    if self.left() < 30:
                        break
                    ttft.append(self.trial(name, tier))
                    log("  %-16s trial %d: first token after %.0f ms" % (name, i, ttft[-1]))
                ep = self.endpoint(name)
                ph = {k: v for k, v in ep.cold_start_ms.items() if k.startswith(tier + ".")}
                res[method] = {"ttft_ms": ttft, "phases": ph, "image_bytes": ep.snapshot.size_bytes,
                               "dump_ms": ep.snapshot.dump_ms}
            except Exception as e:  # a method that fails is reported, the others still run
                log("  %s: %s" % (name, e))
                why = [l for l in str(e).splitlines() if l.startswith("flint:") or "failed" in l]
                res[method] = {"error": (why[-1] if why else str(e).splitlines()[0])[:300]}
            try:
                self.stub.DeleteEndpoint(self.s.pb.DeleteEndpointRequest(name=name), timeout=120)
            except Exception:
                pass
        return res


def tool(build, *args):
    p = subprocess.run([os.path.join(build, "tests", "bench", "bench-engine-gpu")] + list(args), capture_output=True,
                       text=True)
    return p.returncode, p.stdout.strip() + p.stderr.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1gb,4gb,16gb")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--build", default=os.environ.get("FLINT_BUILD") or os.path.join(ROOT, "build"))
    ap.add_argument("--models", default=os.environ.get("FLINT_BENCH_DIR"))
    ap.add_argument("--deadline-s", type=float, default=float(os.environ.get("FLINT_BENCH_DEADLINE_S", "3600")))
    ap.add_argument("--raw")
    ap.add_argument("--dry-run-cpu", action="store_true")
    args = ap.parse_args()
    deadline = time.time() + args.deadline_s
    build = os.path.abspath(args.build)
    scratch = None
    if args.models is None:
        if args.dry_run_cpu:
            args.models = scratch = tempfile.mkdtemp(prefix="flint-gpu-coldstart-dry-")
        else:
            args.models = "/dev/shm/flint-bench-gpu"

    if args.dry_run_cpu:
        gpu, h2d = "no GPU (dry run on the CPU backend)", 0.0
    elif not os.access(os.path.join(build, "tests", "bench", "bench-engine-gpu"), os.X_OK):
        print("skipped: no GPU (this build has no CUDA backend)")
        return 77
    else:
        rc, why = tool(build, "--probe")
        if rc != 0:
            print(why if why.startswith("skipped") else "skipped: no GPU (%s)" % why)
            return 77
        gpu = why
        rc, h2d_out = tool(build, "--h2d", "1024")
        h2d = float(h2d_out.split()[-1]) * 1e9 if rc == 0 and h2d_out.startswith("h2d_gbs") else 0.0
        log("GPU: %s; pinned H2D %.1f GB/s" % (gpu, h2d / 1e9))

    os.environ["FLINT_BUILD_DIR"] = build
    os.environ["FLINT_SOURCE_DIR"] = ROOT
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    import flinttest as ft

    models = {}
    os.makedirs(args.models, exist_ok=True)
    for s in args.sizes.split(","):
        d = os.path.join(args.models, ("dry-" if args.dry_run_cpu else "model-") + s)
        if args.dry_run_cpu and not os.path.exists(os.path.join(d, "model.safetensors")):
            subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make-tiny-model"), d], check=True,
                           stdout=sys.stderr)
        elif not os.path.exists(os.path.join(d, "model.safetensors")):
            log("generating the %s model in %s ..." % (s, d))
            subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make-bench-model"), d, "--size", s],
                           check=True, stdout=sys.stderr)
        models[s] = (d, os.path.getsize(os.path.join(d, "model.safetensors")))

    load0 = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="flint-bench-gpu-coldstart-", dir=args.models)
    f = ft.Flintd()
    results, snaplog = {}, []
    try:
        if "snapshots are unavailable" in f.read_log():
            raise SystemExit("gpu-coldstart: snapshots are unavailable on this machine:\n" + f.read_log())
        b = Bench(ft, f, tmp, args.trials, deadline)
        b.cpu = args.dry_run_cpu
        b.methods = [m for m in args.methods.split(",") if m in METHODS]
        for s, (d, w) in models.items():
            log("%s: %s of weights" % (s, gb(w)))
            results[s] = b.run_size(s, d, w)
            results[s]["weights"] = w
        snaplog = [l for l in f.read_log().splitlines() if "snapshotter" in l and ("CUDA" in l or "GPU" in l)]
    finally:
        f.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    load1 = os.getloadavg()
    if args.raw:
        with open(args.raw, "w") as fh:
            json.dump({"gpu": gpu, "h2d_bytes_per_s": h2d, "results": results, "snapshotter": snaplog}, fh, indent=1)
    print(render(results, gpu, h2d, args.trials, load0, load1, args.dry_run_cpu))
    if args.dry_run_cpu:
        # the dry run is a test of this script: every method must have gone through
        failed = ["%s/%s: %s" % (s, m, r["error"]) for s, rs in results.items() for m, r in rs.items()
                  if isinstance(r, dict) and "error" in r]
        if failed:
            log("dry run failed:\n  " + "\n  ".join(failed))
            return 1
    return 0


def med(xs):
    return statistics.median(xs) if xs else None


def render(res, gpu, h2d, trials, load0, load1, dry=False):
    lines = ["Scale from zero to first token through flintd on %s: a streamed request (2 tokens) for an llm "
             "endpoint with no running replica, arrival to first token, median of up to %d trials; pinned "
             "host-to-device bandwidth measured in the same run: %.1f GB/s. Load average %.2f at the start, "
             "%.2f at the end." % (gpu, trials, h2d / 1e9, load0[0], load1[0]), "",
             "| weights | method | first token (median) ms | image (dump ms) | " + " | ".join(PHASES) + " |",
             "|---:|---|---:|---:|" + "---:|" * len(PHASES)]
    goals = []
    for s, r in res.items():
        w = r["weights"]
        for m in METHODS:
            t = r.get(m)
            if t is None:
                continue
            if "error" in t:
                lines.append("| %s | %s | %s | | %s" % (gb(w), m, t["error"].replace("|", "/"), "| " * len(PHASES)))
                continue
            tier = "cold" if m == "cold" else "image"
            cells = []
            for p in PHASES:
                v = t["phases"].get("%s.%s.p50" % (tier, p))
                cells.append("%.1f" % v if v is not None else "–")
            img = "%s (%.0f)" % (gb(t["image_bytes"]), t["dump_ms"]) if m != "cold" else ""
            lines.append("| %s | %s | %.1f | %s | %s |" % (gb(w), m, med(t["ttft_ms"]) or 0, img, " | ".join(cells)))
        a, b, c = (med(r.get(m, {}).get("ttft_ms", [])) for m in METHODS)
        if c:
            bound = (w / (0.8 * h2d) + 0.3) * 1000 if h2d else None
            if bound:
                goals.append("%s: aside %.0f ms vs W / (0.8 x H2D) + 0.3 s = %.0f ms: %s" % (
                    gb(w), c, bound, "met" if c <= bound else "NOT met"))
            if a:
                goals.append("%s: cold / aside = %.1fx (goal >= 20x): %s" % (gb(w), a / c, "met" if a / c >= 20 else "NOT met"))
            if b:
                goals.append("%s: inside / aside = %.1fx (goal >= 5x): %s" % (gb(w), b / c, "met" if b / c >= 5 else "NOT met"))
    lines += ["", "Phase cells are flintd's p50 in ms for the tier that served (cold: sandbox, init, total; image: "
              "snapshotter sandbox work, CRIU restore, CUDA restore, reconnect, the llm hook's weight copy and KV "
              "re-allocation, canary, total; first_token for both).", ""]
    if dry:
        lines += ["Goals: not evaluated (dry run on the CPU: these numbers are not a benchmark)."]
    elif goals:
        lines += ["Goals (issue 7):", ""] + ["- " + g for g in goals]
    else:
        lines += ["Goals: not evaluated (missing rows)."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
