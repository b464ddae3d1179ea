"""Autoscaling, the activator and failure handling through a real flintd (issue 5): scale to zero
and back, a 200-request burst at zero bounded by max_replicas, queue-full, deadline and cancel
paths over gRPC and HTTP, live `flint scale` under load, a replica SIGKILLed under load, startup
backoff, and /metrics counters checked with a real Prometheus parser. Windows are in
milliseconds to keep the suite fast."""
import json
import os
import signal
import threading
import time

import flinttest
from flinttest import FlintTestCase, metric_value, stubs

CRASHY = flinttest.build_path("tests", "functions", "crashy.so")


def live_replicas(st):
    return [r for r in st.get("replicas", []) if r["state"] in ("starting", "ready")]


def running(st):
    """Replicas with a running worker: all but parked ones (frozen, kept by the snapshot tier's
    pool). An endpoint "at zero" has none."""
    return [r for r in st.get("replicas", []) if r["state"] != "parked"]


def ready(st):
    return [r for r in st.get("replicas", []) if r["state"] == "ready"]


class LoadThreads:
    """`n` threads invoking `payload` in a loop until stop(); every outcome is recorded."""

    def __init__(self, flintd, name, payload, n, timeout=20):
        self.flintd, self.name, self.payload, self.timeout = flintd, name, payload, timeout
        self.ok = 0
        self.errors = []
        self.other = []
        self.replicas = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _run(self):
        s = stubs()
        stub = self.flintd.stub()
        while not self._stop.is_set():
            try:
                r = stub.Invoke(s.pb.InvokeRequest(endpoint=self.name, payload=self.payload.encode()),
                                timeout=self.timeout)
                with self._lock:
                    self.ok += 1
                    self.replicas.add(r.replica)
            except s.grpc.RpcError as e:
                with self._lock:
                    self.errors.append((e.code(), e.details()))
            except Exception as e:  # noqa: BLE001  (anything else is a harness-visible bug)
                with self._lock:
                    self.other.append(repr(e))

    def stop(self):
        self._stop.set()
        for t in self.threads:
            t.join(60)


class Autoscale(FlintTestCase):
    def deploy(self, name, manifest_extra):
        return self.deploy_crashy(name, manifest_extra)

    def test_scale_to_zero_after_the_window_and_back(self):
        f = self.flintd
        self.deploy("zero", "scaledown_window: 1s\n")
        first = f.invoke("zero", "hello")
        self.assertEqual(first.payload, b"hello")
        t0 = time.time()
        # still there shortly after the request: the window has not passed
        time.sleep(0.2)
        self.assertTrue(live_replicas(f.endpoint("zero")), "scaled down before the window")
        f.wait_for(lambda: not running(f.endpoint("zero")), timeout=10, what="scale to zero")
        self.assertGreaterEqual(time.time() - t0, 0.9)
        before = f.status("zero")["stats"]
        # the next request brings a replica back and is served by it
        r = f.invoke("zero", "again")
        self.assertEqual(r.payload, b"again")
        self.assertNotEqual(r.replica, first.replica)
        st = f.status("zero")
        rep = [x for x in st["replicas"] if x["id"] == r.replica]
        self.assertEqual(len(rep), 1, st)
        # the tier used is the fastest flintd says it has: cold without snapshots, else image/parked
        snap_tier = st["snapshot"]["tier"]
        allowed = {"cold"} if snap_tier == "none" else {"image", "parked"}
        self.assertIn(rep[0]["tier"], allowed, "snapshot tier %r but the replica came up %r" % (snap_tier,
                                                                                                 rep[0]["tier"]))
        tier = rep[0]["tier"]
        self.assertEqual(int(st["stats"]["starts"][tier]), int(before["starts"][tier]) + 1)
        m = f.metrics()
        self.assertEqual(metric_value(m, "flint_cold_starts", endpoint="zero", tier=tier),
                         int(st["stats"]["starts"][tier]))
        self.assertGreaterEqual(metric_value(m, "flint_cold_start_phase_seconds", "flint_cold_start_phase_seconds_count",
                                             endpoint="zero", tier=tier, phase="total"), 1)
        self.assertIn("scaled up", f.cli("status", "zero").stdout.decode())

    def test_burst_of_200_at_zero_starts_at_most_max_replicas(self):
        f = self.flintd
        s = stubs()
        self.deploy("burst", "max_replicas: 4\nscaledown_window: 200ms\n")
        f.wait_for(lambda: not running(f.endpoint("burst")), timeout=10, what="scale to zero")
        # keep what the burst starts for the rest of the test
        f.cli("scale", "burst", "scaledown_window=30s")
        before = f.status("burst")["stats"]
        stub = f.stub()
        futures = [stub.Invoke.future(s.pb.InvokeRequest(endpoint="burst", payload=b"sleep:20"), timeout=60)
                   for _ in range(200)]
        replicas = set()
        for fu in futures:
            r = fu.result()
            self.assertEqual(r.payload, b"slept 20 ms")
            replicas.add(r.replica)
        after = f.status("burst")["stats"]
        started = sum(int(after["starts"][t]) - int(before["starts"][t]) for t in after["starts"])
        self.assertLessEqual(started, 4, after)
        self.assertGreaterEqual(started, 1)
        self.assertLessEqual(len(replicas), 4)
        self.assertLessEqual(int(after["scale_ups"]) - int(before["scale_ups"]), 4)
        self.assertEqual(int(after["requests_by_code"]["OK"]) - int(before.get("requests_by_code", {}).get("OK", 0)),
                         200)
        self.assertEqual(after.get("replica_failures", 0), before.get("replica_failures", 0))

    def test_queue_full_gives_resource_exhausted_and_429(self):
        f = self.flintd
        s = stubs()
        self.deploy("qfull", "max_replicas: 1\nqueue_size: 2\nscaledown_window: 30s\n")
        f.invoke("qfull", "warm")
        stub = f.stub()
        busy = stub.Invoke.future(s.pb.InvokeRequest(endpoint="qfull", payload=b"sleep:3000"), timeout=30)
        f.wait_for(lambda: f.endpoint("qfull")["replicas"][0]["in_flight"] == 1, what="the replica is busy")
        queued = [stub.Invoke.future(s.pb.InvokeRequest(endpoint="qfull", payload=b"q%d" % i), timeout=30)
                  for i in range(2)]
        f.wait_for(lambda: f.endpoint("qfull")["queue_length"] == 2, what="two queued")
        with self.assertRaises(s.grpc.RpcError) as cm:
            f.invoke("qfull", "one too many")
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("queue_size", cm.exception.details())
        status, headers, body = f.http("POST", "/v1/endpoints/qfull:invoke", body=b"over http")
        self.assertEqual(status, 429, body)
        self.assertEqual(headers.get("retry-after"), "1")
        err = json.loads(body)["error"]
        self.assertEqual(err["code"], "RESOURCE_EXHAUSTED")
        self.assertIn("endpoint `qfull`", err["message"])
        # nothing that was admitted is lost
        self.assertEqual(busy.result().payload, b"slept 3000 ms")
        self.assertEqual(sorted(q.result().payload for q in queued), [b"q0", b"q1"])
        p = f.cli("invoke", "qfull", "--data", "fine")
        self.assertEqual(p.stdout, b"fine")

    def test_deadlines_give_deadline_exceeded_and_504(self):
        f = self.flintd
        s = stubs()
        self.deploy("slow", "max_replicas: 1\ntimeout: 400ms\nscaledown_window: 30s\n")
        f.invoke("slow", "warm")
        # the function overruns the endpoint's timeout: flintd answers, names it, replaces the worker
        with self.assertRaises(s.grpc.RpcError) as cm:
            f.invoke("slow", "sleep:3000")
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertIn("did not answer within the deadline", cm.exception.details())
        status, _h, body = f.http("POST", "/v1/endpoints/slow:invoke", body=b"sleep:3000")
        self.assertEqual(status, 504, body)
        self.assertEqual(json.loads(body)["error"]["code"], "DEADLINE_EXCEEDED")
        # a queued request whose client deadline passes leaves the queue with 504
        f.cli("scale", "slow", "timeout=10s")
        busy = f.stub().Invoke.future(s.pb.InvokeRequest(endpoint="slow", payload=b"sleep:3000"), timeout=30)
        f.wait_for(lambda: any(r["in_flight"] for r in f.endpoint("slow")["replicas"]), what="a busy replica")
        t0 = time.time()
        status, _h, body = f.http("POST", "/v1/endpoints/slow:invoke?timeout=250ms", body=b"late")
        self.assertEqual(status, 504, body)
        self.assertLess(time.time() - t0, 2.0)
        self.assertIn("no replica became available before the deadline", json.loads(body)["error"]["message"])
        with self.assertRaises(s.grpc.RpcError) as cm:
            f.invoke("slow", "late too", timeout=0.25)
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertEqual(f.endpoint("slow")["queue_length"], 0)
        self.assertEqual(busy.result().payload, b"slept 3000 ms")
        codes = f.status("slow")["stats"]["requests_by_code"]
        self.assertGreaterEqual(int(codes["DEADLINE_EXCEEDED"]), 3)

    def test_cancelled_client_leaves_the_queue(self):
        f = self.flintd
        s = stubs()
        self.deploy("cancel", "max_replicas: 1\nscaledown_window: 30s\n")
        f.invoke("cancel", "warm")
        stub = f.stub()
        busy = stub.Invoke.future(s.pb.InvokeRequest(endpoint="cancel", payload=b"sleep:2500"), timeout=30)
        f.wait_for(lambda: f.endpoint("cancel")["replicas"][0]["in_flight"] == 1, what="busy")
        waiting = stub.Invoke.future(s.pb.InvokeRequest(endpoint="cancel", payload=b"never"), timeout=30)
        f.wait_for(lambda: f.endpoint("cancel")["queue_length"] == 1, what="queued")
        waiting.cancel()
        f.wait_for(lambda: f.endpoint("cancel")["queue_length"] == 0, timeout=5, what="the queue to empty")
        self.assertEqual(busy.result().payload, b"slept 2500 ms")
        st = f.status("cancel")
        self.assertEqual(int(st["stats"]["requests_by_code"]["CANCELLED"]), 1)
        # the cancelled request never reached the function
        self.assertEqual(st["replicas"][0]["requests"], 2)

    def test_live_scale_changes_behaviour_without_dropping_requests(self):
        f = self.flintd
        self.deploy("live", "max_replicas: 1\nscaledown_window: 500ms\n")
        f.invoke("live", "warm")
        load = LoadThreads(f, "live", "sleep:30", 6)
        try:
            time.sleep(0.5)
            self.assertEqual(len(ready(f.endpoint("live"))), 1)
            f.cli("scale", "live", "max_replicas=3")
            f.wait_for(lambda: len([r for r in f.endpoint("live")["replicas"] if r["state"] == "ready"]) == 3,
                       timeout=10, what="three ready replicas")
            time.sleep(0.5)
            f.cli("scale", "live", "max_replicas=1")
            f.wait_for(lambda: len(ready(f.endpoint("live"))) == 1, timeout=10, what="back to one")
            time.sleep(0.5)
        finally:
            load.stop()
        self.assertEqual(load.errors, [])
        self.assertEqual(load.other, [])
        self.assertGreater(load.ok, 30)
        self.assertGreaterEqual(len(load.replicas), 3)
        st = f.status("live")
        self.assertEqual(st["scale"]["max_replicas"], 1)
        self.assertGreaterEqual(int(st["stats"]["scale_downs"]), 2)
        self.assertEqual(st["stats"].get("replica_failures", 0), 0)

    def test_replica_sigkilled_under_load(self):
        f = self.flintd
        self.deploy("victim", "max_replicas: 2\nmin_replicas: 2\nretries: 2\nscaledown_window: 30s\n")
        f.wait_for(lambda: len([r for r in f.endpoint("victim")["replicas"] if r["state"] == "ready"]) == 2,
                   what="two ready replicas")
        load = LoadThreads(f, "victim", "sleep:40", 6)
        try:
            time.sleep(0.6)
            victim = f.endpoint("victim")["replicas"][0]
            os.kill(victim["pid"], signal.SIGKILL)
            f.wait_for(lambda: victim["id"] not in [r["id"] for r in f.endpoint("victim")["replicas"]],
                       what="the dead replica to go")
            f.wait_for(lambda: len([r for r in f.endpoint("victim")["replicas"] if r["state"] == "ready"]) == 2,
                       what="a replacement")
            time.sleep(0.4)
        finally:
            load.stop()
        self.assertEqual(load.other, [])
        # every request ended in success or in an explicit error that names the endpoint; with
        # retries: 2 and one kill, the request it hit was retried elsewhere: no error at all
        for code, details in load.errors:
            self.assertIn("endpoint `victim`", details, (code, details))
        self.assertEqual(load.errors, [])
        self.assertGreater(load.ok, 20)
        stats = f.status("victim")["stats"]
        self.assertGreaterEqual(int(stats["replica_failures"]), 1)
        # the kill hit a request in flight (both replicas are always busy): it was retried
        self.assertGreaterEqual(int(stats["retries"]), 1)
        m = f.metrics()
        self.assertEqual(metric_value(m, "flint_replica_failures", endpoint="victim"), int(stats["replica_failures"]))
        self.assertEqual(metric_value(m, "flint_request_retries", endpoint="victim"), int(stats.get("retries", 0)))
        self.assertEqual(metric_value(m, "flint_requests", endpoint="victim", code="OK"), load.ok + 0)

    def test_metrics_parse_and_count_the_requests_sent(self):
        f = self.flintd
        s = stubs()
        self.deploy("counted", "scaledown_window: 30s\n")
        for i in range(7):
            f.invoke("counted", "g%d" % i)
        for i in range(3):
            status, _h, body = f.http("POST", "/v1/endpoints/counted:invoke", body=b"h%d" % i)
            self.assertEqual((status, body), (200, b"h%d" % i))
        for _ in range(2):
            with self.assertRaises(s.grpc.RpcError):
                f.invoke("counted", "fail")
        status, _h, _b = f.http("POST", "/v1/endpoints/counted:invoke", body=b"fail")
        self.assertEqual(status, 400)
        m = f.metrics()
        self.assertEqual(metric_value(m, "flint_requests", endpoint="counted", code="OK"), 10)
        self.assertEqual(metric_value(m, "flint_requests", endpoint="counted", code="INVALID_ARGUMENT"), 3)
        self.assertEqual(metric_value(m, "flint_request_duration_seconds", "flint_request_duration_seconds_count",
                                      endpoint="counted"), 13)
        self.assertEqual(metric_value(m, "flint_request_duration_seconds", "flint_request_duration_seconds_bucket",
                                      endpoint="counted", le="+Inf"), 13)
        self.assertEqual(metric_value(m, "flint_replicas", endpoint="counted", state="ready"), 1)
        self.assertEqual(metric_value(m, "flint_queue_length", endpoint="counted"), 0)
        self.assertEqual(m["flint_queue_wait_seconds"].type, "histogram")
        rep = f.status("counted")["replicas"][0]
        self.assertEqual(metric_value(m, "flint_replica_latency_seconds", "flint_replica_latency_seconds_count",
                                      endpoint="counted", replica=rep["id"]), 13)
        self.assertEqual(metric_value(m, "flint_replica_in_flight", endpoint="counted", replica=rep["id"]), 0)
        for fam in ("flint_scale_events", "flint_request_retries", "flint_replica_failures", "flint_tier_fallbacks",
                    "flint_cold_starts", "flint_desired_replicas", "flint_autoscaler_panic"):
            self.assertIn(fam, m)
        # the same numbers at a glance
        text = f.cli("status", "counted").stdout.decode()
        self.assertIn("by code    OK 10, INVALID_ARGUMENT 3", text)

    def test_knobs_persist_across_a_restart(self):
        f = self.flintd
        self.deploy("kept", "scaledown_window: 30s\n")
        p = f.cli("scale", "kept", "retries=2", "queue_size=7", "scaledown_window=1500ms", "target_concurrency=1")
        self.assertIn(b"queue 7", p.stdout)
        bad = f.cli("scale", "kept", "min_replicas=9", check=False)
        self.assertEqual(bad.returncode, 4, bad.stderr)
        self.assertIn(b"larger than `max_replicas`", bad.stderr)
        f.restart()
        sc = f.status("kept")["scale"]
        self.assertEqual((sc["retries"], sc["queue_size"], sc["scaledown_window_ms"]), (2, 7, 1500))
        self.assertEqual(f.invoke("kept", "after restart").payload, b"after restart")


class StartupBackoff(FlintTestCase):
    """Startup failures come from cold starts (a snapshot restore that fails falls back to one, and
    a restored worker does not run its init again): this class runs without snapshots."""
    snapshots = False

    def deploy(self, name, manifest_extra):
        return self.deploy_crashy(name, manifest_extra)

    def test_startup_failures_back_off_and_are_visible(self):
        f = self.flintd
        s = stubs()
        f.cli("secret", "set", "initflag", "FLINT_TEST_FAIL_INIT=")
        self.deploy("flaky", "secrets: [initflag]\nscaledown_window: 200ms\n")
        f.wait_for(lambda: not running(f.endpoint("flaky")), timeout=10, what="scale to zero")
        f.cli("secret", "set", "initflag", "FLINT_TEST_FAIL_INIT=broken on purpose")
        # a replica that cannot start fails the waiting request with the reason at once
        with self.assertRaises(s.grpc.RpcError) as cm:
            f.invoke("flaky", "x", timeout=10)
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.UNAVAILABLE)
        self.assertIn("broken on purpose", cm.exception.details())
        # keeping one replica now retries with backoff, not in a tight loop
        f.cli("scale", "flaky", "min_replicas=1")
        time.sleep(3.2)
        st = f.status("flaky")["stats"]
        # attempts at about 0 (the request), 1 s, 3 s; a tight loop would have made dozens
        self.assertGreaterEqual(st["start_failures"], 2, st)
        self.assertLessEqual(st["start_failures"], 4, st)
        self.assertIn("broken on purpose", st["start_error"])
        self.assertGreater(int(st["next_start_ms"]), int(time.time() * 1000))
        text = f.cli("status", "flaky").stdout.decode()
        self.assertIn("backoff", text)
        self.assertIn("next attempt at", text)
        # during the backoff (no attempt under way) a request that cannot wait for the next attempt
        # fails at once, saying why
        f.wait_for(lambda: not running(f.endpoint("flaky")), timeout=10, what="the failed attempt to go")
        t0 = time.time()
        status, headers, body = f.http("POST", "/v1/endpoints/flaky:invoke?timeout=300ms", body=b"x")
        self.assertEqual(status, 503, body)
        self.assertLess(time.time() - t0, 0.3)
        self.assertIn("broken on purpose", json.loads(body)["error"]["message"])
        self.assertIn("retry-after", headers)
        # fixed: the next attempt succeeds and the backoff resets
        f.cli("secret", "set", "initflag", "FLINT_TEST_FAIL_INIT=")
        f.wait_for(lambda: any(r["state"] == "ready" for r in f.endpoint("flaky")["replicas"]), timeout=20,
                   what="a replica after the backoff")
        self.assertEqual(f.invoke("flaky", "fine").payload, b"fine")
        self.assertEqual(f.status("flaky")["stats"].get("start_failures", 0), 0)


class Logs(FlintTestCase):
    def test_logs_since_time_and_tail(self):
        f = self.flintd
        self.deploy_crashy("talker", "scaledown_window: 30s\n")
        start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
        for word in ("one", "two", "three"):
            self.assertTrue(f.invoke("talker", "log:" + word).payload.startswith(b"logged "))

        def out(*args):
            return f.cli("logs", "talker", *args).stdout.decode()

        f.wait_for(lambda: "log line says three" in out(), what="the last line in the log")
        text = out("--since", start)
        for word in ("one", "two", "three"):
            self.assertIn("stdout says " + word, text)
        self.assertRegex(text, r"v1 talker-1-r\d+-[0-9a-f]{4} stdout: stdout says one")
        self.assertEqual(out("--since", "2999-01-01T00:00:00Z"), "")
        # per invoke: a stdout line, a stderr line and a flint_log_line line
        self.assertEqual(out("--since", "10m").count("says"), 9)
        tail = out("--tail", "1").splitlines()
        self.assertEqual(len(tail), 1)
        self.assertIn("log line says three", tail[0])
        self.assertEqual(f.cli("logs", "talker", "--since", "yesterday-ish", check=False).returncode, 2)
        self.assertEqual(f.cli("logs", "talker", "--tail", "-3", check=False).returncode, 2)
        # the rotated files keep the same lines
        with open(os.path.join(f.state, "logs", "talker", "current.log")) as fh:
            self.assertIn("stdout says two", fh.read())

    def test_follow_streams_new_lines(self):
        f = self.flintd
        self.deploy_crashy("follower", "scaledown_window: 30s\n")
        import subprocess
        env = dict(os.environ, FLINT_ADDR="unix:" + f.sock)
        proc = subprocess.Popen([flinttest.FLINT, "logs", "follower", "-f"], stdout=subprocess.PIPE, env=env)
        try:
            time.sleep(0.3)
            f.invoke("follower", "log:live")
            seen = []
            while not any("says live" in x for x in seen) and len(seen) < 20:
                seen.append(proc.stdout.readline().decode())
            self.assertTrue(any("stdout says live" in x for x in seen), seen)
        finally:
            proc.terminate()
            proc.wait(10)
            proc.stdout.close()


if __name__ == "__main__":
    flinttest.main()
