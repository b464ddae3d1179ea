#!/usr/bin/python3
"""Scale-from-zero latency through flintd (issue 4): a request for an endpoint with no running
replica, from its arrival to its response, by the tier the replica came up from:

  cold    exec + the function's init (deployed with `snapshot: false`)
  image   CRIU restore of the version's in-memory image (deployed with parked_replicas: 0)
  parked  thaw of a restored replica kept frozen (deployed with parked_replicas: 1)

for examples/echo and for examples/warm with 16 MiB, 256 MiB and 1 GiB of weights, all on one
flintd in one run. Each trial stops the endpoint's replicas (the Drain RPC), then times one
Invoke from a Python gRPC client on the same machine; trials alternate between the tiers
(one endpoint per tier, same bundle) so that a change of load hits every tier alike. Per-phase times come from flintd (its
ring of recent starts: sandbox, CRIU restore, reconnect, canary, init); "first invoke" is the
client's latency minus the replica's start (dispatch, the invoke itself, the reply).

Prints a Markdown section for tests/bench/report.py on stdout; progress on stderr.
usage: bench.py [--trials N] [--sizes 16M,256M,1G] [--build DIR]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
TIERS = ("cold", "image", "parked")
PHASES = ("sandbox", "restore", "reconnect", "canary", "init")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def size_bytes(s):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s)


def human(n):
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return "%.3g %s" % (n / div, unit)
    return "%d B" % n


class Bench:
    def __init__(self, ft, flintd, tmp, trials):
        self.ft, self.f, self.tmp, self.trials = ft, flintd, tmp, trials
        self.s = ft.stubs()
        self.stub = flintd.stub()

    def endpoint(self, name):
        return self.stub.GetEndpoint(self.s.pb.GetEndpointRequest(name=name), timeout=30)

    def wait(self, pred, what, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return
            time.sleep(0.01)
        raise RuntimeError("timed out waiting for " + what + "\n" + self.f.read_log()[-3000:])

    def deploy(self, name, so, weights, tier):
        manifest = "name: {name}\nkind: native\nfunction: fn.so\nresources:\n  memory: 256Mi\n"
        files = {"fn.so": so}
        if weights:
            manifest += "weights:\n  table: weights.bin\n"
            files["weights.bin"] = weights
        manifest += {"cold": "snapshot: false\n", "image": "parked_replicas: 0\n", "parked": "parked_replicas: 1\n"}[tier]
        d = self.ft.make_bundle(self.tmp, name, manifest, files)
        t0 = time.time()
        self.f.cli("deploy", d, timeout=1800)
        log("  deployed %s in %.1f s" % (name, time.time() - t0))

    def drain(self, name):
        self.stub.Drain(self.s.pb.DrainRequest(name=name), timeout=30)
        self.wait(lambda: all(r.state == "parked" for r in self.endpoint(name).replicas), "%s drained" % name)

    def trial(self, name, tier, payload):
        if tier == "parked":
            self.wait(lambda: self.endpoint(name).snapshot.parked >= 1, "a parked replica of " + name)
        self.drain(name)
        time.sleep(0.03)  # let the previous replica's teardown and the slot refill finish
        req = self.s.pb.InvokeRequest(endpoint=name, payload=payload)
        t0 = time.perf_counter()
        r = self.stub.Invoke(req, timeout=300)
        ms = (time.perf_counter() - t0) * 1000
        rep = [x for x in self.endpoint(name).replicas if x.id == r.replica]
        if not rep or rep[0].tier != tier:
            raise RuntimeError("%s: trial for tier %s was served by %s" % (name, tier, rep[0].tier if rep else "?"))
        return ms, rep[0].start_ms

    def run_config(self, label, so, weights, payload):
        # one endpoint per tier, deployed from the same bundle content (the weights are stored
        # once), and trials interleaved across tiers so load changes hit every tier alike
        names = {t: "%s-%s" % (label, t) for t in TIERS}
        for t in TIERS:
            self.deploy(names[t], so, weights, t)
            self.stub.Invoke(self.s.pb.InvokeRequest(endpoint=names[t], payload=payload), timeout=300)
        out = {t: {"lat": [], "first": []} for t in TIERS}
        for i in range(self.trials):
            for t in TIERS:
                ms, start = self.trial(names[t], t, payload)
                out[t]["lat"].append(ms)
                out[t]["first"].append(ms - start)
                if t == "parked":
                    # the pool's refill (a restore) must not overlap the next trial
                    self.wait(lambda: self.endpoint(names[t]).snapshot.parked >= 1, "the pool of " + names[t])
        for t in TIERS:
            ep = self.endpoint(names[t])
            out[t]["phases"] = {k: v for k, v in ep.cold_start_ms.items() if k.startswith(t + ".")}
            log("  %-16s %-6s p50 %8.2f ms  p99 %8.2f ms" % (label, t, pct(out[t]["lat"], 0.5), pct(out[t]["lat"], 0.99)))
        ep = self.endpoint(names["image"])
        out["snapshot"] = {"size": ep.snapshot.size_bytes, "dump_ms": ep.snapshot.dump_ms}
        for t in TIERS:
            self.stub.DeleteEndpoint(self.s.pb.DeleteEndpointRequest(name=names[t]), timeout=60)
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--sizes", default="16M,256M,1G")
    ap.add_argument("--build", default=os.environ.get("FLINT_BUILD") or os.path.join(ROOT, "build"))
    args = ap.parse_args()
    os.environ["FLINT_BUILD_DIR"] = os.path.abspath(args.build)
    os.environ["FLINT_SOURCE_DIR"] = ROOT
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    import flinttest as ft

    load0 = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="flint-bench-coldstart-")
    f = ft.Flintd()
    results = {}
    try:
        if "snapshots are unavailable" in f.read_log():
            raise SystemExit("coldstart: snapshots are unavailable on this machine:\n" + f.read_log())
        b = Bench(ft, f, tmp, args.trials)
        configs = [("echo", ft.build_path("examples", "echo", "echo.so"), None, 0)]
        warm_so = ft.build_path("examples", "warm", "warm.so")
        for s in args.sizes.split(","):
            n = size_bytes(s)
            if n == 16 << 20:
                w = ft.build_path("examples", "warm", "weights.bin")
            else:
                w = os.path.join(tmp, "weights-%s.bin" % s)
                with open(w, "wb") as fh:
                    for _ in range(n >> 20):
                        fh.write(os.urandom(1 << 20))
            configs.append(("warm-" + s.lower(), warm_so, w, n))
        for label, so, weights, n in configs:
            log("%s (weights %s)" % (label, human(n) if n else "none"))
            results[label] = b.run_config(label, so, weights, b"the quick brown fox")
            results[label]["weights"] = n
    finally:
        f.cleanup()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    load1 = os.getloadavg()
    print(render(results, args.trials, load0, load1))


def render(res, trials, load0, load1):
    p = lambda xs, q: pct(xs, q)
    lines = ["Scale from zero through flintd: a request for an endpoint with no running replica, arrival "
             "to response (Python gRPC client, TCP loopback), %d trials per row, tiers interleaved, all rows in "
             "one run on one flintd (release build). Load average %.2f at the start, %.2f at the end." % (trials, load0[0], load1[0]),
             "",
             "| endpoint | weights | image (dump) | tier | p50 ms | p99 ms | cold ÷ tier (p50) |"
             " sandbox | CRIU restore | reconnect | canary | init | start total | first invoke |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in res.items():
        cold50 = p(r["cold"]["lat"], 0.5)
        for tier in TIERS:
            t = r[tier]
            ph = t["phases"]

            def cell(phase):
                a, b = ph.get("%s.%s.p50" % (tier, phase)), ph.get("%s.%s.p99" % (tier, phase))
                return "%.2f / %.2f" % (a, b) if a is not None else "–"
            lat50 = p(t["lat"], 0.5)
            lines.append("| %s | %s | %s | %s | %.2f | %.2f | %s | %s | %s | %s | %s | %s | %s | %.2f / %.2f |" % (
                label if tier == "cold" else "", human(r["weights"]) if r["weights"] and tier == "cold" else "",
                "%s (%.0f ms)" % (human(r["snapshot"]["size"]), r["snapshot"]["dump_ms"]) if tier == "cold" else "",
                tier, lat50, p(t["lat"], 0.99), "%.1fx" % (cold50 / lat50) if tier != "cold" else "1x",
                cell("sandbox"), cell("restore"), cell("reconnect"), cell("canary"), cell("init"), cell("total"),
                p(t["first"], 0.5), p(t["first"], 0.99)))
    lines.append("")
    lines.append("Phase cells are p50 / p99 ms as flintd measured them (start total: the replica's start, "
                 "request for a replica to ready; first invoke: client latency minus start total).")
    lines.append("")
    # goals
    goals = []
    img = {k: r["image"]["phases"].get("image.total.p50") for k, r in res.items()}
    worst = max(v for v in img.values() if v is not None)
    goals.append("- image-tier restore ≤ 20 ms p50 (flintd, restore request to ready): %s — **%s**" % (
        ", ".join("%s %.1f ms" % (k, v) for k, v in img.items()), "met" if worst <= 20 else "not met"))
    if "warm-1g" in res:
        r = res["warm-1g"]
        ratio = p(r["cold"]["lat"], 0.5) / p(r["image"]["lat"], 0.5)
        goals.append("- `examples/warm` at 1 GiB, image tier ≥ 50x faster than cold (p50, end to end): %.0fx — **%s**"
                     % (ratio, "met" if ratio >= 50 else "not met"))
    if "warm-1g" in res and "warm-16m" in res:
        a, b = p(res["warm-1g"]["image"]["lat"], 0.5), p(res["warm-16m"]["image"]["lat"], 0.5)
        goals.append("- image tier at 1 GiB within 1.5x of 16 MiB (p50, end to end): %.2f vs %.2f ms = %.2fx — **%s**"
                     % (a, b, a / b, "met" if a / b <= 1.5 else "not met"))
    lines.append("Goals:")
    lines += goals
    return "\n".join(lines)


if __name__ == "__main__":
    main()
