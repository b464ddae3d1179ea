"""Bad input gets a clear error and loses nothing; a crashing or hanging function never takes
flintd down, fails only its own requests, and the next request gets a new worker."""
import hashlib
import os
import threading
import time

import flinttest
from flinttest import FlintTestCase, build_path, make_bundle, stubs


class BadInput(FlintTestCase):
    def test_malformed_manifest_names_file_line_column_field(self):
        d = make_bundle(self.tmp, "badyaml", "name: {name}\nfunction: x.so\nresources:\n  memory: plenty\n", {"x.so": "x"})
        p = self.flintd.cli("deploy", d, check=False)
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertIn(b"flint.yaml:4:11: field `memory`", p.stderr)
        d = make_bundle(self.tmp, "typo", "name: {name}\nfunction: x.so\nmax_replica: 3\n", {"x.so": "x"})
        p = self.flintd.cli("deploy", d, check=False)
        self.assertEqual(p.returncode, 4)
        self.assertIn(b"did you mean `max_replicas`", p.stderr)

    def test_malformed_manifest_rejected_by_the_server_too(self):
        # a client that skips local validation still gets INVALID_ARGUMENT with the position
        s = stubs()
        hdr = s.pb.DeployHeader(manifest="name: x\nfunction: f.so\ntimeout: soon\n", manifest_path="mine.yaml",
                                bundle_size=0, bundle_sha256=hashlib.sha256(b"").hexdigest())
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.stub().Deploy(iter([s.pb.DeployRequest(header=hdr)]), timeout=30)
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("mine.yaml:3:10: field `timeout`", cm.exception.details())

    def test_missing_manifest(self):
        d = os.path.join(self.tmp, "empty-dir")
        os.makedirs(d, exist_ok=True)
        p = self.flintd.cli("deploy", d, check=False)
        self.assertEqual(p.returncode, 4)
        self.assertIn(b"flint.yaml: no such file", p.stderr)

    def test_bundle_digest_mismatch(self):
        s = stubs()
        bundle = b"not really a tar, but it does not matter: the digest is checked first"
        hdr = s.pb.DeployHeader(manifest="name: digest\nfunction: f.so\n", bundle_size=len(bundle),
                                bundle_sha256=hashlib.sha256(b"something else").hexdigest())
        reqs = [s.pb.DeployRequest(header=hdr), s.pb.DeployRequest(chunk=bundle)]
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.stub().Deploy(iter(reqs), timeout=30)
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.DATA_LOSS)
        self.assertIn("digest mismatch", cm.exception.details())
        # nothing was deployed
        p = self.flintd.cli("invoke", "digest", "--data", "x", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(os.listdir(os.path.join(self.flintd.state, "tmp")), [])

    def test_truncated_upload(self):
        s = stubs()
        hdr = s.pb.DeployHeader(manifest="name: short\nfunction: f.so\n", bundle_size=1000,
                                bundle_sha256=hashlib.sha256(b"x" * 1000).hexdigest())
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.stub().Deploy(iter([s.pb.DeployRequest(header=hdr), s.pb.DeployRequest(chunk=b"x" * 10)]),
                                      timeout=30)
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.DATA_LOSS)
        self.assertIn("received 10 bytes", cm.exception.details())

    def test_shared_object_without_entry_points(self):
        d = make_bundle(self.tmp, "noentry", "name: {name}\nfunction: noentry.so\n",
                        {"noentry.so": build_path("tests", "functions", "noentry.so")})
        p = self.flintd.cli("deploy", d, check=False)
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertIn(b"flint_invoke", p.stderr)
        st = self.flintd.status("noentry")
        self.assertEqual(st["state"], "failed")
        self.assertEqual(st["versions"][0]["state"], "failed")
        self.assertIn("flint_invoke", st["versions"][0]["error"])

    def test_missing_function_file(self):
        d = make_bundle(self.tmp, "nofile", "name: {name}\nfunction: missing.so\n", {"other": "x"})
        p = self.flintd.cli("deploy", d, check=False)
        self.assertEqual(p.returncode, 4)
        self.assertIn(b"the bundle has no file `missing.so`", p.stderr)

    def test_failed_redeploy_keeps_the_old_version_serving(self):
        d = self.deploy_crashy("keeper")
        self.assertEqual(self.flintd.invoke("keeper", "a").payload, b"a")
        d2 = make_bundle(self.tmp, "keeper2", "name: keeper\nfunction: crashy.so\nconfig:\n  fail_init: nope\n",
                         {"crashy.so": build_path("tests", "functions", "crashy.so")})
        p = self.flintd.cli("deploy", d2, check=False)
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertIn(b"init refused: nope", p.stderr)
        r = self.flintd.invoke("keeper", "still here")
        self.assertEqual(r.payload, b"still here")
        self.assertEqual(r.version, 1)

    def test_payload_over_the_limit(self):
        s = stubs()
        self.deploy_crashy("small", "max_payload: 1Ki\n")
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.invoke("small", b"x" * 2048)
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("exceeds max_payload", cm.exception.details())
        p = self.flintd.cli("invoke", "small", "--data", "y" * 2048, check=False)
        self.assertEqual(p.returncode, 7)
        # an answer over the limit fails too, with the reason
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.invoke("small", b"big:4096")
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertEqual(self.flintd.invoke("small", b"ok").payload, b"ok")

    def test_unknown_endpoint(self):
        s = stubs()
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.invoke("does-not-exist", b"x")
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.NOT_FOUND)
        self.assertIn("endpoint `does-not-exist` not found", cm.exception.details())
        self.assertEqual(self.flintd.cli("invoke", "does-not-exist", check=False).returncode, 3)
        self.assertEqual(self.flintd.cli("rm", "does-not-exist", check=False).returncode, 3)

    def test_delete_with_requests_in_flight(self):
        self.deploy_crashy("busy")
        result = {}

        def call():
            try:
                result["payload"] = self.flintd.invoke("busy", "sleep:1500").payload
            except Exception as e:  # noqa: BLE001
                result["error"] = e

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.4)
        self.flintd.cli("rm", "busy")
        t.join(10)
        self.assertEqual(result.get("payload"), b"slept 1500 ms", result)
        s = stubs()
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.invoke("busy", "x")
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.NOT_FOUND)

    def test_usage_errors(self):
        self.assertEqual(self.flintd.cli("frobnicate", check=False).returncode, 2)
        self.assertEqual(self.flintd.cli("invoke", check=False).returncode, 2)
        self.assertEqual(self.flintd.cli("scale", "x", "nonsense", check=False).returncode, 2)


class Crashes(FlintTestCase):
    def test_crash_fails_only_its_request_and_the_next_gets_a_new_worker(self):
        s = stubs()
        self.deploy_crashy("crashy")
        self.flintd.cli("deploy", build_path("examples", "echo"))
        pid1 = self.flintd.invoke("crashy", "pid").payload
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.invoke("crashy", "crash")
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.UNAVAILABLE)
        self.assertIn("endpoint `crashy`", cm.exception.details())
        self.assertIn("SIGSEGV", cm.exception.details())
        # flintd keeps serving, the endpoint comes back with a new worker
        self.assertEqual(self.flintd.invoke("echo", "alive").payload, b"alive")
        self.assertEqual(self.flintd.invoke("crashy", "again").payload, b"again")
        pid2 = self.flintd.invoke("crashy", "pid").payload
        st = self.flintd.status("crashy")
        self.assertEqual(len([r for r in st["replicas"] if r["state"] == "ready"]), 1)
        # the crash is visible in the endpoint's log with its cause
        logs = self.flintd.cli("logs", "crashy").stdout
        self.assertIn(b"SIGSEGV", logs)
        del pid1, pid2

    def test_exit_and_abort(self):
        s = stubs()
        self.deploy_crashy("quitter")
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.invoke("quitter", "exit:3")
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.UNAVAILABLE)
        self.assertIn("exited with status 3", cm.exception.details())
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.invoke("quitter", "abort")
        self.assertIn("SIGABRT", cm.exception.details())
        self.assertEqual(self.flintd.invoke("quitter", "ok").payload, b"ok")

    def test_hang_hits_the_deadline_and_the_worker_is_replaced(self):
        s = stubs()
        self.deploy_crashy("hanger", "timeout: 1s\n")
        t0 = time.time()
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.invoke("hanger", "hang")
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertIn("endpoint `hanger`", cm.exception.details())
        self.assertLess(time.time() - t0, 5)
        self.assertEqual(self.flintd.invoke("hanger", "fine").payload, b"fine")
        # the client's own deadline is honoured too
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.stub().Invoke(s.pb.InvokeRequest(endpoint="hanger", payload=b"sleep:3000"), timeout=0.5)
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.DEADLINE_EXCEEDED)

    def test_a_function_ignoring_its_cancel_loses_its_replica(self):
        # max_concurrency raised live on a replica loaded with one: the expired request keeps
        # its slot while the worker is told to stop; a function that ignores it (hang) for the
        # grace period gets its replica replaced instead of holding the slot forever
        s = stubs()
        self.deploy_crashy("deaf", "timeout: 700ms\nmax_replicas: 1\n")
        first = self.flintd.invoke("deaf", "replica").payload
        self.flintd.cli("scale", "deaf", "max_concurrency=4")
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.invoke("deaf", "hang")
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.DEADLINE_EXCEEDED)
        # its worker runs invokes inline (loaded with one), so it serves nobody: after the grace
        # it is replaced and the endpoint serves again
        self.flintd.wait_for(lambda: "a request ran on" in self.flintd.cli("logs", "deaf").stdout.decode(),
                             timeout=15, what="the deaf replica replaced")
        self.assertEqual(self.flintd.invoke("deaf", "again").payload, b"again")
        self.assertNotEqual(self.flintd.invoke("deaf", "replica").payload, first)

    def test_one_invoke_thread_pipelines_and_a_hang_replaces_the_worker(self):
        # `threads: 1` with max_concurrency 4: flintd sends up to 4 requests to the one replica
        # and its main thread runs them one after another (executors would answer from other
        # threads, in parallel)
        s = stubs()
        self.deploy_crashy("piped", "max_concurrency: 4\nthreads: 1\nmax_replicas: 1\ntimeout: 1500ms\n")
        answers, errors = [], []

        def call():
            try:
                answers.append(self.flintd.invoke("piped", "tid:150").payload.decode())
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        calls = [threading.Thread(target=call) for _ in range(4)]
        for t in calls:
            t.start()
        for t in calls:
            t.join(10)
        self.assertEqual(errors, [])
        self.assertEqual(len(answers), 4)
        for a in answers:
            tid, pid = a.split()
            self.assertEqual(tid, pid, "an invoke ran off the worker's main thread")
        self.assertEqual([r["state"] for r in self.flintd.status("piped")["replicas"]].count("ready"), 1)
        # a hung invoke holds up everything queued behind it in that worker: the worker is
        # replaced at the deadline (as with max_concurrency 1), not kept with a stuck slot
        rep1 = self.flintd.invoke("piped", "replica").payload
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.invoke("piped", "hang")
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertEqual(self.flintd.invoke("piped", "fine").payload, b"fine")
        self.assertNotEqual(self.flintd.invoke("piped", "replica").payload, rep1)

    def test_client_cancel_reaches_a_running_unary_invoke(self):
        # flintd watches a unary call for the client's cancel only once it has run for about a
        # millisecond; a cancel after that must still reach the function (executor threads)
        self.deploy_crashy("cancelme", "max_concurrency: 2\nmax_replicas: 1\n")
        self.assertEqual(self.flintd.invoke("cancelme", "cancels").payload, b"0")
        call = self.flintd.stub().Invoke.future(stubs().pb.InvokeRequest(endpoint="cancelme", payload=b"waitcancel"),
                                                timeout=30)
        time.sleep(0.5)  # the replica is warm: the invoke is running in the worker by now
        call.cancel()
        self.flintd.wait_for(lambda: self.flintd.invoke("cancelme", "cancels").payload == b"1", timeout=8,
                             what="the function to see the cancel")

    def test_executor_threads_run_invokes_concurrently(self):
        # the default (threads = max_concurrency): invokes run on the executor pool, in parallel
        self.deploy_crashy("pooled", "max_concurrency: 4\nmax_replicas: 1\n")
        answers = []
        calls = [threading.Thread(target=lambda: answers.append(self.flintd.invoke("pooled", "tid:300").payload.decode()))
                 for _ in range(4)]
        for t in calls:
            t.start()
        for t in calls:
            t.join(10)
        self.assertEqual(len(answers), 4)
        tids = {a.split()[0] for a in answers}
        self.assertTrue(all(a.split()[0] != a.split()[1] for a in answers), answers)
        self.assertGreater(len(tids), 1, answers)

    def test_client_leaving_a_stream_midway(self):
        # the function keeps streaming after the client cancelled: its chunks have nowhere to
        # go, and flintd must simply drop them
        s = stubs()
        self.deploy_crashy("chatty")
        call = self.flintd.stub().InvokeStream(s.pb.InvokeRequest(endpoint="chatty", payload=b"slowstream:25"),
                                               timeout=30)
        self.assertEqual(next(call).data, b"chunk 0\n")
        call.cancel()
        time.sleep(0.8)
        self.assertIsNone(self.flintd.proc.poll(), "flintd died")
        self.assertEqual(self.flintd.invoke("chatty", "after").payload, b"after")
        chunks = list(self.flintd.stub().InvokeStream(s.pb.InvokeRequest(endpoint="chatty", payload=b"slowstream:3"),
                                                      timeout=30))
        self.assertEqual(len(chunks), 3)

    def test_function_error_is_reported(self):
        s = stubs()
        self.deploy_crashy("failer")
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.invoke("failer", "fail")
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(cm.exception.details(), "endpoint `failer`: you asked me to fail")


class Restart(FlintTestCase):
    def test_kill_9_and_restart(self):
        self.flintd.cli("deploy", build_path("examples", "echo"))
        self.deploy_crashy("survivor")
        self.assertEqual(self.flintd.invoke("survivor", "before").payload, b"before")
        self.flintd.kill9()
        self.flintd.start()
        ls = self.flintd.cli("ls").stdout.decode()
        self.assertIn("echo", ls)
        self.assertIn("survivor", ls)
        self.assertEqual(self.flintd.invoke("survivor", "after").payload, b"after")
        self.assertEqual(self.flintd.invoke("echo", "after").payload, b"after")
        # a redeploy after the restart continues the version numbers
        self.flintd.cli("deploy", build_path("examples", "echo"))
        self.assertEqual(self.flintd.invoke("echo", "v").version, 2)

    def test_second_flintd_on_the_same_state_refuses_to_start(self):
        import subprocess
        p = subprocess.run([flinttest.FLINTD, "--state-dir", self.flintd.state, "--run-dir", self.flintd.run + "-2",
                            "--listen", "none", "--http", "none", "--socket", self.flintd.sock + "-2"],
                           capture_output=True, timeout=20)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"another flintd is using the state directory", p.stderr)


if __name__ == "__main__":
    flinttest.main()
