"""flint-worker under LeakSanitizer, driven directly over its socket.

Sandboxed workers cannot run LeakSanitizer (its ptrace is denied by the seccomp filter, so the
integration tests turn it off inside sandboxes). Here the test build's flint-worker runs as a
plain child of the test, speaking the real worker.proto frames on a socketpair, through a whole
life for each kind of function: Hello, Load (init), invokes (unary, streamed, failing,
cancelled), Ping, the checkpoint hooks (Checkpoint, Restored), and the end of the channel, after
which the worker exits normally and LeakSanitizer checks its heap. Any leak or sanitizer report
fails the test, and so does an exit status other than 0.
"""
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import unittest

import flinttest

WORKER = flinttest.build_path("worker", "flint-worker")
MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

_pb = None


def pb():
    """worker_pb2, generated from proto/ with protoc (once per process)."""
    global _pb
    if _pb is None:
        out = tempfile.mkdtemp(prefix="flint-workerpb-")
        subprocess.run(["protoc", "-I", os.path.join(flinttest.SOURCE, "proto"), "--python_out", out,
                        "flint/worker/v1/worker.proto"], check=True)
        for d in ("flint", os.path.join("flint", "worker"), os.path.join("flint", "worker", "v1")):
            open(os.path.join(out, d, "__init__.py"), "a").close()
        sys.path.insert(0, out)
        from flint.worker.v1 import worker_pb2
        _pb = worker_pb2
    return _pb


class Worker:
    """One flint-worker on the far end of a socketpair (`--fd N`)."""

    def __init__(self, tmp):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.err_path = os.path.join(tmp, "worker-%d.err" % id(self))
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1"
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([WORKER, "--fd", str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
        theirs.close()
        self.buf = b""

    def send(self, **kw):
        f = pb().Frame(**kw)
        data = f.SerializeToString()
        self.sock.sendall(struct.pack("<I", len(data)) + data)

    def recv(self, timeout=30):
        self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack("<I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    f = pb().Frame()
                    f.ParseFromString(self.buf[4:4 + n])
                    self.buf = self.buf[4 + n:]
                    return f
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("the worker closed its channel")
            self.buf += chunk

    def expect(self, case, timeout=30):
        f = self.recv(timeout)
        got = f.WhichOneof("msg")
        if got != case:
            raise AssertionError("expected %s, got %s: %s" % (case, got, f))
        return getattr(f, case)

    def finish(self):
        """Closes the channel and waits for a normal exit; returns (status, stderr)."""
        self.sock.close()
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = "hung after its channel closed"
        with open(self.err_path, errors="replace") as f:
            return rc, f.read()


class WorkerLeaks(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="flint-workerleaks-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def life(self, load, invokes, streaming=False, hooks=True):
        """Runs one worker through a whole life; returns the Results of `invokes`."""
        w = Worker(self.tmp)
        results = []
        try:
            self.assertEqual(w.expect("hello").abi_version, 1)
            w.send(load=load)
            loaded = w.expect("loaded")
            self.assertTrue(loaded.ok, loaded.error)
            for i, payload in enumerate(invokes, 1):
                w.send(invoke=pb().Invoke(request_id=i, payload=payload, streaming=streaming, deadline_ms=30000))
                chunks = b""
                while True:
                    f = w.recv()
                    if f.WhichOneof("msg") == "chunk":
                        chunks += f.chunk.data
                        continue
                    self.assertEqual(f.WhichOneof("msg"), "result")
                    results.append((f.result.code, f.result.data or chunks, f.result.message))
                    break
            w.send(ping=pb().Ping(seq=7))
            self.assertEqual(w.expect("pong").seq, 7)
            if hooks:
                w.send(checkpoint=pb().Checkpoint())
                self.assertTrue(w.expect("checkpoint_ready").ok)
                w.send(restored=pb().Restored(replica_id="leak-test-r2", seed=os.urandom(32), wall_ms=1))
                ack = w.expect("restored_ack")
                self.assertTrue(ack.ok, ack.error)
        finally:
            rc, err = w.finish()
        reports = [line for line in err.splitlines() if any(m in line for m in MARKS)]
        self.assertEqual(reports, [], err[-6000:])
        self.assertEqual(rc, 0, err[-3000:])
        return results

    def native_load(self, so, **kw):
        return pb().Load(kind=pb().KIND_NATIVE, endpoint="leaks", version=1, replica_id="leak-test-r1",
                         path=so, max_concurrency=kw.pop("max_concurrency", 1), max_payload=1 << 20, **kw)

    def test_native_echo(self):
        res = self.life(self.native_load(flinttest.build_path("examples", "echo", "echo.so")), [b"a", b"b" * 5000])
        self.assertEqual([r[1] for r in res], [b"a", b"b" * 5000])

    def test_native_concurrent_executors(self):
        load = self.native_load(flinttest.build_path("tests", "functions", "crashy.so"), max_concurrency=4)
        res = self.life(load, [b"one", b"fail", b"two"])
        self.assertEqual(res[0][:2], (0, b"one"))
        self.assertNotEqual(res[1][0], 0)
        self.assertEqual(res[2][:2], (0, b"two"))

    def test_native_streaming_and_weights(self):
        weights = flinttest.build_path("examples", "warm", "weights.bin")
        load = self.native_load(flinttest.build_path("examples", "warm", "warm.so"))
        load.weights["table"] = weights
        res = self.life(load, [b"abc", b"xyz"], streaming=True)
        self.assertTrue(all(code == 0 and b"digest" in data for code, data, _m in res), res)

    def test_exec_function(self):
        load = pb().Load(kind=pb().KIND_EXEC, endpoint="leaks", version=1, replica_id="leak-test-r1",
                         path=os.path.join(flinttest.SOURCE, "examples", "py-upper", "upper.py"),
                         max_concurrency=1, max_payload=1 << 20)
        res = self.life(load, [b"shout", b"fail:no"], hooks=False)
        self.assertEqual(res[0][:2], (0, b"SHOUT"))
        self.assertNotEqual(res[1][0], 0)

    def test_llm_engine(self):
        model = os.path.join(self.tmp, "model")
        subprocess.run(["/usr/bin/python3", os.path.join(flinttest.SOURCE, "scripts", "make-tiny-model"), model,
                        "--draft", os.path.join(self.tmp, "draft")], check=True, stdout=subprocess.DEVNULL)
        load = pb().Load(kind=pb().KIND_LLM, endpoint="leaks", version=1, replica_id="leak-test-r1", path=model,
                         max_concurrency=4, max_payload=1 << 20, draft_path=os.path.join(self.tmp, "draft"))
        for name in os.listdir(model):
            if name.endswith(".safetensors"):
                load.weights[name] = os.path.join(model, name)
        for name in os.listdir(os.path.join(self.tmp, "draft")):
            if name.endswith(".safetensors"):
                load.weights["draft-" + name] = os.path.join(self.tmp, "draft", name)
        res = self.life(load, [b'{"prompt": "hello", "max_tokens": 6}',
                               b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "seed": 3,'
                               b' "temperature": 0.8}',
                               b'{"prompt": 12}'], streaming=True)
        self.assertEqual(res[0][0], 0, res[0])
        self.assertEqual(res[1][0], 0, res[1])
        self.assertEqual(res[2][0], 3, res[2])  # INVALID_ARGUMENT for a bad request


if __name__ == "__main__":
    unittest.main(verbosity=2)
