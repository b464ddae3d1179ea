"""Deploy and invoke through the CLI and a Python gRPC client; list, status, delete; health."""
import os
import subprocess

import flinttest
from flinttest import FlintTestCase, build_path, make_bundle, stubs


class Basics(FlintTestCase):
    def test_01_deploy_echo_and_invoke_with_the_cli(self):
        out = self.flintd.cli("deploy", build_path("examples", "echo")).stdout.decode()
        self.assertIn("deployed echo version 1", out)
        self.assertEqual(self.flintd.cli("invoke", "echo", "--data", "hello").stdout, b"hello")
        # --file and stdin
        p = os.path.join(self.tmp, "payload.bin")
        data = bytes(range(256)) * 100
        with open(p, "wb") as f:
            f.write(data)
        self.assertEqual(self.flintd.cli("invoke", "echo", "--file", p).stdout, data)
        self.assertEqual(self.flintd.cli("invoke", "echo", "-", input=b"from stdin").stdout, b"from stdin")

    def test_01b_deploy_shows_progress_on_a_terminal(self):
        import pty
        import select
        d = make_bundle(self.tmp, "progress", "name: {name}\nfunction: crashy.so\n",
                        {"crashy.so": build_path("tests", "functions", "crashy.so"),
                         "blob.bin": os.urandom(3 << 20)})  # several 1 MiB chunks
        master, slave = pty.openpty()
        env = dict(os.environ, FLINT_ADDR="unix:" + self.flintd.sock)
        p = subprocess.Popen([flinttest.FLINT, "deploy", d], stdout=subprocess.PIPE, stderr=slave, env=env)
        os.close(slave)
        seen = b""
        while True:
            r, _, _ = select.select([master], [], [], 60)
            if not r:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the CLI closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        os.close(master)
        out = p.stdout.read().decode()
        p.stdout.close()
        self.assertEqual(p.wait(60), 0, seen)
        self.assertIn("deployed progress version 1", out)
        self.assertIn(b"packing", seen)
        bars = [b for b in seen.split(b"\r") if b.strip().startswith(b"uploading [")]
        self.assertGreaterEqual(len(bars), 3, seen)  # updated per chunk
        self.assertIn(b"[##############################]", bars[-1])  # complete at the end
        done, total = bars[-1].split(b"]")[1].split(b"MiB/s")[0].rsplit(b" ", 2)[0].split(b" / ")
        self.assertEqual(done.strip(), total.strip(), bars[-1])  # all bytes sent
        self.assertTrue(total.strip().endswith(b"MiB"), bars[-1])
        self.assertIn(b"waiting for the new version to start", seen)

    def test_02_python_grpc_client(self):
        s = stubs()
        self.flintd.cli("deploy", build_path("examples", "echo"))
        r = self.flintd.invoke("echo", b"\x00binary\xff")
        self.assertEqual(r.payload, b"\x00binary\xff")
        self.assertGreaterEqual(r.version, 1)
        self.assertTrue(r.replica.startswith("echo-"))
        # server streaming: a unary function answers with one chunk
        chunks = list(self.flintd.stub().InvokeStream(s.pb.InvokeRequest(endpoint="echo", payload=b"abc"), timeout=10))
        self.assertEqual(b"".join(c.data for c in chunks), b"abc")
        eps = self.flintd.stub().ListEndpoints(s.pb.ListEndpointsRequest(), timeout=10)
        self.assertIn("echo", [e.name for e in eps.endpoints])
        ep = self.flintd.stub().GetEndpoint(s.pb.GetEndpointRequest(name="echo"), timeout=10)
        self.assertEqual(ep.state, "ready")
        self.assertEqual(ep.kind, "native")
        self.assertGreaterEqual(ep.requests_ok, 1)

    def test_03_streaming_chunks(self):
        s = stubs()
        self.deploy_crashy("streamer")
        chunks = list(self.flintd.stub().InvokeStream(s.pb.InvokeRequest(endpoint="streamer", payload=b"stream:5"),
                                                       timeout=10))
        self.assertEqual([c.data for c in chunks], [b"chunk %d\n" % i for i in range(5)])
        out = self.flintd.cli("invoke", "streamer", "--stream", "--data", "stream:3").stdout
        self.assertEqual(out, b"chunk 0\nchunk 1\nchunk 2\n")

    def test_04_ls_status_rm(self):
        self.deploy_crashy("gone-soon")
        ls = self.flintd.cli("ls").stdout.decode()
        self.assertIn("gone-soon", ls)
        st = self.flintd.status("gone-soon")
        self.assertEqual(st["state"], "ready")
        self.assertEqual(st["versions"][0]["state"], "ready")
        human = self.flintd.cli("status", "gone-soon").stdout.decode()
        self.assertIn("endpoint   gone-soon", human)
        self.assertIn("replicas", human)
        self.flintd.cli("rm", "gone-soon")
        p = self.flintd.cli("status", "gone-soon", check=False)
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertIn(b"endpoint `gone-soon` not found", p.stderr)
        # the bundle of a deleted endpoint is gone from disk
        self.flintd.wait_for(lambda: not any("gone-soon" in e for e in os.listdir(os.path.join(self.flintd.state, "logs"))),
                             what="logs of the deleted endpoint removed")

    def test_05_redeploy_makes_a_new_version(self):
        d = self.deploy_crashy("versions")
        self.assertEqual(self.flintd.invoke("versions", "x").version, 1)
        self.flintd.cli("deploy", d)
        self.assertEqual(self.flintd.invoke("versions", "x").version, 2)
        st = self.flintd.status("versions")
        self.assertEqual([v["version"] for v in st["versions"]], [2, 1])
        # the old version's replicas are gone
        self.flintd.wait_for(lambda: all(r["version"] == 2 for r in self.flintd.status("versions")["replicas"]),
                             what="old replicas drained")

    def test_06_exec_function_in_python(self):
        self.flintd.cli("deploy", os.path.join(flinttest.SOURCE, "examples", "py-upper"))
        self.assertEqual(self.flintd.invoke("py-upper", "shout").payload, b"SHOUT")
        p = self.flintd.cli("invoke", "py-upper", "--data", "fail:nope", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"asked to fail: nope", p.stderr)

    def test_07_health(self):
        s = stubs()
        self.assertEqual(self.flintd.health(), s.health_pb.HealthCheckResponse.SERVING)
        ch = s.grpc.insecure_channel("unix:" + self.flintd.sock)
        with self.assertRaises(s.grpc.RpcError) as cm:
            s.health_rpc.HealthStub(ch).Check(s.health_pb.HealthCheckRequest(service="nope"), timeout=5)
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.NOT_FOUND)
        # Watch: the current status first, and the stream stays open
        watch = s.health_rpc.HealthStub(ch).Watch(s.health_pb.HealthCheckRequest(), timeout=10)
        self.assertEqual(next(watch).status, s.health_pb.HealthCheckResponse.SERVING)
        watch.cancel()
        unknown = s.health_rpc.HealthStub(ch).Watch(s.health_pb.HealthCheckRequest(service="nope"), timeout=10)
        self.assertEqual(next(unknown).status, s.health_pb.HealthCheckResponse.SERVICE_UNKNOWN)
        unknown.cancel()
        ch.close()

    def test_08_warm_example_uses_its_weights(self):
        self.flintd.cli("deploy", build_path("examples", "warm"))
        a = self.flintd.invoke("warm", "abc").payload
        b = self.flintd.invoke("warm", "abc").payload
        self.assertIn(b'"weights_bytes":16777216', a)
        self.assertEqual(a.split(b",")[0], b.split(b",")[0])  # same digest for the same input
        self.assertNotEqual(a.split(b",")[0], self.flintd.invoke("warm", "abd").payload.split(b",")[0])

    def test_09_logs(self):
        self.deploy_crashy("talker")
        rid = self.flintd.invoke("talker", "log:hello-logs").payload.split()[1]
        out = self.flintd.wait_for(lambda: (lambda o: o if b"log line says hello-logs" in o else None)(
            self.flintd.cli("logs", "talker").stdout), what="log lines")
        self.assertIn(b"stdout: stdout says hello-logs", out)
        self.assertIn(b"stderr: stderr says hello-logs", out)
        # flint_log_line tags the line with the request it was called for
        self.assertIn(b"stderr: [request " + rid + b"] log line says hello-logs", out)


if __name__ == "__main__":
    flinttest.main()
