"""The snapshot suite, in the shape of CRIU's zdtm: set up state in a real function, checkpoint
and restore it through a real flintd, real CRIU and real sandboxes, verify.

The state lives in tests/functions/snapstate.c: a random token drawn at init (a cold start gets
a new one, a replica restored from the image shows the image's), a heap table derived from it, a
heap counter, and counts of the before_checkpoint / after_restore hooks. Replicas are sent away
with `flint drain` (the Drain RPC), so every scale-from-zero below is deterministic.

Without CRIU the suite skips, loudly, with the reason flintd gave (CI has CRIU: scripts/bootstrap
builds it)."""
import concurrent.futures
import contextlib
import glob
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import unittest

import flinttest
from flinttest import FlintTestCase, Flintd, build_path, make_bundle, stubs

SNAPSTATE = build_path("tests", "functions", "snapstate.so")
UNAVAILABLE = "snapshots are unavailable: "


@contextlib.contextmanager
def env(**values):
    """Environment for the flintd started inside (FLINT_FAULT, FLINT_CRIU)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def unavailable_reason(flintd):
    for line in flintd.read_log().splitlines():
        if UNAVAILABLE in line:
            return line.split(UNAVAILABLE, 1)[1]
    return None


def tags(flintd):
    t = "flint-" + hashlib.sha256(flintd.state.encode()).hexdigest()[:12]
    return [t, t + "-snap"]


def cgroup_paths(tag):
    """The parent cgroup `tag` (in every hierarchy) and the replica cgroups under it."""
    parents = glob.glob("/sys/fs/cgroup/*/" + tag) + glob.glob("/sys/fs/cgroup/" + tag)
    return parents + [d for p in parents for d in glob.glob(p + "/*") if os.path.isdir(d)]


def processes_mentioning(text):
    p = subprocess.run(["pgrep", "-af", text], capture_output=True, text=True)
    return [l for l in p.stdout.splitlines() if "pgrep" not in l]


class SnapshotCase(FlintTestCase):
    """A flintd with snapshots; the class is skipped (loudly) when CRIU is unavailable, and
    asserts after flintd stops that nothing it made is left: processes, cgroups, mounts,
    images."""

    fault = None
    criu = None

    @classmethod
    def setUpClass(cls):
        extra = {}
        if cls.fault:
            extra["FLINT_FAULT"] = cls.fault
        if cls.criu:
            extra["FLINT_CRIU"] = cls.criu
        with env(**extra):
            super().setUpClass()
        cls.tags = tags(cls.flintd)
        reason = unavailable_reason(cls.flintd)
        if reason and not cls.criu:
            sys.stderr.write("\n*** SKIP %s: snapshots are unavailable on this machine: %s ***\n" % (cls.__name__, reason))
            super().tearDownClass()
            raise unittest.SkipTest("snapshots unavailable: " + reason)

    @classmethod
    def tearDownClass(cls):
        f = cls.flintd
        run, top = f.run, f.dir
        super().tearDownClass()
        leaks = []
        for tag in cls.tags:
            leaks += ["cgroup " + p for p in cgroup_paths(tag)]
        leaks += ["process " + p for p in processes_mentioning(run)]
        with open("/proc/self/mountinfo") as m:
            leaks += ["mount " + l.strip() for l in m if top in l]
        if leaks:
            raise AssertionError("left behind after flintd stopped:\n" + "\n".join(leaks))

    # ---- helpers ---------------------------------------------------------------------------
    def deploy(self, name, manifest="", so=SNAPSTATE):
        d = make_bundle(self.tmp, name, "name: {name}\nfunction: fn.so\n" + manifest, {"fn.so": so})
        return self.flintd.cli("deploy", d).stdout.decode()

    def state(self, name, payload="state", timeout=60):
        r = self.flintd.invoke(name, payload, timeout=timeout)
        s = json.loads(r.payload)
        self.assertEqual(s["replica"], r.replica)
        return s

    def tier_of(self, name, replica):
        for r in self.flintd.status(name)["replicas"]:
            if r["id"] == replica:
                return r["tier"]
        return None

    def snapshot(self, name):
        return self.flintd.status(name)["snapshot"]

    def wait_parked(self, name, n):
        self.flintd.wait_for(lambda: self.snapshot(name)["parked"] == n, what="%d parked replica(s) of %s" % (n, name))

    def drain(self, name):
        self.flintd.cli("drain", name)
        self.flintd.wait_for(lambda: not [r for r in self.flintd.status(name)["replicas"] if r["state"] != "parked"],
                             what="running replicas of %s gone" % name)

    def image_dir(self, name, version=1):
        return os.path.join(self.flintd.run, "images", "%s-%d" % (name, version))


class StateSurvives(SnapshotCase):
    def test_heap_state_continues_after_restore_and_hooks_run_once(self):
        out = self.deploy("counter")
        self.assertRegex(out, r"snapshot: [0-9.]+ [KM]iB image taken in [0-9]+ ms \(tier (image|parked)\)")
        # the original: checkpointed after init, resumed with its after_restore hook
        s0 = self.state("counter")
        self.assertEqual(self.tier_of("counter", s0["replica"]), "cold")
        self.assertEqual((s0["counter"], s0["before"], s0["after"], s0["table_ok"]), (1001, 1, 1, 1))
        self.state("counter")
        self.assertEqual(self.state("counter")["counter"], 1003)
        self.assertTrue(os.path.isdir(self.image_dir("counter")))
        self.assertEqual(os.stat(os.path.dirname(self.image_dir("counter"))).st_mode & 0o777, 0o700)

        # scale from zero: the parked replica was restored from the image taken after init
        self.wait_parked("counter", 1)
        self.drain("counter")
        s1 = self.state("counter")
        self.assertEqual(self.tier_of("counter", s1["replica"]), "parked")
        self.assertEqual(s1["token"], s0["token"])           # the image's memory, not a new init
        self.assertEqual(s1["counter"], 1001)                 # continues from the checkpoint
        self.assertEqual(s1["table_ok"], 1)
        self.assertEqual(s1["before"], 1)                     # carried in the image
        self.assertEqual(s1["after"], 1)                      # ran once, in this replica
        self.assertEqual(s1["restored_as"], s1["replica"])    # and saw its own replica id
        self.assertNotEqual(s1["replica"], s0["replica"])
        s2 = self.state("counter")
        self.assertEqual((s2["replica"], s2["counter"], s2["after"]), (s1["replica"], 1002, 1))

        # and from the image tier, with the pool refilled meanwhile, then emptied
        self.wait_parked("counter", 1)
        self.flintd.cli("scale", "counter", "parked_replicas=0")
        self.wait_parked("counter", 0)
        self.drain("counter")
        s3 = self.state("counter")
        self.assertEqual(self.tier_of("counter", s3["replica"]), "image")
        self.assertEqual((s3["token"], s3["counter"], s3["after"], s3["before"]), (s0["token"], 1001, 1, 1))

        st = self.flintd.status("counter")
        sn = st["snapshot"]
        self.assertGreater(sn["size_bytes"], 0)
        self.assertGreater(sn["dump_ms"], 0)
        self.assertGreaterEqual(sn["restores"], 1)
        self.assertGreater(sn["restore_p50_ms"], 0)
        self.assertGreaterEqual(sn["unparks"], 1)
        for key in ("image.restore.p50", "image.reconnect.p50", "image.canary.p50", "image.total.p50",
                    "parked.total.p50", "cold.total.p50"):
            self.assertIn(key, st["cold_start_ms"])
        human = self.flintd.cli("status", "counter").stdout.decode()
        self.assertRegex(human, r"snapshot   tier image, image [0-9.]+ [KM]iB, dump [0-9.]+ ms")
        self.assertRegex(human, r"restores   image: [0-9]+, p50 [0-9.]+ ms, p99 [0-9.]+ ms; parked: [0-9]+")
        self.assertRegex(human, r"\n  counter-1-\S+ +v1 +ready +image ")

    def meta(self, name):
        with open(os.path.join(self.image_dir(name), "flint.meta")) as f:
            return dict(l.rstrip("\n").split("=", 1) for l in f if "=" in l)

    def test_restored_replicas_get_their_namespaces_from_the_slot(self):
        # the image leaves the UTS, IPC and network namespaces to the restoring slot...
        self.deploy("slotns", "parked_replicas: 0\n")
        self.assertEqual(self.meta("slotns")["slot_ns"], "uts,ipc,net")
        self.drain("slotns")
        s = self.state("slotns")
        self.assertEqual(self.tier_of("slotns", s["replica"]), "image")
        self.assertEqual((s["counter"], s["table_ok"], s["shm"]), (1001, 1, -1))

    def test_sysv_ipc_objects_keep_their_namespace_in_the_image(self):
        # ...except an IPC namespace holding System V objects: the image carries it, and them
        self.deploy("sysv", "parked_replicas: 0\nconfig:\n  sysv_shm: \"yes\"\n")
        self.assertEqual(self.meta("sysv")["slot_ns"], "uts,net")
        s0 = self.state("sysv")
        self.assertEqual(s0["shm"], 1)
        self.drain("sysv")
        s = self.state("sysv")
        self.assertEqual(self.tier_of("sysv", s["replica"]), "image")
        self.assertEqual((s["token"], s["shm"]), (s0["token"], 1))

    def test_five_replicas_restored_concurrently_from_one_image(self):
        self.deploy("five", "max_replicas: 5\nparked_replicas: 0\n")
        token = self.state("five")["token"]
        self.drain("five")
        with concurrent.futures.ThreadPoolExecutor(5) as ex:
            results = list(ex.map(lambda _: self.state("five", "sleep:700"), range(5)))
        self.assertEqual({r["token"] for r in results}, {token})
        self.assertEqual(len({r["replica"] for r in results}), 5, results)
        self.assertEqual([(r["counter"], r["after"], r["before"], r["table_ok"]) for r in results], [(1001, 1, 1, 1)] * 5)
        # every replica's RNG was reseeded with its own entropy
        self.assertEqual(len({r["rand"] for r in results}), 5, results)
        tiers = {r["id"]: r["tier"] for r in self.flintd.status("five")["replicas"]}
        self.assertEqual([tiers[r["replica"]] for r in results], ["image"] * 5)
        # each in its own sandbox: own pid namespace (the worker is pid 1 there), own cgroup
        pids = [r["pid"] for r in self.flintd.status("five")["replicas"]]
        self.assertEqual(len(set(pids)), 5)
        for pid in pids:
            with open("/proc/%d/status" % pid) as f:
                nspid = [l for l in f if l.startswith("NSpid:")][0].split()
            self.assertEqual(nspid[-1], "1")
        cgroups = set()
        for pid in pids:
            with open("/proc/%d/cgroup" % pid) as f:
                mem = [l.strip().split(":", 2)[2] for l in f if ":memory:" in l or l.startswith("0::")][0]
            self.assertIn("/" + self.tags[1] + "/", mem)
            cgroups.add(mem)
        self.assertEqual(len(cgroups), 5)

    def test_canary_payload_runs_before_traffic(self):
        self.deploy("canary", 'canary: "state"\nparked_replicas: 0\n')
        self.drain("canary")
        s = self.state("canary")
        self.assertEqual(self.tier_of("canary", s["replica"]), "image")
        self.assertEqual(s["counter"], 1002)  # the canary invoke came first

    def test_failing_canary_falls_back_to_cold(self):
        self.deploy("badcanary", 'canary: "fail"\nparked_replicas: 0\n')
        image_token = self.state("badcanary")["token"]  # the original's: the image's
        self.drain("badcanary")
        for _ in range(3):
            s = self.state("badcanary")
            self.assertEqual(self.tier_of("badcanary", s["replica"]), "cold")
            self.assertNotEqual(s["token"], image_token)
            self.drain("badcanary")
        st = self.flintd.status("badcanary")
        self.assertGreaterEqual(st["snapshot"]["fallbacks"], 3)
        self.assertIn("canary request", st["last_error"])
        # three failures in a row: the image tier of this version is off, said so
        self.assertEqual(st["snapshot"]["tier"], "none")
        self.assertIn("repeated restore failures", st["snapshot"]["error"])
        self.assertIn("falling back to a cold start", self.flintd.read_log())

    def test_corrupted_image_is_never_restored(self):
        self.deploy("corrupt", "parked_replicas: 0\n")
        image_token = self.state("corrupt")["token"]
        self.drain("corrupt")
        pages = sorted(glob.glob(os.path.join(self.image_dir("corrupt"), "pages-*.img")))[0]
        with open(pages, "r+b") as f:
            f.seek(64)
            f.write(b"\xde\xad\xbe\xef")
        s = self.state("corrupt")  # the request is still served
        self.assertEqual(self.tier_of("corrupt", s["replica"]), "cold")
        self.assertNotEqual(s["token"], image_token)
        st = self.flintd.status("corrupt")
        self.assertEqual(st["snapshot"]["tier"], "none")
        self.assertIn("does not match its recorded digest", st["snapshot"]["error"])
        self.assertIn("falling back to a cold start", st["last_error"])
        self.assertFalse(os.path.exists(self.image_dir("corrupt")))
        self.assertGreaterEqual(st["snapshot"]["fallbacks"], 1)

    def test_scale_from_zero_with_the_cli_and_the_python_client(self):
        self.deploy("zero")
        self.wait_parked("zero", 1)
        self.flintd.cli("drain", "zero")
        p = self.flintd.cli("invoke", "zero", "--data", "state")
        s = json.loads(p.stdout)
        self.assertEqual(self.tier_of("zero", s["replica"]), "parked")
        self.wait_parked("zero", 1)
        self.drain("zero")
        r = self.flintd.stub().Invoke(stubs().pb.InvokeRequest(endpoint="zero", payload=b"state"), timeout=30)
        self.assertEqual(self.tier_of("zero", r.replica), "parked")
        self.assertEqual(json.loads(r.payload)["counter"], 1001)

    def test_redeploy_makes_a_new_snapshot_and_delete_removes_it(self):
        self.deploy("redeploy")
        self.assertTrue(os.path.isdir(self.image_dir("redeploy", 1)))
        self.deploy("redeploy", "config:\n  rev: \"2\"\n")
        self.assertTrue(os.path.isdir(self.image_dir("redeploy", 2)))
        self.flintd.wait_for(lambda: not os.path.exists(self.image_dir("redeploy", 1)), what="v1 image removed")
        self.wait_parked("redeploy", 1)
        self.assertEqual({r["version"] for r in self.flintd.status("redeploy")["replicas"]}, {2})
        self.flintd.cli("rm", "redeploy")
        self.flintd.wait_for(lambda: not os.path.exists(self.image_dir("redeploy", 2)), what="v2 image removed")
        self.assertEqual([d for d in os.listdir(os.path.join(self.flintd.run, "images")) if d.startswith("redeploy")],
                         [])

    def test_unsupported_resource_fails_the_dump_not_the_endpoint(self):
        out = self.deploy("heldtcp", so=build_path("tests", "functions", "heldtcp.so"))
        self.assertIn("snapshot: none (checkpoint of endpoint `heldtcp` failed: criu dump failed:", out)
        self.assertIn("TCP", out)
        self.assertIn("cold starts only", out)
        self.assertEqual(self.flintd.invoke("heldtcp", "still here").payload, b"still here")
        st = self.flintd.status("heldtcp")
        self.assertEqual(st["snapshot"]["tier"], "none")
        self.assertIn("TCP", st["snapshot"]["error"])
        self.drain("heldtcp")
        r = self.flintd.invoke("heldtcp", "and again")
        self.assertEqual(self.tier_of("heldtcp", r.replica), "cold")
        self.assertFalse(os.path.exists(self.image_dir("heldtcp")))

    @unittest.skipUnless(os.access("/usr/bin/slirp4netns", os.X_OK), "`network: true` needs slirp4netns")
    def test_network_endpoints_are_not_snapshotted(self):
        out = self.deploy("netted", "network: true\n")
        self.assertIn("snapshot: none (endpoints with `network: true` are not snapshotted", out)
        self.assertEqual(self.state("netted")["after"], 0)  # no checkpoint: no hooks ran
        self.assertFalse(os.path.exists(self.image_dir("netted")))

    def test_after_restore_hook_failure_in_the_original_fails_the_deploy(self):
        d = make_bundle(self.tmp, "badhook", "name: {name}\nfunction: fn.so\nconfig:\n  fail_after_restore: nope\n",
                        {"fn.so": SNAPSTATE})
        p = self.flintd.cli("deploy", d, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"after_restore hook failed in the checkpointed worker: after_restore refused: nope", p.stderr)
        self.assertFalse(os.path.exists(self.image_dir("badhook")))


class Restart(SnapshotCase):
    """flintd restarts find their images, verify them and keep them, or discard them with the
    reason (corrupted, stale)."""

    def test_restart_keeps_verified_images_and_discards_bad_ones(self):
        f = self.flintd
        self.deploy("keep")
        self.deploy("rot")
        self.deploy("stale")
        tokens = {n: self.state(n)["token"] for n in ("keep", "rot", "stale")}
        f.stop()
        pages = sorted(glob.glob(os.path.join(self.image_dir("rot"), "pages-*.img")))[0]
        with open(pages, "r+b") as fh:
            fh.seek(100)
            fh.write(b"rot!")
        db = sqlite3.connect(os.path.join(f.state, "registry.db"))
        db.execute("UPDATE snapshots SET meta = replace(meta, 'worker=', 'worker=0000') WHERE endpoint='stale'")
        db.commit()
        db.close()
        f.start()
        log = f.read_log()
        self.assertRegex(log, r"kept the snapshot of `keep` version 1 \([0-9.]+ [KM]iB, [0-9]+ files verified\)")
        self.assertRegex(log, r"discarded the snapshot of `rot` version 1: image file `pages-[0-9]+\.img` does not "
                              r"match its recorded digest")
        self.assertIn("discarded the snapshot of `stale` version 1: flint-worker changed since it was taken", log)
        self.assertFalse(os.path.exists(self.image_dir("rot")))
        self.assertFalse(os.path.exists(self.image_dir("stale")))
        self.wait_parked("keep", 1)
        s = self.state("keep")
        self.assertEqual(self.tier_of("keep", s["replica"]), "parked")
        self.assertEqual((s["token"], s["counter"]), (tokens["keep"], 1001))
        for name in ("rot", "stale"):
            s = self.state(name)
            self.assertEqual(self.tier_of(name, s["replica"]), "cold")
            self.assertNotEqual(s["token"], tokens[name])
            self.assertIn("discarded", self.snapshot(name)["error"])


class FaultThaw(SnapshotCase):
    """A parked replica that does not come back: the image tier serves the request."""
    fault = "snapshot-thaw"

    def test_thaw_failure_falls_back_to_the_image_tier(self):
        # the pool's refill (an image restore) or the fallback serves the request, whichever is
        # first; the frozen replica is given up when its restore timeout (startup_timeout) ends
        self.deploy("thaw", "startup_timeout: 2s\n")
        self.wait_parked("thaw", 1)
        self.drain("thaw")
        s = self.state("thaw")
        self.assertEqual(self.tier_of("thaw", s["replica"]), "image")
        self.assertEqual(s["counter"], 1001)
        self.flintd.wait_for(lambda: "parked-tier start of replica" in self.flintd.status("thaw")["last_error"],
                             what="the thaw failure reported")
        self.assertIn("did not become ready within 2.0 s of its thaw", self.flintd.status("thaw")["last_error"])
        self.flintd.wait_for(lambda: [r["tier"] for r in self.flintd.status("thaw")["replicas"] if r["state"] != "parked"]
                             == ["image"], what="the stuck replica removed")


class FaultRestore(SnapshotCase):
    """CRIU restore fails: cold starts serve, and after three failures the image tier is off."""
    fault = "snapshot-restore"

    def test_restore_failure_falls_back_to_cold(self):
        out = self.deploy("restore", "parked_replicas: 0\n")
        self.assertIn("image taken", out)
        token = self.state("restore")["token"]
        for i in range(4):
            self.drain("restore")
            s = self.state("restore")
            self.assertEqual(self.tier_of("restore", s["replica"]), "cold")
            self.assertNotEqual(s["token"], token)
        st = self.flintd.status("restore")
        self.assertEqual(st["snapshot"]["fallbacks"], 3)  # the fourth start went cold directly
        self.assertIn("fault injected (FLINT_FAULT=snapshot-restore)", st["last_error"] + self.flintd.read_log())
        self.assertIn("repeated restore failures", st["snapshot"]["error"])


class FaultReconnect(SnapshotCase):
    fault = "snapshot-reconnect"

    def test_reconnect_failure_falls_back_to_cold(self):
        self.deploy("reconnect", "parked_replicas: 0\n")
        self.drain("reconnect")
        s = self.state("reconnect")
        self.assertEqual(self.tier_of("reconnect", s["replica"]), "cold")
        self.assertIn("restored worker's channel failed", self.flintd.status("reconnect")["last_error"])


class FaultCanary(SnapshotCase):
    fault = "snapshot-canary"

    def test_canary_failure_falls_back_to_cold(self):
        self.deploy("canaryfault", "parked_replicas: 0\n")
        self.drain("canaryfault")
        s = self.state("canaryfault")
        self.assertEqual(self.tier_of("canaryfault", s["replica"]), "cold")
        self.assertIn("canary failed", self.flintd.status("canaryfault")["last_error"])


class FaultDump(SnapshotCase):
    fault = "snapshot-dump"

    def test_dump_failure_keeps_the_endpoint_on_the_cold_tier(self):
        out = self.deploy("dumpfault")
        self.assertIn("snapshot: none (checkpoint of endpoint `dumpfault` failed: criu dump failed: fault injected", out)
        self.assertEqual(self.state("dumpfault")["after"], 1)  # the original resumed
        self.drain("dumpfault")
        s = self.state("dumpfault")
        self.assertEqual(self.tier_of("dumpfault", s["replica"]), "cold")
        self.assertEqual(os.listdir(os.path.join(self.flintd.run, "images")), [])


class CriuMissing(SnapshotCase):
    """No CRIU: a clear message in flintd's log, `flint status` and the deploy output; the
    endpoint works cold."""
    criu = "/nonexistent/criu"

    def test_snapshots_disabled_with_a_clear_message(self):
        reason = unavailable_reason(self.flintd)
        self.assertIsNotNone(reason)
        self.assertIn("CRIU is not installed (no `/nonexistent/criu`)", reason)
        self.assertIn("scripts/build-criu", reason)
        self.assertIn("every endpoint starts cold", reason)
        out = self.deploy("nocriu")
        self.assertIn("snapshot: none (snapshotter failed to start: CRIU is not installed", out)
        st = self.flintd.status("nocriu")
        self.assertEqual(st["snapshot"]["tier"], "none")
        self.assertIn("CRIU is not installed", st["snapshot"]["error"])
        self.drain("nocriu")
        s = self.state("nocriu")
        self.assertEqual(self.tier_of("nocriu", s["replica"]), "cold")


def main():
    prog = unittest.main(verbosity=2, exit=False)
    r = prog.result
    if r.testsRun and len(r.skipped) == r.testsRun and not r.failures and not r.errors:
        sys.exit(77)  # meson: SKIP, not a silent pass
    sys.exit(0 if r.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
