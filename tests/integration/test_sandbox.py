"""The escape suite: examples/hostile tries to get out of its sandbox in every way we know; each
attempt must fail while flintd keeps serving other endpoints. Then: secrets reach only the
functions that list them, limits are reported by name, and a worker killed in the middle of its
sandbox setup leaves no mount, cgroup or process behind."""
import glob
import json
import os
import subprocess
import time

import flinttest
from flinttest import FlintTestCase, Flintd, build_path, make_bundle, stubs

SECRET_VALUE = "s3cr3t-value-7f3a"


def cgroup_dirs(tag_glob="flint-*"):
    """Replica cgroups currently under any flint parent cgroup."""
    out = []
    for parent in glob.glob("/sys/fs/cgroup/*/" + tag_glob) + glob.glob("/sys/fs/cgroup/" + tag_glob):
        out += [d for d in glob.glob(parent + "/*") if os.path.isdir(d)]
    return out


def worker_processes(tag=None):
    """Worker processes, of the flintd whose cgroup parent is `tag` when given (other tests run
    their own flintd in parallel)."""
    p = subprocess.run(["pgrep", "-f", "/.flint/worker"], capture_output=True, text=True)
    pids = [int(x) for x in p.stdout.split()]
    if tag is None:
        return pids
    mine = []
    for pid in pids:
        try:
            with open("/proc/%d/cgroup" % pid) as f:
                if "/" + tag + "/" in f.read():
                    mine.append(pid)
        except OSError:
            pass
    return mine


class Escape(FlintTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        f = cls.flintd
        f.cli("secret", "set", "topsecret", "API_KEY=" + SECRET_VALUE)
        f.cli("deploy", build_path("examples", "hostile"))
        f.cli("deploy", build_path("examples", "echo"))
        cls.holder = make_bundle(cls.tmp, "holder", "name: {name}\nfunction: crashy.so\nsecrets: [topsecret]\n",
                                 {"crashy.so": build_path("tests", "functions", "crashy.so")})
        f.cli("deploy", cls.holder)
        cls.flintd_pid = f.proc.pid
        cls.echo_bundle = f.status("echo")["versions"][0]["bundle_sha256"]

    def attack(self, name, arg=""):
        payload = name + (" " + str(arg) if arg != "" else "")
        r = self.flintd.invoke("hostile", payload, timeout=60).payload.decode()
        # flintd keeps serving the others whatever happened
        self.assertEqual(self.flintd.invoke("echo", "still here").payload, b"still here")
        return r

    def assertBlocked(self, name, arg=""):
        r = self.attack(name, arg)
        self.assertTrue(r.startswith("blocked:"), "%s %s -> %s" % (name, arg, r))
        return r

    # ---- filesystem ------------------------------------------------------------------------
    def test_read_shadow(self):
        self.assertBlocked("read-shadow")

    def test_read_other_bundles_and_state(self):
        state = self.flintd.state
        self.assertBlocked("read-path", os.path.join(state, "bundles", self.echo_bundle, "echo.so"))
        self.assertBlocked("read-path", os.path.join(state, "registry.db"))
        self.assertBlocked("read-path", os.path.join(state, "secrets", "topsecret.json"))
        self.assertBlocked("read-path", "/proc/1/root/etc/shadow")

    def test_root_holds_only_the_sandbox(self):
        self.assertBlocked("list-root")

    def test_write_outside_tmp(self):
        self.assertBlocked("write-bundle")
        self.assertBlocked("write-etc")
        self.assertBlocked("write-usr")

    def test_fill_tmp_past_its_limit(self):
        r = self.assertBlocked("fill-tmp", 8 << 20)
        self.assertIn("limit", r)

    def test_dev_is_minimal(self):
        self.assertBlocked("dev-mem")
        self.assertBlocked("mknod")

    # ---- network ---------------------------------------------------------------------------
    def test_no_network(self):
        self.assertBlocked("connect-flintd", self.flintd.port)
        self.assertBlocked("connect-flintd", self.flintd.http_port)
        self.assertBlocked("connect-internet")
        self.assertBlocked("raw-socket")

    # ---- processes -------------------------------------------------------------------------
    def test_host_processes_invisible_and_untouchable(self):
        self.assertBlocked("see-processes")
        self.assertBlocked("kill-host", self.flintd_pid)
        self.assertBlocked("ptrace-host", self.flintd_pid)
        self.assertIsNone(self.flintd.proc.poll())

    def test_fork_bomb(self):
        self.assertBlocked("fork-bomb", 32)

    def test_allocating_past_the_memory_limit_is_reported(self):
        s = stubs()
        with self.assertRaises(s.grpc.RpcError) as cm:
            self.flintd.invoke("hostile", "allocate 512", timeout=60)
        self.assertEqual(cm.exception.code(), s.grpc.StatusCode.UNAVAILABLE)
        self.assertIn("endpoint `hostile`: worker exceeded memory limit 64 MiB", cm.exception.details())
        self.assertEqual(self.flintd.invoke("echo", "fine").payload, b"fine")
        self.assertTrue(self.attack("read-shadow").startswith("blocked"))  # a new worker serves

    # ---- kernel interfaces -----------------------------------------------------------------
    def test_mount_family(self):
        for a in ("mount", "unshare", "setns", "chroot", "pivot-root", "clone-newns"):
            with self.subTest(attack=a):
                self.assertBlocked(a)

    def test_kernel_attack_surface(self):
        for a in ("load-module", "bpf", "perf-event", "keyctl", "userfaultfd", "io-uring", "reboot",
                  "open-by-handle"):
            with self.subTest(attack=a):
                self.assertBlocked(a)

    def test_proc_sys_and_sys(self):
        self.assertBlocked("write-proc-sys")
        self.assertBlocked("write-sys")

    def test_setuid_root(self):
        self.assertBlocked("setuid-root")

    # ---- secrets ---------------------------------------------------------------------------
    def test_secrets_reach_only_who_lists_them(self):
        self.assertBlocked("read-secrets", SECRET_VALUE)
        self.assertBlocked("read-secrets", "topsecret")
        self.assertEqual(self.flintd.invoke("holder", "env:API_KEY").payload.decode(), SECRET_VALUE)
        # never printed, never logged
        st = self.flintd.cli("status", "holder").stdout.decode()
        self.assertIn("topsecret", st)
        self.assertNotIn(SECRET_VALUE, st)
        self.assertNotIn(SECRET_VALUE, self.flintd.cli("status", "holder", "--json").stdout.decode())
        self.assertNotIn(SECRET_VALUE, self.flintd.cli("secret", "ls").stdout.decode())
        self.assertNotIn(SECRET_VALUE, self.flintd.read_log())
        # stored root-only
        d = os.path.join(self.flintd.state, "secrets")
        self.assertEqual(os.stat(d).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(os.path.join(d, "topsecret.json")).st_mode & 0o777, 0o600)

    def test_missing_secret_fails_the_deploy_clearly(self):
        d = make_bundle(self.tmp, "wants", "name: {name}\nfunction: crashy.so\nsecrets: [nope]\n",
                        {"crashy.so": build_path("tests", "functions", "crashy.so")})
        p = self.flintd.cli("deploy", d, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"secret `nope` not found", p.stderr)

    def test_zz_every_attack_is_covered(self):
        listed = self.flintd.invoke("hostile", "list").payload.decode().split()
        self.assertGreaterEqual(len(listed), 15)


class Leftovers(FlintTestCase):
    """Sandboxes leave nothing behind: after replicas die, after flintd stops, and when a worker
    dies in the middle of its sandbox setup (fault injection)."""

    def mounts_under(self, path):
        with open("/proc/self/mountinfo") as f:
            return [l for l in f if path in l and "/run " not in l and not l.split()[4] == path]

    def test_no_leftovers_after_replicas_and_flintd_go(self):
        f = self.flintd
        f.cli("deploy", build_path("examples", "echo"))
        f.cli("deploy", build_path("examples", "hostile"))
        f.invoke("echo", "x")
        tag = "flint-" + __import__("hashlib").sha256(f.state.encode()).hexdigest()[:12]
        self.assertGreater(len(cgroup_dirs(tag)), 0)  # live replicas have cgroups
        f.cli("rm", "hostile")
        f.cli("rm", "echo")
        f.wait_for(lambda: len(cgroup_dirs(tag)) == 0, what="replica cgroups removed")
        self.assertEqual(self.mounts_under(f.run + "/sandbox"), [])

    def test_worker_killed_mid_setup_leaves_nothing(self):
        for fault in ("sandbox-mounts", "sandbox-exec"):
            with self.subTest(fault=fault):
                os.environ["FLINT_FAULT"] = fault
                try:
                    g = Flintd()
                finally:
                    del os.environ["FLINT_FAULT"]
                try:
                    tag = "flint-" + __import__("hashlib").sha256(g.state.encode()).hexdigest()[:12]
                    before = set(worker_processes(tag))
                    p = g.cli("deploy", build_path("examples", "echo"), check=False)
                    self.assertNotEqual(p.returncode, 0)
                    self.assertIn(b"failed to start", p.stderr)
                    g.wait_for(lambda: len(cgroup_dirs(tag)) == 0, what="no cgroup left")
                    self.assertEqual(set(worker_processes(tag)) - before, set())
                    self.assertEqual(self.mounts_under(g.run + "/sandbox"), [])
                finally:
                    g.cleanup()
                self.assertEqual(cgroup_dirs(tag), [])


if __name__ == "__main__":
    flinttest.main()
