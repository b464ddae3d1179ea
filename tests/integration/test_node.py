"""flint from Node.js: a real npm gRPC client (@grpc/grpc-js + @grpc/proto-loader, installed into
tests/node by `scripts/bootstrap --test`) calls a real flintd over TCP, and Node's fetch calls
its HTTP front door. The client (tests/node/client.mjs) reports what it saw; this test asserts.
Skips, saying why, when node or the npm packages are missing."""
import json
import os
import shutil
import subprocess
import sys
import unittest

import flinttest
from flinttest import FlintTestCase

NODE_DIR = os.path.join(flinttest.SOURCE, "tests", "node")


def missing():
    if shutil.which("node") is None:
        return "node is not installed (scripts/bootstrap --test installs it)"
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@grpc", "grpc-js")):
        return "the npm packages are not installed: run `npm ci --prefix tests/node` (scripts/bootstrap --test does)"
    return None


class NodeClient(FlintTestCase):
    @classmethod
    def setUpClass(cls):
        why = missing()
        if why:
            print("skipped: " + why)
            raise unittest.SkipTest(why)
        super().setUpClass()
        cls.flintd.cli("deploy", flinttest.build_path("examples", "echo"))

    def test_grpc_and_http_from_node(self):
        f = self.flintd
        p = subprocess.run(["node", os.path.join(NODE_DIR, "client.mjs"), os.path.join(flinttest.SOURCE, "proto"),
                            "127.0.0.1:%d" % f.port, "127.0.0.1:%d" % f.http_port, "echo"],
                           capture_output=True, timeout=120, cwd=NODE_DIR)
        self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace"))
        out = json.loads(p.stdout)
        self.assertEqual(out["health"], "SERVING")
        self.assertEqual(out["invoke"]["payload"], "hello from node")
        self.assertEqual(out["invoke"]["version"], "1")
        self.assertTrue(out["invoke"]["replica"].startswith("echo-1-"), out["invoke"])
        self.assertEqual("".join(out["stream"]["chunks"]), "streamed from node")
        self.assertNotIn("code", out["stream"])
        self.assertEqual(out["missing"]["code"], "NOT_FOUND")
        self.assertIn("endpoint `no-such-endpoint` not found", out["missing"]["details"])
        self.assertIn("echo", out["endpoints"])
        self.assertEqual(out["get"], {"name": "echo", "version": "1", "kind": "native", "state": "ready"})
        self.assertEqual(out["http"], {"status": 200, "body": "over http from node"})
        # the server counted what the Node client sent (3 answered invokes, 1 not found)
        st = f.status("echo")
        self.assertGreaterEqual(int(st.get("requests_ok", 0)), 3)


if __name__ == "__main__":
    unittest.main(verbosity=2)
