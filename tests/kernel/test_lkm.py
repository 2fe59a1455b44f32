"""The kprobe module itself, in the lab: lifecycle, control file, procfs files."""
from __future__ import annotations

import errno
import json
import os
import random
import re
import select
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402
from bounded import readline  # noqa: E402

from toolkit import paths, schema  # noqa: E402
from toolkit.backends import lkm  # noqa: E402
from toolkit.backends.base import BackendError  # noqa: E402
from toolkit.backends.lkm import LkmBackend  # noqa: E402

pytestmark = pytest.mark.kernel

UID = 4243
EVENTS = lkm.PROC_DIR / "events"
DMESG_BAD = re.compile(r"BUG|WARNING|Oops|cut here|general protection|list_del corruption|"
                       r"UBSAN|refcount_t|lockdep|soft lockup|hung_task|blocked for more than|"
                       r"Call Trace|RIP:")


def ensure_loaded(**params):
    if lkm.is_loaded():
        have = lkm.loaded_params()
        if all(have.get(k) == v for k, v in params.items()):
            return
        lkm.unload()
    lkm.load(**params)


def dmesg_lines() -> list[str]:
    return subprocess.run(["dmesg"], capture_output=True, text=True,
                          timeout=30).stdout.splitlines()


def run_as(uid, args, **kw):
    kw.setdefault("timeout", 120)
    return subprocess.run(args, user=uid, group=uid, extra_groups=[], cwd="/",
                          capture_output=True, text=True, **kw)


def read_all_nonblocking(size: int = 65536) -> bytes:
    fd = os.open(EVENTS, os.O_RDONLY | os.O_NONBLOCK)
    chunks = []
    try:
        while True:
            try:
                data = os.read(fd, size)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(fd)
    return b"".join(chunks)


@pytest.fixture
def helper(tmp_path_factory):
    return workload.helper()


@pytest.fixture
def loaded():
    ensure_loaded(ring_size=16384, proc_gid=-1)
    lkm.control("uid off", "ppid off", "events all", "clear", "reset")
    yield
    if lkm.is_loaded():
        lkm.control("uid off", "ppid off", "events all")


# ---------------------------------------------------------------- build / load

def test_build_matches_running_kernel():
    ko = lkm.build()
    data = ko.read_bytes()
    assert lkm.vermagic(data).split()[0] == os.uname().release
    assert b"parm=ring_size:" in data and b"parm=proc_gid:" in data
    assert b"license=GPL" in data


def test_load_unload_reload_and_permissions():
    lkm.unload()
    assert not lkm.is_loaded() and not lkm.PROC_DIR.exists()
    lkm.load(ring_size=32)
    assert lkm.read_stats().ring_size == 32
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in lkm.PROC_DIR.iterdir()}
    assert modes == {"events": 0o400, "processes": 0o400, "meminfo": 0o400, "stats": 0o400,
                     "control": 0o200, "quota": 0o600, "vm": 0o600}
    assert stat.S_IMODE(lkm.PROC_DIR.stat().st_mode) == 0o500
    lkm.unload()
    lkm.load()
    assert lkm.read_stats().ring_size == 16384
    assert lkm.loaded_params() == {"ring_size": 16384, "proc_gid": -1}
    # a non-root user cannot read anything by default
    assert run_as(UID, ["cat", str(lkm.PROC_DIR / "stats")]).returncode != 0
    lkm.unload()


def test_bad_parameters_fail_cleanly():
    lkm.unload()
    with pytest.raises(BackendError):
        lkm.load(ring_size=8)
    assert not lkm.is_loaded()
    assert any("ring_size 8 is out of range" in line for line in dmesg_lines()[-20:])
    with pytest.raises(BackendError):
        lkm.load(ring_size=2_000_000)
    assert not lkm.is_loaded()


def test_proc_gid_lets_a_group_read():
    lkm.unload()
    lkm.load(proc_gid=UID)
    try:
        st = (lkm.PROC_DIR / "stats").stat()
        assert stat.S_IMODE(st.st_mode) == 0o440 and st.st_gid == UID
        cp = run_as(UID, ["cat", str(lkm.PROC_DIR / "stats")])
        assert cp.returncode == 0 and f"record_version {schema.RECORD_VERSION}" in cp.stdout
        assert run_as(UID + 1, ["cat", str(lkm.PROC_DIR / "stats")]).returncode != 0
        # control and quota stay root-only
        assert stat.S_IMODE((lkm.PROC_DIR / "control").stat().st_mode) == 0o200
        assert stat.S_IMODE((lkm.PROC_DIR / "quota").stat().st_mode) == 0o600
        assert run_as(UID, ["sh", "-c", f"echo reset > {lkm.PROC_DIR}/control"]).returncode
    finally:
        lkm.unload()


# ---------------------------------------------------------------- control

def write_control(data: bytes) -> None:
    fd = os.open(lkm.PROC_DIR / "control", os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def settings():
    s = lkm.read_stats()
    return s.extra["uid_filter"], s.extra["events"]


def test_control_rejects_garbage_and_applies_all_or_nothing(loaded):
    lkm.control("uid 1234", "events fork,exit")
    before = settings()
    assert before == (1234, ["fork", "exit"])
    rng = random.Random(42)
    bad = [rng.randbytes(rng.randint(1, 256)) for _ in range(30)]
    bad += [
        b"x" * 300,                                 # overlong
        b"uid 5\n" + b"\n" * 300,                   # valid but overlong
        b"uid 5\nbogus\n",                          # half valid
        b"uid 5\nevents fork,nope\n",
        b"events exec\nuid -3\n",
        b"uid 4294967295", b"uid 4294967296", b"uid", b"uid 5 6", b"uid 0x10",
        b"events", b"events fork,,exit", b"events FORK", b"reset now", b"clear 1",
        b"uid 5\0", b"\n\n\n", b"   ", b"uid 1\n" * 17,   # 17 commands: too many
        b"ppid 0", b"ppid -1", b"ppid 4194305", b"ppid x", b"ppid", b"ppid 5\nbogus",
    ]
    for data in bad:
        with pytest.raises(OSError) as ei:
            write_control(data)
        assert ei.value.errno == errno.EINVAL, data
        assert settings() == before, data
    # still works afterwards, several commands in one write
    write_control(b"uid 7\nevents exec,clone\n")
    assert settings() == (7, ["clone", "exec"])
    write_control(b"  events all  \n\nuid off\nreset\nclear")
    assert settings() == (None, ["fork", "clone", "exec", "exit", "kill"])
    write_control(b"events none")
    assert settings() == (None, [])
    write_control(b"uid 0")     # root's uid is a filter, not "off"
    assert settings() == (0, [])
    write_control(b"ppid 4194304")
    assert lkm.read_stats().extra["ppid_filter"] == 4194304
    write_control(b"ppid off\nevents all")
    assert lkm.read_stats().extra["ppid_filter"] is None


# ---------------------------------------------------------------- events

def test_uid_filter(loaded, helper):
    lkm.control(f"uid {UID}", "clear", "reset")
    assert run_as(UID, [str(helper), "forks", "20"]).returncode == 0
    subprocess.run(["/bin/true"], check=True, timeout=30)                  # root: filtered
    recs = lkm.parse_events(read_all_nonblocking().decode())
    st = lkm.read_stats()
    assert recs and all(r.uid == UID for r in recs)
    ev = st.events
    assert ev["fork"].delivered == 20 and ev["fork"].filtered >= 1
    assert ev["exec"].delivered == 1 and ev["exit"].delivered == 21
    assert len(recs) == sum(c.delivered for c in ev.values())
    for c in ev.values():
        assert c.seen == c.filtered + c.delivered + c.dropped


def test_exec_fires_once_per_successful_execve_including_scripts(loaded, tmp_path):
    script = Path("/tmp/tk-script.sh")
    script.write_text("#!/bin/sh\nexit 3\n")
    script.chmod(0o755)
    lkm.control(f"uid {UID}", "clear", "reset")
    assert run_as(UID, [str(script)]).returncode == 3
    with pytest.raises(FileNotFoundError):
        run_as(UID, ["/nonexistent-binary"])
    recs = lkm.parse_events(read_all_nonblocking().decode())
    execs = [r for r in recs if r.event == "exec"]
    assert [(r.comm) for r in execs] == ["tk-script.sh"]
    (x,) = execs
    (e,) = [r for r in recs if r.event == "exit" and r.pid == x.pid]
    assert e.exit_code == 3 << 8 and e.comm == "tk-script.sh"


def test_events_beyond_one_page_two_readers_no_duplicates(loaded, helper):
    lkm.control(f"uid {UID}", "clear", "reset")
    assert run_as(UID, [str(helper), "forks", "300"]).returncode == 0
    expected = 300 + 301 + 1
    assert lkm.read_stats().ring_fill == expected
    out: dict[int, bytes] = {}
    threads = [threading.Thread(target=lambda k, sz: out.__setitem__(k, read_all_nonblocking(sz)),
                                args=(k, sz)) for k, sz in ((0, 97), (1, 4096))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    text = out[0].decode() + out[1].decode()
    assert len(out[0]) + len(out[1]) > 4 * 4096
    recs = lkm.parse_events(text)
    assert len(recs) == expected
    assert len({(r.type, r.pid, r.ts_ns) for r in recs}) == expected
    st = lkm.read_stats()
    assert st.read_lost == 0 and st.ring_fill == 0
    assert sum(c.delivered for c in st.events.values()) == expected
    for line in text.splitlines():       # byte-exact with the Python formatter
        assert schema.format_line(schema.parse_line(line)) == line


def test_unread_records_count_as_read_lost(loaded, helper):
    lkm.control(f"uid {UID}", "clear", "reset")
    assert run_as(UID, [str(helper), "forks", "50"]).returncode == 0
    fd = os.open(EVENTS, os.O_RDONLY | os.O_NONBLOCK)
    partial = os.read(fd, 10)             # part of the first line only
    os.close(fd)
    assert len(partial) == 10
    st = lkm.read_stats()
    delivered = sum(c.delivered for c in st.events.values())
    assert delivered == 50 + 51 + 1
    assert st.read_lost + st.ring_fill == delivered   # nothing silently lost
    assert st.read_lost > 0


def test_clear_counts_cleared_not_dropped(loaded, helper):
    lkm.control(f"uid {UID}", "clear", "reset")
    assert run_as(UID, [str(helper), "forks", "10"]).returncode == 0
    lkm.control("clear")
    st = lkm.read_stats()
    assert st.extra["cleared"] == 10 + 11 + 1 and st.ring_fill == 0 and st.dropped == 0
    assert read_all_nonblocking() == b""


def test_nonblocking_blocking_and_poll(loaded):
    lkm.control("events none", "clear")
    fd = os.open(EVENTS, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(BlockingIOError):
            os.read(fd, 4096)
        p = select.poll()
        p.register(fd, select.POLLIN)
        assert p.poll(200) == []
        # a blocking reader waits until a record arrives
        got = []
        bfd = os.open(EVENTS, os.O_RDONLY)
        t = threading.Thread(target=lambda: got.append(os.read(bfd, 65536)))
        t.start()
        time.sleep(1.0)
        assert t.is_alive() and not got
        lkm.control("events exec")
        subprocess.run(["/bin/true"], check=True, timeout=30)
        t.join(20)
        os.close(bfd)
        assert got and b" true\n" in got[0]
        subprocess.run(["/bin/true"], check=True, timeout=30)
        assert p.poll(10_000)
        assert b" true\n" in os.read(fd, 65536)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- processes / meminfo

def test_processes_lists_10000_children_completely(loaded, helper):
    # 10,000 live children (~1 min under TCG): the snapshot-at-open file must list every
    # one of them, across many reads, with no duplicates
    n = 10000
    proc = subprocess.Popen([str(helper), "spawn", str(n)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert readline(proc.stdout, 300, f"{n} children").strip() == f"ready {n}"
        text = (lkm.PROC_DIR / "processes").read_text()
        procs = lkm.parse_processes(text)
        kids = [p for p in procs if p.ppid == proc.pid]
        assert len(kids) == n
        assert len({p.pid for p in procs}) == len(procs)
        assert len(procs) >= n + 2
        me = [p for p in procs if p.pid == os.getpid()]
        assert me and me[0].comm == Path("/proc/self/comm").read_text().strip()
        assert me[0].rss_kib > 0 and me[0].total_vm_kib >= me[0].rss_kib
        for k in kids:
            assert k.state in "SR" and k.uid == 0 and k.threads == 1 and k.rss_kib > 0
        assert len(text) > 64 * 4096
    finally:
        proc.stdin.close()
        proc.wait(600)


def test_snapshot_and_meminfo(loaded):
    b = LkmBackend(keep_loaded=True)
    b.start()
    try:
        snap = b.snapshot()
    finally:
        b.stop()
    assert snap.source["meminfo"] == "kernel (si_meminfo)"
    m = snap.meminfo
    proc = {ln.split(":")[0]: int(ln.split()[1])
            for ln in Path("/proc/meminfo").read_text().splitlines()}
    assert m.total_kib == proc["MemTotal"]
    assert abs(m.available_kib - proc["MemAvailable"]) < 0.05 * proc["MemTotal"]
    assert m.used_kib + m.free_kib + m.buffers_kib + m.cached_kib == m.total_kib
    assert any(p.pid == os.getpid() for p in snap.processes)
    assert not any(p.pid == 2 for p in snap.processes)        # kthreadd: no mm


# ---------------------------------------------------------------- lifecycle

READER = textwrap.dedent("""
    import os, select, sys, threading, time
    EV = "/proc/toolkit/events"
    stop = sys.argv[1]
    counts = {"blocking": 0, "poll": 0, "stats": 0}

    # open the events file again and again (the module comes and goes) until the
    # stop file appears; use(fd) reads until EOF or an error
    def reopening(flags, use):
        while not os.path.exists(stop):
            try:
                fd = os.open(EV, flags)
            except OSError:
                time.sleep(0.01); continue
            try:
                use(fd)
            except OSError:
                pass
            finally:
                os.close(fd)

    def read_blocking(fd):
        while os.read(fd, 65536):
            counts["blocking"] += 1

    def read_polling(fd):
        p = select.poll(); p.register(fd, select.POLLIN)
        for _ in range(50):
            if p.poll(100):
                if not os.read(fd, 4096):
                    break
                counts["poll"] += 1

    def blocking():
        reopening(os.O_RDONLY, read_blocking)

    def poller():
        reopening(os.O_RDONLY | os.O_NONBLOCK, read_polling)

    def stats():
        while not os.path.exists(stop):
            try:
                open("/proc/toolkit/stats").read(); open("/proc/toolkit/processes").read()
                counts["stats"] += 1
            except OSError:
                time.sleep(0.01)

    ts = [threading.Thread(target=f) for f in (blocking, poller, stats)]
    for t in ts: t.start()
    for t in ts: t.join()
    print(counts)
""")


def test_load_unload_cycles_during_fork_storm_with_readers(helper, tmp_path):
    lkm.unload()
    mark = len(dmesg_lines())
    stop = tmp_path / "stop"
    storm = subprocess.Popen([str(helper), "storm", "3600"], stdout=subprocess.DEVNULL)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(stop)],
                              stdout=subprocess.PIPE, text=True)
    try:
        for i in range(20):
            lkm.load(ring_size=64 if i % 2 else 16384)
            time.sleep(0.3)
            st = lkm.read_stats()
            for c in st.events.values():
                assert c.seen == c.filtered + c.delivered + c.dropped
            lkm.unload()
    finally:
        stop.touch()
        storm.kill()
        storm.wait(30)
        try:
            out, _ = reader.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            reader.kill()
            pytest.fail("a reader got stuck across module unload")
    assert reader.returncode == 0, out
    counts = eval(out.strip())  # noqa: S307 - our own dict literal
    assert counts["blocking"] > 0 and counts["stats"] > 0, counts
    bad = [ln for ln in dmesg_lines()[mark:] if DMESG_BAD.search(ln)]
    assert bad == []


# ---------------------------------------------------------------- cost

def test_handler_cost_is_reported(loaded):
    lkm.control("reset")
    workload.run_as(UID, n=4, threads=3, mem_mib=8)
    st = lkm.read_stats()
    out = {h.name: {"count": h.count, "total_ns": h.total_ns, "missed": h.missed,
                    "ns_per_call": round(h.ns_per_call or 0)} for h in st.hooks}
    print("\nlkm handler cost (ns per call):",
          {k: v["ns_per_call"] for k, v in out.items()})
    dest = paths.RESULTS_DIR / "lkm_handler_ns.json"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps({"kernel": os.uname().release, "hooks": out}, indent=1))
    except OSError:
        pass
    for name in ("wake_up_new_task", "setup_new_exec", "do_exit"):
        assert out[name]["count"] > 0 and out[name]["ns_per_call"] > 0
        assert out[name]["missed"] == 0
