#!/usr/bin/python3
"""examples/py-upper: a `kind: exec` function in Python, speaking flint's exec protocol
(docs/FUNCTIONS.md) on stdin/stdout: it upper-cases its input.

Frames from flint: 4-byte big-endian length + payload. Frames to flint: 1 type byte, 4-byte
big-endian length, data. 'R' once when ready, then per request 'D' (data) ... 'E' (end), or
'X' (error message)."""
import struct
import sys

inp = sys.stdin.buffer
out = sys.stdout.buffer


def send(kind, data=b""):
    out.write(kind + struct.pack(">I", len(data)) + data)


def main():
    send(b"R")  # init is done: warm state would be built before this line
    out.flush()
    while True:
        hdr = inp.read(4)
        if len(hdr) < 4:
            return
        (n,) = struct.unpack(">I", hdr)
        payload = inp.read(n)
        if payload.startswith(b"fail:"):
            send(b"X", b"asked to fail: " + payload[5:])
        else:
            send(b"D", payload.upper())
            send(b"E")
        out.flush()


if __name__ == "__main__":
    main()
