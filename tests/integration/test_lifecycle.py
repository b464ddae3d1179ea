"""Lifecycle edges of requests, replicas, endpoints and flintd itself, each one a defect found in
review and fixed: deleting an endpoint whose queue holds the last reference to it, a queued
request handed to a replica about to be replaced, a client deadline too large to add to the
clock, retries during shutdown, and a deploy still in flight when flintd stops."""
import glob
import os
import signal
import subprocess
import threading
import time

import flinttest
from flinttest import FLINT, FlintTestCase, Flintd, build_path, make_bundle, stubs


def running(st):
    return [r for r in st.get("replicas", []) if r["state"] != "parked"]


class Requests(FlintTestCase):
    snapshots = False

    def test_delete_with_a_request_queued_and_no_replica(self):
        # a startup backoff leaves a request queued with no replica at all: deleting the
        # endpoint fails that request, which used to reap (free) the endpoint inside the delete
        f = self.flintd
        s = stubs()
        f.cli("secret", "set", "initflag", "FLINT_TEST_FAIL_INIT=")
        self.deploy_crashy("flaky", "secrets: [initflag]\nscaledown_window: 200ms\n")
        f.wait_for(lambda: not running(f.endpoint("flaky")), timeout=10, what="scale to zero")
        f.cli("secret", "set", "initflag", "FLINT_TEST_FAIL_INIT=broken on purpose")
        f.cli("scale", "flaky", "min_replicas=1")
        # failures at about 0, 1 and 3 s: the next attempt is 4 s away
        f.wait_for(lambda: f.endpoint("flaky").get("stats", {}).get("start_failures", 0) >= 3, timeout=15,
                   what="three start failures in a row")
        f.wait_for(lambda: not running(f.endpoint("flaky")), timeout=10, what="the failed attempt gone")
        result = {}

        def waiter():
            result["r"] = f.http("POST", "/v1/endpoints/flaky:invoke?timeout=20s", body=b"x", timeout=30)

        t = threading.Thread(target=waiter)
        t.start()
        f.wait_for(lambda: f.endpoint("flaky").get("queue_length", 0) == 1, what="the request queued")
        f.stub().DeleteEndpoint(s.pb.DeleteEndpointRequest(name="flaky"), timeout=10)
        t.join(30)
        self.assertEqual(result["r"][0], 404, result)
        self.assertIn(b"was deleted", result["r"][2])
        self.assertIsNone(f.proc.poll(), "flintd died:\n" + f.read_log()[-6000:])
        f.health()
        f.cli("secret", "rm", "initflag")

    def test_a_queued_request_waits_for_the_replacement_not_the_stuck_replica(self):
        f = self.flintd
        s = stubs()
        self.deploy_crashy("stuck", "timeout: 2s\nmax_replicas: 1\n")
        res = {}

        def hang():
            try:
                f.invoke("stuck", "hang", timeout=10)
            except s.grpc.RpcError as e:
                res["a"] = e.code()

        ta = threading.Thread(target=hang)
        ta.start()
        f.wait_for(lambda: any(r["in_flight"] for r in f.endpoint("stuck")["replicas"]), what="the hang running")
        # B waits behind A; A's deadline replaces the replica, and B is served by the new one
        self.assertEqual(f.invoke("stuck", "fine", timeout=10).payload, b"fine")
        ta.join()
        self.assertEqual(res["a"], s.grpc.StatusCode.DEADLINE_EXCEEDED)

    def test_a_client_deadline_beyond_the_clock_is_no_deadline(self):
        # `timeout=18446744073708ms` used to wrap the deadline into the past and disable the
        # endpoint's own timeout: the hang then held its replica forever
        f = self.flintd
        self.deploy_crashy("hangs", "timeout: 1s\n")
        t0 = time.time()
        st, _h, body = f.http("POST", "/v1/endpoints/hangs:invoke?timeout=18446744073708ms", body=b"hang", timeout=20)
        self.assertEqual(st, 504, body)
        self.assertLess(time.time() - t0, 5)
        f.wait_for(lambda: not [r for r in f.endpoint("hangs")["replicas"] if r["in_flight"]], timeout=10,
                   what="the hung request gone")


class Shutdown(FlintTestCase):
    """Each test stops its own flintd."""
    snapshots = False

    @classmethod
    def setUpClass(cls):
        cls.tmp = __import__("tempfile").mkdtemp(prefix="flint-bundles-")

    @classmethod
    def tearDownClass(cls):
        __import__("shutil").rmtree(cls.tmp, ignore_errors=True)

    def test_sigterm_with_retries_answers_at_once(self):
        f = Flintd(snapshots=False)
        try:
            d = make_bundle(self.tmp, "retry", "name: {name}\nfunction: crashy.so\nretries: 2\ntimeout: 60s\n",
                            {"crashy.so": build_path("tests", "functions", "crashy.so")})
            f.cli("deploy", d)
            result = {}

            def waiter():
                try:
                    result["r"] = f.http("POST", "/v1/endpoints/retry:invoke", body=b"sleep:3000", timeout=60)
                except Exception as e:  # noqa: BLE001
                    result["r"] = repr(e)

            t = threading.Thread(target=waiter)
            t.start()
            f.wait_for(lambda: any(r["in_flight"] for r in f.endpoint("retry")["replicas"]), what="request running")
            t0 = time.time()
            f.stop()  # asserts exit status 0
            t.join(30)
            # the request is not put back in a queue nobody serves: the client hears at once
            self.assertLess(time.time() - t0, 4)
            self.assertEqual(result["r"][0], 503, result)
        finally:
            f.cleanup()

    def test_sigterm_during_a_deploy(self):
        f = Flintd(snapshots=False)
        try:
            d = make_bundle(self.tmp, "big", "name: {name}\nfunction: crashy.so\n",
                            {"crashy.so": build_path("tests", "functions", "crashy.so")})
            for i in range(3000):  # many files: the extraction takes a while
                with open(os.path.join(d, "f%05d.bin" % i), "wb") as fh:
                    fh.write(os.urandom(16 << 10))
            env = dict(os.environ, FLINT_ADDR="unix:" + f.sock)
            p = subprocess.Popen([FLINT, "deploy", d], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            deadline = time.time() + 120
            while time.time() < deadline and not glob.glob(os.path.join(f.state, "tmp", "extract-*")):
                time.sleep(0.005)
            self.assertTrue(glob.glob(os.path.join(f.state, "tmp", "extract-*")), "no extraction seen")
            f.stop()  # asserts exit status 0; cleanup() checks for sanitizer reports
            _out, err = p.communicate(timeout=30)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn(b"shutting down", err)
        finally:
            f.cleanup()


if __name__ == "__main__":
    flinttest.main()
