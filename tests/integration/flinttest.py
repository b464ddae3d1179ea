"""Test harness for flint's integration tests: a real flintd on temporary directories, driven by
the real `flint` CLI and by a Python gRPC client (Debian's python3-grpcio) whose stubs are
generated from proto/ when the tests start.

Environment (set by meson): FLINT_BUILD_DIR, FLINT_SOURCE_DIR. FLINT_TEST_NO_SANDBOX=1 runs
workers without isolation (only for debugging the harness itself).
"""
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

BUILD = os.environ.get("FLINT_BUILD_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "build")
SOURCE = os.environ.get("FLINT_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
FLINTD = os.path.join(BUILD, "runtime", "flintd")
FLINT = os.path.join(BUILD, "runtime", "flint")

_stubs = None


def stubs():
    """Generates the Python stubs for flint.v1 and grpc.health.v1 (once per process) with
    protoc and grpc_python_plugin, and imports them."""
    global _stubs
    if _stubs is not None:
        return _stubs
    if os.environ.get("FLINT_PYSTUBS"):
        # generated ahead (tests/gpu/prepare-kit): machines without protoc, such as a lent GPU
        return _import_stubs(os.environ["FLINT_PYSTUBS"])
    out = tempfile.mkdtemp(prefix="flint-pystubs-")
    proto_dir = os.path.join(SOURCE, "proto")
    plugin = shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
    subprocess.run(["protoc", "-I", proto_dir, "--python_out", out, "--grpc_python_out", out,
                    "--plugin=protoc-gen-grpc_python=" + plugin,
                    "flint/v1/flint.proto", "grpc/health/v1/health.proto"], check=True)
    for pkg in ("flint", "flint/v1", "grpc_health_stub"):
        pass
    # make the generated directories importable packages
    for d in ("flint", os.path.join("flint", "v1"), "grpc", os.path.join("grpc", "health"),
              os.path.join("grpc", "health", "v1")):
        open(os.path.join(out, d, "__init__.py"), "a").close()
    # the generated `grpc` package would shadow grpcio: import health from a renamed copy
    os.rename(os.path.join(out, "grpc"), os.path.join(out, "grpchealth"))
    for name in ("health_pb2.py", "health_pb2_grpc.py"):
        p = os.path.join(out, "grpchealth", "health", "v1", name)
        with open(p) as f:
            text = f.read()
        text = text.replace("from grpc.health.v1 import", "from grpchealth.health.v1 import")
        with open(p, "w") as f:
            f.write(text)
    return _import_stubs(out)


def _import_stubs(out):
    global _stubs
    sys.path.insert(0, out)
    import grpc  # noqa: F401  (grpcio)
    from flint.v1 import flint_pb2, flint_pb2_grpc
    from grpchealth.health.v1 import health_pb2, health_pb2_grpc

    class S:
        pass

    s = S()
    s.pb, s.rpc, s.health_pb, s.health_rpc, s.grpc = flint_pb2, flint_pb2_grpc, health_pb2, health_pb2_grpc, grpc
    _stubs = s
    return s


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Flintd:
    """One flintd on its own state and run directories."""

    def __init__(self, *extra, sandbox=None, snapshots=True, wrap=(), pass_fds=()):
        """`wrap`: a command flintd runs under (e.g. a namespace set-up; the socket then lives
        outside the run directory, whose tmpfs the test's namespace may not see); `pass_fds`:
        descriptors flintd inherits (as a careless parent would leave them)."""
        self.wrap = list(wrap)
        self.pass_fds = tuple(pass_fds)
        self.dir = tempfile.mkdtemp(prefix="flint-it-")
        self.state = os.path.join(self.dir, "state")
        self.run = os.path.join(self.dir, "run")
        self.sock = os.path.join(self.dir if self.wrap else self.run, "flintd.sock")
        self.port = free_port()
        self.http_port = free_port()
        self.extra = list(extra)
        if sandbox is None:
            sandbox = os.environ.get("FLINT_TEST_NO_SANDBOX") != "1"
        if not sandbox:
            self.extra.append("--no-sandbox")
        if not snapshots:
            self.extra.append("--no-snapshots")
        self.proc = None
        self.log_path = os.path.join(self.dir, "flintd.log")
        self.channel = None
        self.start()

    # ---- process ---------------------------------------------------------------------------
    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.wrap + [FLINTD, "--state-dir", self.state, "--run-dir", self.run, "--socket", self.sock,
             "--listen", "127.0.0.1:%d" % self.port, "--http", "127.0.0.1:%d" % self.http_port] + self.extra,
            stdout=self.log, stderr=subprocess.STDOUT, pass_fds=self.pass_fds)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("flintd exited at start:\n" + self.read_log())
            if os.path.exists(self.sock):
                try:
                    self.health()
                    return
                except Exception:
                    pass
            time.sleep(0.05)
        raise RuntimeError("flintd did not become healthy:\n" + self.read_log())

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        rc = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("flintd did not stop within %ds after %s" % (timeout, sig))
        self.log.close()
        # an orderly stop exits 0: an abort or a sanitizer's exit status during shutdown fails
        if sig in (signal.SIGTERM, signal.SIGINT) and rc not in (None, 0):
            raise AssertionError("flintd exited with status %d after %s:\n%s" % (
                rc, signal.Signals(sig).name, self.read_log()[-4000:]))

    def kill9(self):
        self.stop(sig=signal.SIGKILL)

    def restart(self):
        self.stop()
        self.start()

    def sanitizer_reports(self):
        """Sanitizer reports in flintd's log and in the workers' logs (test builds)."""
        marks = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
        found = [line for line in self.read_log().splitlines() if any(m in line for m in marks)]
        logs = os.path.join(self.state, "logs")
        for root, _dirs, files in os.walk(logs):
            for name in files:
                with open(os.path.join(root, name), errors="replace") as f:
                    found += [line for line in f if any(m in line for m in marks)]
        return found

    def cleanup(self):
        self.stop()
        reports = self.sanitizer_reports()
        # the run dir is a tmpfs flintd mounted; images and weights live there
        subprocess.run(["umount", "-l", self.run], stderr=subprocess.DEVNULL)
        log = self.read_log()
        shutil.rmtree(self.dir, ignore_errors=True)
        if reports:
            raise AssertionError("sanitizer reports:\n" + "\n".join(reports) + "\n--- flintd log ---\n" + log[-6000:])

    # ---- clients --------------------------------------------------------------------------
    def cli(self, *args, input=None, check=True, timeout=120):
        env = dict(os.environ, FLINT_ADDR="unix:" + self.sock)
        p = subprocess.run([FLINT] + [str(a) for a in args], input=input, capture_output=True, env=env,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("flint %s failed (%d):\nstdout: %s\nstderr: %s\nflintd log tail:\n%s" % (
                " ".join(map(str, args)), p.returncode, p.stdout.decode(errors="replace"),
                p.stderr.decode(errors="replace"), self.read_log()[-4000:]))
        return p

    def grpc_channel(self):
        s = stubs()
        if self.channel is None:
            self.channel = s.grpc.insecure_channel(
                "127.0.0.1:%d" % self.port,
                options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])
        return self.channel

    def stub(self):
        return stubs().rpc.FlintStub(self.grpc_channel())

    def health(self):
        s = stubs()
        ch = s.grpc.insecure_channel("unix:" + self.sock)
        try:
            r = s.health_rpc.HealthStub(ch).Check(s.health_pb.HealthCheckRequest(), timeout=2)
            return r.status
        finally:
            ch.close()

    def invoke(self, name, payload, timeout=30):
        s = stubs()
        if isinstance(payload, str):
            payload = payload.encode()
        return self.stub().Invoke(s.pb.InvokeRequest(endpoint=name, payload=payload), timeout=timeout)

    def status(self, name):
        return json.loads(self.cli("status", name, "--json").stdout)

    def http(self, method, path, body=None, headers=None, timeout=30):
        """One request to the HTTP front door (Python's http.client, HTTP/1.1): (status, headers
        with lowercase names, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def endpoint(self, name):
        """GetEndpoint as JSON over HTTP: the content of `flint status NAME --json` without a
        process per call, so polling stays quick on a loaded machine."""
        status, _headers, body = self.http("GET", "/v1/endpoints/" + name)
        if status != 200:
            raise AssertionError("GET /v1/endpoints/%s: %d %r" % (name, status, body[:500]))
        return json.loads(body)

    def metrics(self):
        """GET /metrics parsed by prometheus_client's text parser: {family name: Metric}."""
        from prometheus_client.parser import text_string_to_metric_families
        status, headers, body = self.http("GET", "/metrics")
        if status != 200:
            raise AssertionError("GET /metrics: %d %r" % (status, body[:500]))
        return {f.name: f for f in text_string_to_metric_families(body.decode())}

    def wait_for(self, predicate, timeout=20, what="condition"):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.05)
        raise AssertionError("timed out waiting for %s (last: %r)\nflintd log tail:\n%s" % (
            what, last, self.read_log()[-3000:]))


def metric_value(families, name, sample_name=None, **labels):
    """The value of the one sample of family `name` (sample `sample_name`, default the family's
    own) whose labels include `labels`; 0 when there is none."""
    fam = families.get(name)
    if fam is None:
        return 0
    want = sample_name or (name + "_total" if fam.type == "counter" else name)
    found = [s.value for s in fam.samples
             if s.name == want and all(s.labels.get(k) == v for k, v in labels.items())]
    if len(found) > 1:
        raise AssertionError("%d samples of %s match %r" % (len(found), want, labels))
    return found[0] if found else 0


def build_path(*parts):
    return os.path.join(BUILD, *parts)


def make_bundle(tmpdir, name, manifest, files):
    """Creates a deploy directory: flint.yaml (manifest text, {name} substituted) and `files`
    (bundle-relative path → bytes, str, or a path of the build tree to copy)."""
    d = os.path.join(tmpdir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "flint.yaml"), "w") as f:
        f.write(manifest.format(name=name))
    for rel, content in files.items():
        p = os.path.join(d, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if isinstance(content, str) and os.path.isabs(content) and os.path.exists(content):
            shutil.copy(content, p)
        else:
            with open(p, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
    return d


class FlintTestCase(unittest.TestCase):
    """A test case with one flintd for the whole class (cls.flintd) and a scratch directory."""

    flintd_args = ()
    sandbox = None
    snapshots = True

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="flint-bundles-")
        cls.flintd = Flintd(*cls.flintd_args, sandbox=cls.sandbox, snapshots=cls.snapshots)

    @classmethod
    def tearDownClass(cls):
        cls.flintd.cleanup()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def deploy_crashy(self, name, extra_manifest=""):
        d = make_bundle(self.tmp, name, "name: {name}\nfunction: crashy.so\n" + extra_manifest,
                        {"crashy.so": build_path("tests", "functions", "crashy.so")})
        self.flintd.cli("deploy", d)
        return d


def main():
    unittest.main(verbosity=2)
