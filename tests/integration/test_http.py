"""The HTTP/JSON front door (docs/HTTP.md) with real HTTP clients: Python's http.client
(HTTP/1.1) and curl (HTTP/1.1 and HTTP/2 with prior knowledge) when installed."""
import http.client
import json
import shutil
import socket
import subprocess
import threading
import time

import flinttest
from flinttest import FlintTestCase, stubs


class FrontDoor(FlintTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.flintd.cli("deploy", flinttest.build_path("examples", "echo"))
        d = flinttest.make_bundle(cls.tmp, "web", "name: {name}\nfunction: crashy.so\nmax_payload: 1Ki\n"
                                  "scaledown_window: 30s\n",
                                  {"crashy.so": flinttest.build_path("tests", "functions", "crashy.so")})
        cls.flintd.cli("deploy", d)

    def post(self, path, body, headers=None):
        return self.flintd.http("POST", path, body=body, headers=headers)

    def assertJsonError(self, resp, status, code, fragment=""):
        st, headers, body = resp
        self.assertEqual(st, status, body)
        self.assertTrue(headers["content-type"].startswith("application/json"), headers)
        err = json.loads(body)["error"]
        self.assertEqual(err["code"], code)
        self.assertIn(fragment, err["message"])
        return headers

    def test_invoke_body_in_body_out(self):
        payload = bytes(range(256)) * 3
        st, headers, body = self.post("/v1/endpoints/echo:invoke", payload)
        self.assertEqual(st, 200)
        self.assertEqual(body, payload)
        self.assertEqual(headers["content-type"], "application/octet-stream")
        self.assertEqual(headers["x-flint-version"], "1")
        self.assertTrue(headers["x-flint-replica"].startswith("echo-1-"))
        self.assertEqual(int(headers["content-length"]), len(payload))
        # an empty body is a valid payload
        st, _h, body = self.post("/v1/endpoints/echo:invoke", b"")
        self.assertEqual((st, body), (200, b""))

    def test_keep_alive_connection_serves_many(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.flintd.http_port, timeout=10)
        try:
            for i in range(20):
                conn.request("POST", "/v1/endpoints/echo:invoke", body=b"n%d" % i)
                r = conn.getresponse()
                self.assertEqual((r.status, r.read()), (200, b"n%d" % i))
        finally:
            conn.close()

    def test_streaming_is_chunked(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.flintd.http_port, timeout=10)
        try:
            conn.request("POST", "/v1/endpoints/web:invoke?stream=1", body=b"stream:5")
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.getheader("transfer-encoding"), "chunked")
            self.assertIsNone(r.getheader("content-length"))
            body = r.read()
        finally:
            conn.close()
        self.assertEqual(body, b"".join(b"chunk %d\n" % i for i in range(5)))
        # a function that answers a streaming call with one result: one body
        st, _h, body = self.post("/v1/endpoints/web:invoke?stream=true", b"plain")
        self.assertEqual((st, body), (200, b"plain"))

    def test_get_endpoint_matches_grpc(self):
        s = stubs()
        st, headers, body = self.flintd.http("GET", "/v1/endpoints/web")
        self.assertEqual(st, 200)
        self.assertEqual(headers["content-type"], "application/json")
        j = json.loads(body)
        g = self.flintd.stub().GetEndpoint(s.pb.GetEndpointRequest(name="web"), timeout=10)
        self.assertEqual(j["name"], g.name)
        self.assertEqual(j["version"], g.version)
        self.assertEqual(j["kind"], g.kind)
        self.assertEqual(j["state"], g.state)
        self.assertEqual(j["scale"]["scaledown_window_ms"], g.scale.scaledown_window_ms)
        self.assertEqual(j["scale"]["max_replicas"], g.scale.max_replicas)
        self.assertEqual([r["id"] for r in j["replicas"]], [r.id for r in g.replicas])
        self.assertEqual(len(j["versions"]), len(g.versions))
        self.assertIn("stats", j)
        st, _h, body = self.flintd.http("GET", "/v1/endpoints")
        self.assertEqual(st, 200)
        names = sorted(e["name"] for e in json.loads(body)["endpoints"])
        self.assertEqual(names, sorted(e.name for e in self.flintd.stub().ListEndpoints(
            s.pb.ListEndpointsRequest(), timeout=10).endpoints))
        self.assertIn("web", names)

    def test_drain_stops_replicas_and_the_next_invoke_scales_back(self):
        self.assertEqual(self.post("/v1/endpoints/echo:invoke", b"warm")[0], 200)
        st, _h, body = self.post("/v1/endpoints/echo:drain", b"")
        self.assertEqual(st, 200, body)
        self.assertGreaterEqual(json.loads(body).get("stopped", 0), 1)
        self.flintd.wait_for(lambda: not [r for r in self.flintd.status("echo")["replicas"]
                                          if r["state"] in ("ready", "draining", "stopping")],
                             what="echo's serving replicas gone")
        st, _h, body = self.post("/v1/endpoints/echo:invoke", b"back")
        self.assertEqual((st, body), (200, b"back"))
        self.assertJsonError(self.post("/v1/endpoints/nope:drain", b""), 404, "NOT_FOUND", "`nope`")

    def test_healthz_and_metrics(self):
        st, _h, body = self.flintd.http("GET", "/healthz")
        self.assertEqual((st, json.loads(body)["status"]), (200, "SERVING"))
        st, headers, _b = self.flintd.http("HEAD", "/healthz")
        self.assertEqual(st, 200)
        st, headers, body = self.flintd.http("GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(headers["content-type"].startswith("text/plain; version=0.0.4"))
        self.assertIn(b"flint_up 1", body)

    def test_errors_are_json_with_grpc_codes(self):
        f = self.flintd
        self.assertJsonError(self.post("/v1/endpoints/ghost:invoke", b"x"), 404, "NOT_FOUND", "endpoint `ghost` not found")
        self.assertJsonError(f.http("GET", "/v1/endpoints/ghost"), 404, "NOT_FOUND", "`ghost`")
        self.assertJsonError(self.post("/v1/endpoints/Bad_Name:invoke", b"x"), 400, "INVALID_ARGUMENT",
                             "`Bad_Name` is not a valid endpoint name")
        self.assertJsonError(self.post("/v1/endpoints/a%00b:invoke", b"x"), 400, "INVALID_ARGUMENT")
        self.assertJsonError(self.post("/v1/endpoints/echo:frobnicate", b"x"), 404, "NOT_FOUND", "`:frobnicate`")
        self.assertJsonError(f.http("GET", "/v2/anything"), 404, "NOT_FOUND", "no such path")
        h = self.assertJsonError(f.http("GET", "/v1/endpoints/echo:invoke"), 405, "UNIMPLEMENTED")
        self.assertEqual(h["allow"], "POST")
        h = self.assertJsonError(f.http("DELETE", "/v1/endpoints/echo"), 405, "UNIMPLEMENTED")
        self.assertEqual(h["allow"], "GET, HEAD")
        self.assertJsonError(self.post("/v1/endpoints/echo:invoke?stream=maybe", b"x"), 400, "INVALID_ARGUMENT",
                             "`stream`")
        self.assertJsonError(self.post("/v1/endpoints/echo:invoke?timeout=soon", b"x"), 400, "INVALID_ARGUMENT",
                             "`timeout`")
        self.assertJsonError(self.post("/v1/endpoints/echo:invoke?stream=1&stream=0", b"x"), 400, "INVALID_ARGUMENT",
                             "twice")
        self.assertJsonError(self.post("/v1/endpoints/echo:invoke?x=%zz", b"x"), 400, "INVALID_ARGUMENT")
        self.assertJsonError(f.http("GET", "/metrics?format=json"), 400, "INVALID_ARGUMENT")
        self.assertJsonError(f.http("GET", "/" + "a" * 9000), 414, "INVALID_ARGUMENT")
        # the endpoint's own limit, and the function's own error
        self.assertJsonError(self.post("/v1/endpoints/web:invoke", b"y" * 2048), 413, "RESOURCE_EXHAUSTED",
                             "exceeds max_payload")
        self.assertJsonError(self.post("/v1/endpoints/web:invoke", b"fail"), 400, "INVALID_ARGUMENT",
                             "you asked me to fail")
        # nothing was lost: the endpoints still answer
        st, _h, body = self.post("/v1/endpoints/echo:invoke", b"still fine")
        self.assertEqual((st, body), (200, b"still fine"))

    def test_garbage_on_the_socket_does_not_hurt(self):
        for junk in (b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"POST /v1/endpoints/echo:invoke HTTP/1.1\r\n"
                     b"Content-Length: 100\r\n\r\nshort"):
            with socket.create_connection(("127.0.0.1", self.flintd.http_port), timeout=5) as sk:
                sk.sendall(junk)
                sk.shutdown(socket.SHUT_WR)
                try:
                    while sk.recv(4096):
                        pass
                except OSError:
                    pass
        st, _h, body = self.post("/v1/endpoints/echo:invoke", b"after junk")
        self.assertEqual((st, body), (200, b"after junk"))

    def test_curl_http1_and_http2(self):
        curl = shutil.which("curl")
        if curl is None:
            self.skipTest("curl is not installed (scripts/bootstrap installs it): HTTP/2 client test skipped")
        url = "http://127.0.0.1:%d/v1/endpoints/echo:invoke" % self.flintd.http_port
        for flag in ("--http1.1", "--http2-prior-knowledge"):
            p = subprocess.run([curl, "-sS", flag, "--data-binary", "via curl " + flag, "-w", "\n%{http_version}", url],
                               capture_output=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            body, version = p.stdout.rsplit(b"\n", 1)
            self.assertEqual(body, ("via curl " + flag).encode())
            self.assertEqual(version, b"1.1" if flag == "--http1.1" else b"2")
        # HTTP/2 streaming
        p = subprocess.run([curl, "-sS", "--http2-prior-knowledge", "--data-binary", "stream:3",
                            url.replace("echo:", "web:") + "?stream=1"], capture_output=True, timeout=30)
        self.assertEqual(p.stdout, b"chunk 0\nchunk 1\nchunk 2\n")
        # an HTTP/2 client that gives up leaves no request behind
        f = self.flintd
        p = subprocess.run([curl, "-sS", "--http2-prior-knowledge", "--max-time", "0.5", "--data-binary", "sleep:1500",
                            url.replace("echo:", "web:")], capture_output=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        f.wait_for(lambda: int(f.status("web")["stats"]["requests_by_code"].get("CANCELLED", 0)) >= 1, timeout=5,
                   what="the request cancelled")

    def test_shutdown_with_open_connections(self):
        # an idle HTTP/1.1 keep-alive connection must not hold flintd's exit (h2o only closes it
        # when it reads EOF), and a request in progress gets an answer: restart flintd with both
        f = self.flintd
        conn = http.client.HTTPConnection("127.0.0.1", f.http_port, timeout=10)
        conn.request("GET", "/healthz")
        self.assertEqual(conn.getresponse().read(), b'{"status": "SERVING"}\n')
        busy = {}

        def slow():
            busy["resp"] = f.http("POST", "/v1/endpoints/web:invoke", body=b"sleep:8000")

        t = threading.Thread(target=slow)
        t.start()
        f.wait_for(lambda: any(r["in_flight"] for r in json.loads(f.http("GET", "/v1/endpoints/web")[2])["replicas"]),
                   what="the slow request in flight")
        t0 = time.time()
        f.stop()
        self.assertLess(time.time() - t0, 2.5)
        t.join(10)
        status, _h, body = busy["resp"]
        self.assertEqual(status, 503, body)
        self.assertEqual(json.loads(body)["error"]["code"], "UNAVAILABLE")
        conn.close()
        self.assertNotIn("still open at exit", f.read_log())
        f.start()
        st, _h, body = f.http("POST", "/v1/endpoints/echo:invoke", body=b"back")
        self.assertEqual((st, body), (200, b"back"))


if __name__ == "__main__":
    flinttest.main()
