"""Quotas on heap and open files, enforced by the module (lkm/quota.c), in the lab.

Each test puts tests/kernel/tk_quota.c under a quota while it waits, lets it make the
one descriptor or grow its heap, and checks the kill (SIGKILL, a kill record with the
quota and the value reached) or its absence.
"""
from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402
from bounded import Waiting  # noqa: E402
from test_lkm import DMESG_BAD, dmesg_lines, ensure_loaded, read_all_nonblocking, run_as  # noqa: E402

from toolkit import quota, schema  # noqa: E402
from toolkit.backends import lkm, lkm_quota  # noqa: E402

pytestmark = pytest.mark.kernel

WAYS = ("open", "dup", "dup2", "dup3", "fcntl", "pipe", "socket", "accept", "eventfd",
        "epoll", "memfd", "scm")
MADE = {"pipe": 2}          # descriptors one call makes
STEP_KIB = 1024
TOOLKIT = str(Path(sys.executable).parent / "toolkit")


@pytest.fixture(scope="module")
def qhelper():
    return workload.helper(source=Path(__file__).with_name("tk_quota.c"))


@pytest.fixture
def module():
    ensure_loaded(ring_size=16384, proc_gid=-1)
    lkm.control("uid off", "ppid off", "events kill", "clear", "reset")
    lkm_quota.write("reset")
    before = len(dmesg_lines())
    yield
    lkm_quota.write("reset")
    lkm.control("events all", "clear")
    bad = [line for line in dmesg_lines()[before:] if DMESG_BAD.search(line)]
    assert not bad, bad


def kills() -> list:
    return [r for r in lkm.parse_events(read_all_nonblocking().decode())
            if r.type == schema.EventType.KILL]


class LkmSide:
    """The module's quotas, through /proc/toolkit/quota and the events file."""

    def set(self, pid, heap=None, files=None):
        lkm_quota.write(lkm_quota.set_command(pid, heap, files))

    def tracked(self) -> set[int]:
        return {r.pid for r in lkm_quota.read()[0]}

    def kills(self) -> list:
        return kills()


class EbpfSide:
    """ebpf/quota.c's quotas, through its map and ring buffer."""

    def __init__(self):
        from toolkit.backends.ebpf_quota import EbpfQuotas
        self.q = EbpfQuotas()

    def set(self, pid, heap=None, files=None):
        self.q.set(pid, heap, files)

    def tracked(self) -> set[int]:
        return set(self.q.entries())

    def kills(self) -> list:
        return self.q.kills(200)


@pytest.fixture(scope="module")
def ebpf_side():
    side = EbpfSide()
    yield side
    side.q.close()


@pytest.fixture(params=["lkm", "ebpf"])
def side(request, module):
    if request.param == "lkm":
        yield LkmSide()
        return
    s = request.getfixturevalue("ebpf_side")
    s.kills()
    for pid in list(s.tracked()):
        s.q.clear(pid)
    yield s
    assert s.q.counts()["dropped"] == 0         # every kill record was delivered


@pytest.mark.parametrize("way", WAYS)
def test_the_descriptor_past_the_quota_kills(side, qhelper, way):
    w = Waiting(str(qhelper), "fd", way)
    side.set(w.p.pid, files=w.ready)            # the next descriptor is one too many
    assert w.p.pid in side.tracked()
    if isinstance(side, LkmSide):
        rows = {r.pid: r for r in lkm_quota.read()[0]}
        assert rows[w.p.pid].files == w.ready and rows[w.p.pid].state == "tracking"
    w.go()
    rc, out = w.finish()
    assert rc == -signal.SIGKILL and "made" not in out, (rc, out)
    (k,) = [r for r in side.kills() if r.tgid == w.p.pid]
    assert k.quota_kind == schema.QUOTA_KINDS["files"] and k.quota == w.ready
    assert k.quota_value == w.ready + MADE.get(way, 1)
    assert w.p.pid not in side.tracked()        # exit leaves no entry


@pytest.mark.parametrize("way", ("open", "pipe", "scm"))
def test_under_the_file_quota_runs_untouched(side, qhelper, way):
    w = Waiting(str(qhelper), "fd", way)
    side.set(w.p.pid, files=w.ready + MADE.get(way, 1))
    w.go()
    rc, out = w.finish()
    assert rc == 0 and "made" in out
    assert not side.kills() and w.p.pid not in side.tracked()


@pytest.mark.parametrize("kind", ("brk", "mmap"))
def test_heap_past_the_quota_kills_with_overshoot_under_one_step(side, qhelper, kind):
    step = STEP_KIB * 1024
    w = Waiting(str(qhelper), "heap", kind, str(STEP_KIB), "8")
    limit = w.ready + 3 * step + step // 2                 # the 4th step crosses it
    side.set(w.p.pid, heap=limit)
    w.go()
    rc, out = w.finish()
    steps = [line for line in out.splitlines() if line.startswith("step")]
    assert rc == -signal.SIGKILL, (rc, out)
    assert len(steps) == 3, out           # the crossing sbrk/mmap returned into SIGKILL
    (k,) = [r for r in side.kills() if r.tgid == w.p.pid]
    assert k.quota_kind == schema.QUOTA_KINDS["heap"] and k.quota == limit
    assert 0 < k.quota_value - limit < step


def test_under_the_heap_quota_runs_untouched(side, qhelper):
    w = Waiting(str(qhelper), "heap", "mmap", str(STEP_KIB), "8")
    side.set(w.p.pid, heap=w.ready + 9 * STEP_KIB * 1024, files=1000)
    w.go()
    rc, out = w.finish()
    assert rc == 0 and out.count("step") == 8
    assert not side.kills()


# each `toolkit quota run --backend ebpf` compiles BCC in a new process: ~40 s under TCG
# on a quiet host, several times that when the host is loaded
CLI_TIMEOUT = 600
# a command that talks to the loaded module only (set, list, clear): seconds under TCG
QUICK_TIMEOUT = 120


def test_cli_run_loads_the_module_it_needs(qhelper):
    """`quota run --backend lkm` in a lab where the module is not loaded loads it and
    says so, as `toolkit watch --backend lkm` does."""
    if lkm.is_loaded():
        lkm.unload()
    cp = subprocess.run([TOOLKIT, "quota", "run", "--backend", "lkm", "--files", "8", "--",
                         str(qhelper), "fds", "2"], stdin=subprocess.DEVNULL,
                        capture_output=True, text=True, timeout=QUICK_TIMEOUT)
    assert cp.returncode == 0 and "fd 2" in cp.stdout, cp
    assert "loaded the toolkit_lkm module" in cp.stderr and lkm.is_loaded(), cp.stderr
    assert "files checked by" in cp.stderr, cp.stderr


@pytest.mark.parametrize("backend", ["lkm", "ebpf"])
def test_cli_run_registers_before_the_first_instruction(module, qhelper, backend):
    # 3 descriptors (stdin, stdout, stderr) at exec: a quota of 3 kills the first open
    cp = subprocess.run([TOOLKIT, "quota", "run", "--backend", backend, "--files", "3", "--",
                         str(qhelper), "fds", "5"], stdin=subprocess.DEVNULL,
                        capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert cp.returncode == 128 + signal.SIGKILL, cp
    assert "fd 1" not in cp.stdout and "killed by SIGKILL" in cp.stderr
    if backend == "ebpf":       # the command starts with 0, 1, 2 only: the 4th kills
        assert "files reached 4 descriptors, quota 3" in cp.stderr, cp.stderr
    cp = subprocess.run([TOOLKIT, "quota", "run", "--backend", backend, "--files", "8",
                         "--heap", "64M", "--",
                         str(qhelper), "fds", "5"], stdin=subprocess.DEVNULL,
                        capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert cp.returncode == 0 and "fd 5" in cp.stdout, cp
    assert not lkm_quota.read()[0]
    # a heap quota far below the toolkit's own (Python's data_vm is tens of MiB): the
    # forked child makes no brk/mmap before its exec, so only the command is measured
    cp = subprocess.run([TOOLKIT, "quota", "run", "--backend", backend, "--heap", "2M", "--",
                         str(qhelper), "heap", "mmap", "64", "4"], input="go\n",
                        capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert cp.returncode == 0 and "step 4" in cp.stdout, cp


def test_cli_set_list_clear(module, qhelper):
    w = Waiting(str(qhelper), "fd", "open")
    try:
        cp = subprocess.run([TOOLKIT, "quota", "set", "--heap", "1G", "--files", "50",
                             str(w.p.pid)], capture_output=True, text=True,
                            timeout=QUICK_TIMEOUT)
        assert cp.returncode == 0, cp
        cp = subprocess.run([TOOLKIT, "quota", "list"], capture_output=True, text=True,
                            timeout=QUICK_TIMEOUT)
        assert cp.returncode == 0 and str(w.p.pid) in cp.stdout and "1073741824" in cp.stdout
        cp = subprocess.run([TOOLKIT, "quota", "clear", str(w.p.pid)],
                            capture_output=True, text=True, timeout=QUICK_TIMEOUT)
        assert cp.returncode == 0 and not lkm_quota.read()[0]
        cp = subprocess.run([TOOLKIT, "quota", "clear", str(w.p.pid)],
                            capture_output=True, text=True, timeout=QUICK_TIMEOUT)
        assert cp.returncode == 2 and "no such process" in cp.stderr
        lkm_quota.write(f"set {w.p.pid} files=50")
        cp = subprocess.run([TOOLKIT, "quota", "reset", "--backend", "lkm"],
                            capture_output=True, text=True, timeout=QUICK_TIMEOUT)
        assert cp.returncode == 0 and not lkm_quota.read()[0], cp
    finally:
        w.go()
        w.finish()


def test_a_reused_pid_is_not_limited(side, qhelper):
    w = Waiting(str(qhelper), "fd", "open")
    pid = w.p.pid
    side.set(pid, files=w.ready)
    w.p.kill()
    w.finish()
    assert pid not in side.tracked()
    # make the next pid be the old one (checkpoint/restore's ns_last_pid), as a
    # process that reuses a tracked pid would get it
    for _ in range(20):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        w2 = Waiting(str(qhelper), "fd", "open")
        if w2.p.pid == pid:
            break
        w2.go()
        w2.finish()
    else:
        pytest.fail(f"could not get pid {pid} again")
    w2.go()
    rc, out = w2.finish()
    assert rc == 0 and "made" in out
    assert not side.kills()


def test_bad_writes_are_refused_and_change_nothing(module, qhelper):
    w = Waiting(str(qhelper), "fd", "open")
    pid = w.p.pid
    missing = 4 * 1024 * 1024 - 7
    cases = {
        errno.EINVAL: ["\n", "set", f"set {pid}", f"set {pid} files=0", f"set {pid} heap=0",
                       f"set {pid} files=-1", f"set {pid} heap=-5", f"set {pid} heap=abc",
                       f"set {pid} heap=99999999999999999999999", f"set {pid} files=2147483648",
                       f"set {pid} bogus=3", f"set {pid} files=3 files=4", f"set {pid} files",
                       f"set -{pid} files=3", f"set {pid}x files=3", "set 0 files=3",
                       "set 1 files=3", "set 2 files=3",               # init, kthreadd
                       f"set {os.getpid()} files=3",                    # the writer itself
                       f"clear {pid} extra", "reset now", "frobnicate", f"set {pid} files=3\0",
                       f"set {pid} files=3\nbogus", "x" * 2000],
        errno.ESRCH: [f"set {missing} files=3", f"clear {pid}",
                      f"set {pid} files=3\nset {missing} files=3"],     # all or nothing
    }
    try:
        for want, writes in cases.items():
            for text in writes:
                fd = os.open(lkm_quota.QUOTA_FILE, os.O_WRONLY)
                try:
                    with pytest.raises(OSError) as e:
                        os.write(fd, text.encode())
                    assert e.value.errno == want, (text, e.value)
                finally:
                    os.close(fd)
                assert lkm_quota.read()[0] == [], text
        # random token soup: the only pid it can name is the helper's (or 0)
        rng = random.Random(12)
        tokens = ["set", "clear", "reset", str(pid), "heap=", "files=", "0", "-", "x", "=",
                  " ", " ", "\n", "\t", "99999999999999999999", "K"]
        for _ in range(400):
            text = "".join(rng.choice(tokens) for _ in range(rng.randrange(1, 12)))
            fd = os.open(lkm_quota.QUOTA_FILE, os.O_WRONLY)
            try:
                os.write(fd, text.encode())
            except OSError as e:
                assert e.errno in (errno.EINVAL, errno.ESRCH), (text, e)
            finally:
                os.close(fd)
            assert {r.pid for r in lkm_quota.read()[0]} <= {pid}, text
        lkm_quota.write("reset")
        assert lkm_quota.read()[0] == []
        # root only
        cp = run_as(4243, ["cat", str(lkm_quota.QUOTA_FILE)])
        assert cp.returncode != 0 and "Permission denied" in cp.stderr
    finally:
        w.go()
        w.finish()


def test_cli_bad_input(module):
    for args, text in ((["set", "--files", "3", "1"], "pid 1"),
                       (["set", "--files", "3", "2"], "kernel thread"),
                       (["set", "--files", "3", "4194000"], "no process"),
                       (["set", "--heap", "0", "999"], "out of range"),
                       (["set", "--heap", "12Q", "999"], "not a size"),
                       (["set", "--files", "x", "999"], "not a whole number"),
                       (["set", "999"], "no quota given"),
                       (["run", "--files", "3", "--", "/nonexistent/cmd"], "")):
        cp = subprocess.run([TOOLKIT, "quota", *args], capture_output=True, text=True,
                            timeout=QUICK_TIMEOUT)
        assert cp.returncode in (2, 127), (args, cp)
        assert text in cp.stderr and "Traceback" not in cp.stderr, (args, cp.stderr)


def test_set_and_clear_racing_the_targets_exit(module, qhelper):
    """50 set/clear pairs against targets that exit at once; dmesg checked by the fixture."""
    errors = []
    for i in range(50):
        target = subprocess.Popen([str(qhelper), "fds", str(i % 5)],
                                  stdout=subprocess.DEVNULL)

        def hammer(pid=target.pid):
            for cmd in (f"set {pid} files=100 heap={1 << 30}", f"clear {pid}",
                        f"set {pid} files=2"):
                try:
                    lkm_quota.write(cmd)
                except quota.QuotaError as e:
                    if "no such process" not in str(e):
                        errors.append(str(e))
        t = threading.Thread(target=hammer)
        t.start()
        target.wait(timeout=30)
        t.join(30)
        assert not t.is_alive(), "quota writes still blocked after 30 s"
    time.sleep(0.2)
    assert not errors
    assert lkm_quota.read()[0] == []            # every entry went with its process
