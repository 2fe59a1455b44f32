"""Quotas on the CO-RE engine (ebpf/core/quota.bpf.o), private (`quota run`) and pinned
in bpffs (`quota set|list|clear|reset --backend ebpf`), against the running kernel:
natively here with the tracepoint hook set (no kprobes), in the lab with the kprobe set
(the one test not marked native_only).

Every test that can pin goes through the `pins` fixture, which unpins in finally and
checks that nothing of ours is left in bpffs (and that bpffs is mounted again only if it
was before).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "kernel"))
import workload  # noqa: E402
from bounded import Waiting, readline  # noqa: E402

from toolkit import schema  # noqa: E402
from toolkit.backends import core_pins, engines, libbpf, quota_pins  # noqa: E402

pytestmark = pytest.mark.core
TOOLKIT = str(Path(sys.executable).parent / "toolkit")
WAYS = ("open", "dup", "dup2", "dup3", "fcntl", "pipe", "socket", "accept", "eventfd",
        "epoll", "memfd", "scm")
MADE = {"pipe": 2}          # descriptors one call makes
STEP = 1024 * 1024
# a toolkit command start-up: well under a second natively, seconds under TCG
CLI_TIMEOUT = 240


@pytest.fixture(autouse=True)
def _needs_core():
    why = engines.core_blocker() or (None if os.geteuid() == 0 else "not root")
    if why:
        pytest.skip(f"the CO-RE engine cannot run here: {why}")


@pytest.fixture(scope="module")
def qhelper():
    return workload.helper(source=Path(__file__).parent / "kernel" / "tk_quota.c")


def _clean() -> None:
    core_pins.unpin_everything()


@pytest.fixture
def pins():
    """Nothing pinned before; everything unpinned after (and checked)."""
    was_mounted = quota_pins.bpffs_mounted()
    _clean()
    try:
        yield
    finally:
        _clean()
        assert not quota_pins.PIN_PARENT.exists(), "pins left in bpffs"
        if not was_mounted and quota_pins.bpffs_mounted() and quota_pins.bpffs_empty():
            quota_pins.umount_bpffs()


def tk(*args, timeout=CLI_TIMEOUT, **kw):
    return subprocess.run([TOOLKIT, *args], capture_output=True, text=True, timeout=timeout,
                          **kw)


def listed(*extra) -> dict[int, dict]:
    cp = tk("quota", "list", "--backend", "ebpf", "--json", *extra)
    assert cp.returncode == 0 and "Traceback" not in cp.stderr, cp
    return {d["pid"]: d for d in map(json.loads, cp.stdout.splitlines())}


# ---------------------------------------------------------------- the lab's one test

def test_pinned_quota_set_listed_and_killing_in_three_processes(pins, qhelper):
    """set by one command, listed by another, the target killed at its (N+1)-th
    descriptor in its own life, the kill a `kill` record in the eBPF backend's stream
    (what `toolkit watch --backend ebpf` prints: BCC in the lab, the CO-RE engine
    natively, as --engine auto picks); reset leaves no pin. Natively the tracepoint
    hooks, in the lab the kprobe hooks."""
    from toolkit.backends import get_backend
    w = Waiting(str(qhelper), "fd", "open")
    watch = None
    try:
        cp = tk("quota", "set", "--backend", "ebpf", "--files", str(w.ready), str(w.p.pid))
        assert cp.returncode == 0 and f"files={w.ready}" in cp.stdout, cp
        want = "kprobe hooks" if quota_pins.Path(
            "/sys/bus/event_source/devices/kprobe").exists() else "tracepoint hooks"
        assert "pinned it under /sys/fs/bpf/toolkit/quota" in cp.stderr and want in cp.stderr
        assert "files checked by" in cp.stderr, cp.stderr
        row = listed()[w.p.pid]
        assert row["files_quota"] == w.ready and row["state"] == "tracking"
        assert row["start_ns"] > 0 and row["files"] == w.ready
        watch = get_backend("ebpf")     # in the lab BCC reuses this run's compile
        watch.start()
        w.go()
        rc, out = w.finish()
        assert rc == -signal.SIGKILL and "made" not in out, (rc, out)
        kill = _kill_record(watch, w.p.pid)
        assert (kill.quota, kill.quota_value) == (w.ready, w.ready + 1), kill
        assert kill.quota_kind == schema.QUOTA_KINDS["files"]
        st = watch.stats()
        assert st.events["kill"].delivered >= 1 and st.extra["kill_records_dropped"] == 0
        side = core_pins.PinnedQuotas()         # the exit hook removed the entry (no
        try:                                    # prune: that would hide a missed exit)
            assert w.p.pid not in side._map.entries(prune=False)
        finally:
            side.close()
    finally:
        w.kill()
        if watch:
            watch.stop()
    cp = tk("quota", "reset", "--backend", "ebpf")
    assert cp.returncode == 0 and "link_" in cp.stdout and "tk_quotas" in cp.stdout, cp
    assert not quota_pins.PIN_PARENT.exists()


def _kill_record(backend, tgid: int, timeout: float = 30):
    """The backend's `kill` record of `tgid`, read within `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in backend.read(0.2):
            if r.event == "kill" and r.tgid == tgid:
                return r
    raise AssertionError(f"no kill record of {tgid} within {timeout:.0f} s")


# ---------------------------------------------------------------- native only

@pytest.mark.native_only
def test_set_list_clear_reset_through_the_cli(pins, qhelper):
    w = Waiting(str(qhelper), "fd", "open")
    try:
        pid = str(w.p.pid)
        assert tk("quota", "set", "--backend", "ebpf", "--heap", "1G", pid).returncode == 0
        cp = tk("quota", "set", "--backend", "ebpf", "--files", "50", pid)
        assert cp.returncode == 0 and "loaded" not in cp.stderr, cp    # loaded once
        row = listed()[w.p.pid]
        assert (row["heap_quota"], row["files_quota"]) == (1 << 30, 50)  # keys kept
        assert row["comm"].startswith("tk_quota") and row["heap"] > 0
        cp = tk("quota", "list", "--backend", "ebpf")
        assert cp.returncode == 0 and pid in cp.stdout and "1073741824" in cp.stdout, cp
        assert tk("quota", "clear", "--backend", "ebpf", pid).returncode == 0
        assert w.p.pid not in listed()
        cp = tk("quota", "clear", "--backend", "ebpf", pid)
        assert cp.returncode == 2 and "no such process" in cp.stderr, cp
        assert sorted(os.listdir(quota_pins.PIN_DIR)) == sorted(
            [f"link_rt_{tp}" for _, tp, _ in schema.QUOTA_TRACEPOINTS]
            + list(quota_pins.MAPS))
        assert oct(quota_pins.PIN_DIR.stat().st_mode & 0o777) == "0o700"
        cp = tk("quota", "reset", "--backend", "ebpf")
        assert cp.returncode == 0 and "unpinned" in cp.stdout, cp
        assert not quota_pins.PIN_PARENT.exists()
        cp = tk("quota", "reset", "--backend", "ebpf")
        assert cp.returncode == 0 and "nothing was pinned" in cp.stdout, cp
        w.go()
        assert w.finish()[0] == 0                   # no quota left on it
    finally:
        w.kill()


@pytest.fixture(scope="module")
def private():
    from toolkit.backends.core_quota import CoreQuotas
    q = CoreQuotas(exclusive=True)
    yield q
    q.close()


@pytest.fixture
def side(private):
    private.kills()
    private.reset()
    yield private
    assert private.counts()["dropped"] == 0


@pytest.mark.native_only
@pytest.mark.parametrize("way", WAYS)
def test_the_descriptor_past_the_quota_kills(side, qhelper, way):
    w = Waiting(str(qhelper), "fd", way)
    try:
        side.set(w.p.pid, files=w.ready)
        w.go()
        rc, out = w.finish()
    finally:
        w.kill()
    assert rc == -signal.SIGKILL and "made" not in out, (rc, out)
    (k,) = [r for r in side.kills(500) if r.tgid == w.p.pid]
    assert k.quota_kind == schema.QUOTA_KINDS["files"] and k.quota == w.ready
    assert k.quota_value == w.ready + MADE.get(way, 1)
    assert w.p.pid not in side.entries()


@pytest.mark.native_only
@pytest.mark.parametrize("way", ("open", "pipe", "scm"))
def test_under_the_file_quota_runs_untouched(side, qhelper, way):
    w = Waiting(str(qhelper), "fd", way)
    try:
        side.set(w.p.pid, files=w.ready + MADE.get(way, 1))
        w.go()
        rc, out = w.finish()
    finally:
        w.kill()
    assert rc == 0 and "made" in out
    assert not side.kills(100)


@pytest.mark.native_only
@pytest.mark.parametrize("kind", ("brk", "mmap"))
def test_heap_past_the_quota_kills_with_overshoot_under_one_step(side, qhelper, kind):
    w = Waiting(str(qhelper), "heap", kind, str(STEP // 1024), "8")
    limit = w.ready + 3 * STEP + STEP // 2                 # the 4th step crosses it
    try:
        side.set(w.p.pid, heap=limit)
        w.go()
        rc, out = w.finish()
    finally:
        w.kill()
    assert rc == -signal.SIGKILL, (rc, out)
    assert out.count("step") == 3, out     # the crossing call returned into SIGKILL
    (k,) = [r for r in side.kills(500) if r.tgid == w.p.pid]
    assert k.quota_kind == schema.QUOTA_KINDS["heap"] and k.quota == limit
    assert 0 < k.quota_value - limit < STEP


@pytest.mark.native_only
def test_a_reused_pid_is_not_limited(pins, qhelper):
    w = Waiting(str(qhelper), "fd", "open")
    pid = w.p.pid
    cp = tk("quota", "set", "--backend", "ebpf", "--files", str(w.ready), str(pid))
    assert cp.returncode == 0, cp
    w.kill()
    for _ in range(20):     # the next pid made the old one (ns_last_pid)
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        w2 = Waiting(str(qhelper), "fd", "open")
        if w2.p.pid == pid:
            break
        w2.kill()
    else:
        pytest.fail(f"could not get pid {pid} again")
    try:
        w2.go()
        rc, out = w2.finish()
    finally:
        w2.kill()
    assert rc == 0 and "made" in out, (rc, out)
    assert pid not in listed()


@pytest.mark.native_only
def test_set_and_clear_racing_the_targets_exit(pins, qhelper):
    """50 set/clear/set against targets that exit at once: every entry goes with its
    process (the exit hook, or the prune of a set that lost the race)."""
    side = core_pins.PinnedQuotas(load=True)
    try:
        errors = []
        for i in range(50):
            target = subprocess.Popen([str(qhelper), "fds", str(i % 5)],
                                      stdout=subprocess.DEVNULL)
            for heap, files in ((1 << 30, 100), (None, None), (None, 2)):
                try:
                    if files:
                        side.set(target.pid, heap, files)
                    else:
                        side.clear(target.pid)
                except Exception as e:      # noqa: BLE001  (checked below)
                    if "no such process" not in str(e) and "no process" not in str(e):
                        errors.append(repr(e))
            target.wait(timeout=30)
        assert not errors, errors[:5]
        assert side.entries() == {}
    finally:
        side.close()


@pytest.mark.native_only
def test_quota_run_on_the_core_engine_kills_and_says_what_it_covers(qhelper):
    cp = tk("quota", "run", "--backend", "ebpf", "--engine", "core", "--files", "3", "--",
            str(qhelper), "fds", "5", stdin=subprocess.DEVNULL)
    assert cp.returncode == 128 + signal.SIGKILL, cp
    assert "files reached 4 descriptors, quota 3" in cp.stderr, cp.stderr
    assert "fd 1" not in cp.stdout, cp.stdout       # killed at its first open, not before
    assert "files checked by" in cp.stderr and "loaded quota.bpf.o" in cp.stderr
    cp = tk("quota", "run", "--backend", "ebpf", "--engine", "core", "--heap", "2M", "--",
            str(qhelper), "heap", "mmap", "1024", "4", input="go\n")
    assert cp.returncode == 128 + signal.SIGKILL and "ready" in cp.stdout, cp
    assert "heap reached" in cp.stderr and "heap checked by" in cp.stderr, cp.stderr
    assert not quota_pins.PIN_PARENT.exists()           # run pins nothing


@pytest.mark.native_only
def test_watch_shows_the_kill_of_a_pinned_quota(pins, qhelper):
    w = Waiting(str(qhelper), "fd", "pipe")
    watch = None
    try:
        cp = tk("quota", "set", "--backend", "ebpf", "--files", str(w.ready), str(w.p.pid))
        assert cp.returncode == 0, cp
        watch = subprocess.Popen([TOOLKIT, "watch", "--backend", "ebpf", "--engine", "core",
                                  "--format", "jsonl", "--duration", "30"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while "attached" not in readline(watch.stderr, what="watch's attach line",
                                         timeout=max(1, deadline - time.monotonic())):
            pass
        w.go()
        assert w.finish()[0] == -signal.SIGKILL
        deadline = time.monotonic() + 20
        while True:
            rec = json.loads(readline(watch.stdout, what="watch's kill record",
                                      timeout=max(1, deadline - time.monotonic())))
            if rec.get("event") == "kill" and rec["tgid"] == w.p.pid:
                break
        assert rec["quota"] == w.ready and rec["quota_value"] == w.ready + 2
        assert rec["quota_kind"] == schema.QUOTA_KINDS["files"]
        watch.send_signal(signal.SIGINT)                # the closing stats line
        out, err = watch.communicate(timeout=60)
        stats = next(json.loads(ln)["stats"] for ln in (out + err).splitlines()
                     if ln.startswith('{"stats"'))
        assert stats["events"]["kill"]["delivered"] >= 1, stats["events"]["kill"]
        assert stats["extra"]["kill_records_dropped"] == 0
    finally:
        w.kill()
        if watch:
            watch.kill()
            watch.communicate(timeout=30)


@pytest.mark.native_only
@pytest.mark.parametrize("args,msg", [
    (["set", "--backend", "ebpf", "--files", "3", "1"], "pid 1"),
    (["set", "--backend", "ebpf", "--files", "3", "2"], "kernel thread"),
    (["set", "--backend", "ebpf", "--files", "3", "4194000"], "no process"),
    (["set", "--backend", "ebpf", "--heap", "0", "999"], "out of range"),
    (["set", "--backend", "ebpf", "--heap", "12Q", "999"], "not a size"),
    (["set", "--backend", "ebpf", "--files", "x", "999"], "not a whole number"),
    (["set", "--backend", "ebpf", "999"], "no quota given"),
    (["set", "--backend", "ebpf", "--engine", "bcc", "--files", "3", "SELF"],
     "cannot be pinned"),
    (["set", "--backend", "ebpf", "--files", "8192", "SELF"], "count up to 8191"),
    (["set", "--backend", "ps", "--files", "3", "SELF"], "Invalid value for '--backend'"),
    (["set", "--backend", "ebpf", "--engine", "gcc", "--files", "3", "SELF"],
     "Invalid value for '--engine'"),
    (["clear", "--backend", "ebpf", "0"], "not a process id"),
    (["clear", "--backend", "ebpf", "SELF"], "no eBPF quotas are pinned"),
    (["clear", "--backend", "ebpf", "x"], "is not a valid integer"),
    (["list", "--backend", "ebpf", "--engine", "bcc"], "cannot be pinned"),
    (["reset", "--backend", "ebpf", "extra"], "unexpected extra argument"),
    (["run", "--backend", "ebpf", "--engine", "core", "--files", "3", "--",
      "/nonexistent/cmd"], "/nonexistent/cmd"),
])
def test_bad_input_to_every_command(pins, args, msg):
    me = subprocess.Popen(["sleep", "30"])          # a live process that is not us
    try:
        cp = tk("quota", *[str(me.pid) if a == "SELF" else a for a in args])
    finally:
        me.kill()
        me.wait(timeout=10)
    assert cp.returncode in (2, 127), (args, cp)
    assert msg in cp.stderr and "Traceback" not in cp.stderr, (args, cp.stderr)
    assert not quota_pins.PIN_PARENT.exists() or quota_pins.is_pinned()


def _pin_foreign(marks_ok: bool) -> None:
    """Pins of another layout at our path: a marker of the wrong magic, or the right
    marker beside a tk_quotas of the wrong shape (lifecycle.bpf.o's per-CPU counters)."""
    if not quota_pins.bpffs_mounted():
        quota_pins.mount_bpffs()
    quota_pins._mkdir(quota_pins.PIN_PARENT)
    quota_pins._mkdir(quota_pins.PIN_DIR)
    from toolkit.backends.core_quota import OBJ
    from toolkit.backends.ebpf_core import LIFECYCLE_OBJ
    life, quota = libbpf.Object(str(LIFECYCLE_OBJ)), libbpf.Object(str(OBJ))
    try:
        for obj in (life, quota):
            for prog in obj.programs():
                prog.set_autoload(False)
            obj.load()
        marks = quota.map("tk_quota_marks")
        if marks_ok:
            for name, value in (("magic", schema.QUOTA_MAGIC),
                                ("layout", schema.QUOTA_LAYOUT),
                                ("value_size", schema.QUOTA_VALUE_SIZE), ("hooks", 2)):
                marks.update_u64(schema.QUOTA_MARKS[name], value)
        else:
            marks.update_u64(schema.QUOTA_MARKS["magic"], 0x1234)
        libbpf.pin(marks.fd, str(quota_pins.PIN_DIR / "tk_quota_marks"))
        libbpf.pin(life.map("tk_counters").fd, str(quota_pins.PIN_DIR / "tk_quotas"))
    finally:
        life.close()
        quota.close()


@pytest.mark.native_only
@pytest.mark.parametrize("marks_ok", [False, True])
def test_a_foreign_pinned_layout_is_refused_and_reset_removes_it(pins, marks_ok):
    _pin_foreign(marks_ok)
    me = subprocess.Popen(["sleep", "30"])
    try:
        for args in (["list"], ["set", "--files", "5", str(me.pid)], ["clear", str(me.pid)]):
            cp = tk("quota", *args, "--backend", "ebpf")
            assert cp.returncode == 2 and "Traceback" not in cp.stderr, (args, cp)
            assert "layout" in cp.stderr and "quota reset --backend ebpf" in cp.stderr, cp
    finally:
        me.kill()
        me.wait(timeout=10)
    cp = tk("quota", "reset", "--backend", "ebpf")
    assert cp.returncode == 0 and "tk_quotas" in cp.stdout, cp
    assert not quota_pins.PIN_PARENT.exists()


@pytest.mark.native_only
def test_a_failed_set_unpins_what_it_pinned(pins, monkeypatch):
    """The last step of a set (the rename into place) fails: nothing stays pinned."""
    def fail(src, dst):
        raise OSError(5, "Input/output error (test)")
    monkeypatch.setattr(core_pins.os, "rename", fail)
    with pytest.raises(OSError):
        core_pins.load_and_pin()
    monkeypatch.undo()
    assert not quota_pins.PIN_PARENT.exists()


@pytest.mark.native_only
def test_a_killed_sets_leftovers_are_removed_by_the_next(pins, qhelper):
    if not quota_pins.bpffs_mounted():
        quota_pins.mount_bpffs()
    quota_pins._mkdir(quota_pins.PIN_PARENT)
    dead = subprocess.Popen(["true"])
    dead.wait(timeout=10)
    stale = quota_pins.PIN_PARENT / f"{quota_pins.NEW_PREFIX}{dead.pid}"
    quota_pins._mkdir(stale)
    from toolkit.backends.core_quota import OBJ
    obj = libbpf.Object(str(OBJ))
    try:
        for prog in obj.programs():
            prog.set_autoload(False)
        obj.load()
        libbpf.pin(obj.map("tk_quotas").fd, str(stale / "tk_quotas"))
    finally:
        obj.close()
    w = Waiting(str(qhelper), "fd", "open")
    try:
        cp = tk("quota", "set", "--backend", "ebpf", "--files", "100", str(w.p.pid))
        assert cp.returncode == 0, cp
        assert not stale.exists() and quota_pins.PIN_DIR.is_dir()
    finally:
        w.kill()
