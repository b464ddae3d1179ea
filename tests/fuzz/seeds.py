#!/usr/bin/python3
"""Writes the seed corpora of the binary fuzz targets (frame, bundle) into tests/fuzz/corpus/.
The seeds are committed; rerun this after a format change. Text targets (manifest, json) have
hand-written seeds. Regression inputs found by fuzzing are added next to the seeds by hand
(named crash-*/regress-*) and never regenerated.

usage: tests/fuzz/seeds.py"""
import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))


def stubs():
    out = tempfile.mkdtemp(prefix="flint-seed-stubs-")
    subprocess.run(["protoc", "-I", os.path.join(SOURCE, "proto"), "--python_out", out,
                    "flint/worker/v1/worker.proto", "flint/node/v1/node.proto"], check=True)
    for d in ("flint", "flint/worker", "flint/worker/v1", "flint/node", "flint/node/v1"):
        open(os.path.join(out, d, "__init__.py"), "a").close()
    sys.path.insert(0, out)
    from flint.worker.v1 import worker_pb2
    from flint.node.v1 import node_pb2
    return worker_pb2, node_pb2, out


def frame(msg):
    b = msg.SerializeToString()
    return struct.pack("<I", len(b)) + b


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def frames():
    w, n, tmp = stubs()
    try:
        F = w.Frame
        hello = frame(F(hello=w.Hello(abi_version=1, pid=1, worker_version="0.1.0")))
        loaded = frame(F(loaded=w.Loaded(ok=True, init_ms=1.5)))
        result = frame(F(result=w.Result(request_id=7, code=0, data=b"hello")))
        failed = frame(F(result=w.Result(request_id=8, code=3, message="bad input \xff".encode("utf-8", "surrogateescape").decode("utf-8", "replace"))))
        chunk = frame(F(chunk=w.Chunk(request_id=9, data=b"\x00\x01tok")))
        pong = frame(F(pong=w.Pong(seq=3, completed=10, stats={"tokens_per_s": 12.5, "kv_used": float("nan")})))
        invoke = frame(F(invoke=w.Invoke(request_id=1, payload=b"x" * 40, streaming=True, deadline_ms=1000)))
        ready = frame(F(checkpoint_ready=w.CheckpointReady(ok=False, error="cannot")))
        ack = frame(F(restored_ack=w.RestoredAck(ok=True)))
        write("frame", "seed-hello", hello)
        write("frame", "seed-session", hello + loaded + result + chunk + failed + pong)
        write("frame", "seed-invoke", invoke)
        write("frame", "seed-snapshot", ready + ack)
        write("frame", "seed-truncated", result[:-3])
        write("frame", "seed-header-only", result[:2])
        write("frame", "seed-empty-frame", struct.pack("<I", 0))
        write("frame", "seed-oversized", struct.pack("<I", 1 << 30) + b"x" * 16)
        write("frame", "seed-garbage", struct.pack("<I", 12) + b"\xff" * 12)
        write("frame", "seed-bad-varint", struct.pack("<I", 11) + b"\x32" + b"\xff" * 10)
        N = n.NodeFrame
        spawned = frame(N(spawned=n.Spawned(replica_id="echo-1-r1", ok=True, pid=42, phases_ms={"clone": 1.0})))
        exited = frame(N(exited=n.Exited(replica_id="echo-1-r1", pid=42, wait_status=9, oom_killed=True, memory_limit=1 << 26, reason="exceeded memory limit 64 MiB")))
        status = frame(N(status=n.HelperStatus(ok=True, message="spawner ready")))
        write("frame", "seed-node", spawned + exited + status)
    finally:
        shutil.rmtree(tmp)


def tar(entries):
    """entries: (name, kind, data-or-target, mode)"""
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, kind, data, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.mode = mode
            if kind == "file":
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
                continue
            ti.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                       "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("sym", "hard"):
                ti.linkname = data
            t.addfile(ti)
    return bio.getvalue()


def too_big():
    """A ustar header announcing 2 MiB (over the fuzz target's 1 MiB limit) with a few bytes of
    data: the limit must be enforced from the header, before reading."""
    t = bytearray(tar([("big", "file", b"0123456789", 0o644)]))
    t[124:136] = b"%011o\0" % (2 << 20)
    t[148:156] = b"        "
    t[148:156] = b"%06o\0 " % sum(t[0:512])
    return bytes(t)


def bundles():
    ok = [("flint.yaml", "file", b"name: echo\nfunction: echo.so\n", 0o644),
          ("echo.so", "file", b"\x7fELF" + b"\0" * 60, 0o755),
          ("lib", "dir", None, 0o755),
          ("lib/data.bin", "file", b"weights" * 10, 0o644),
          ("lib/link", "sym", "data.bin", 0o777),
          ("top-link", "sym", "lib/data.bin", 0o777),
          ("lib/up", "sym", "../flint.yaml", 0o777)]
    write("bundle", "seed-valid", tar(ok))
    write("bundle", "seed-dot-slash", tar([("./a", "file", b"a", 0o644), ("./d/", "dir", None, 0o755)]))
    write("bundle", "seed-absolute", tar([("/etc/evil", "file", b"x", 0o644)]))
    write("bundle", "seed-dotdot", tar([("a/../../evil", "file", b"x", 0o644)]))
    write("bundle", "seed-symlink-absolute", tar([("l", "sym", "/etc/shadow", 0o777)]))
    write("bundle", "seed-symlink-up", tar([("l", "sym", "../outside", 0o777)]))
    write("bundle", "seed-write-through-symlink", tar([("d", "sym", ".", 0o777), ("d/x", "file", b"x", 0o644)]))
    write("bundle", "seed-hardlink", tar([("a", "file", b"a", 0o644), ("b", "hard", "a", 0o644)]))
    write("bundle", "seed-device", tar([("dev", "chr", None, 0o644)]))
    write("bundle", "seed-fifo", tar([("p", "fifo", None, 0o644)]))
    write("bundle", "seed-setuid", tar([("s", "file", b"#!/bin/sh\n", 0o4755)]))
    write("bundle", "seed-duplicate", tar([("a", "file", b"a", 0o644), ("a", "file", b"b", 0o644)]))
    write("bundle", "seed-too-big", too_big())
    write("bundle", "seed-garbage", b"this is not a tar archive" * 30)
    write("bundle", "seed-empty", b"")
    # Each link stays inside when read on its own, but `l2` goes through `l` (the bundle's root)
    # and then up: resolved physically it leaves the bundle.
    write("bundle", "regress-symlink-chain-escape",
          tar([("a", "dir", None, 0o755), ("a/l", "sym", "..", 0o777), ("a/l2", "sym", "l/..", 0o777)]))


if __name__ == "__main__":
    frames()
    bundles()
