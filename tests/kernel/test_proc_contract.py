"""Contract for the process table: the eBPF task iterator's rows (ebpf/procs.c) against
the module's /proc/toolkit/processes for the same processes, field by field.

Both read the same kernel fields the same way, so a process (same pid and start time)
must show the same identity in both. The tables cannot be taken at one instant, so the
module's is taken between two iterator walks (e1, lkm, e2) and the moving values are
held to that bracket:
  * CPU time only grows (the sum of every live thread's sum_exec_runtime plus
    signal->sum_sched_runtime), so the module's value lies in [e1, e2] exactly for a
    process whose thread count did not change (a thread exiting moves its runtime
    into signal->sum_sched_runtime, which a lockless reader may count twice or not
    at all for an instant);
  * RSS and peak RSS go up and down, so they lie within [min(e1, e2), max(e1, e2)],
    give or take 1 % or 256 KiB (this test process allocates while it parses);
  * state must be one the iterator saw just before or just after (a process that
    woke up or went to sleep between the walks; the controlled children cannot:
    the busy loop is always R on its CPU or run queue, the sleepers always S).
Controlled children, as uid 4244: a busy loop, a sleeper holding 64 MiB resident and
a sleeper with 4 threads."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from bounded import readline

from toolkit.backends.base import get_backend

pytestmark = pytest.mark.kernel

UID = 4244
MIB64 = 64 << 10    # KiB
HOG = """
import sys
b = b"\\x01" * (64 << 20)
rss = [l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]
print(rss, flush=True)
sys.stdin.read()
"""
THREADS = """
import sys, threading
ts = [threading.Thread(target=sys.stdin.read, daemon=True) for _ in range(3)]
for t in ts:
    t.start()
print(threading.active_count(), flush=True)
threading.Event().wait()
"""


def as_uid():
    os.setgroups([])
    os.setresgid(UID, UID, UID)
    os.setresuid(UID, UID, UID)


def spawn(argv):
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=as_uid, cwd="/")


def by_key(snap):
    return {(p.pid, p.start_ns): p for p in snap.processes}


@pytest.fixture(scope="module")
def tables():
    busy = spawn(["sh", "-c", "while :; do :; done"])
    hog = spawn([sys.executable, "-c", HOG])
    threaded = spawn([sys.executable, "-c", THREADS])
    lkm = get_backend("lkm")
    ebpf = get_backend("ebpf")
    try:
        hog_rss = int(readline(hog.stdout, what="the hog's VmRSS"))
        assert int(readline(threaded.stdout, what="the thread count")) == 4
        lkm.start()
        try:
            ebpf.snapshot()     # compile ebpf/procs.c once (~40 s under TCG)
            e1 = ebpf.snapshot()
            mod = lkm.snapshot()
            e2 = ebpf.snapshot()
        finally:
            lkm.stop()
    finally:
        for p in (busy, hog, threaded):
            p.kill()
            p.wait(30)
    return dict(e1=e1, lkm=mod, e2=e2, busy=busy.pid, hog=hog.pid,
                threaded=threaded.pid, hog_rss=hog_rss, me=os.getpid())


def common(t):
    e1, mod, e2 = by_key(t["e1"]), by_key(t["lkm"]), by_key(t["e2"])
    return [(e1[k], mod[k], e2[k]) for k in mod if k in e1 and k in e2]


def test_source_is_the_task_iterator(tables):
    for name in ("e1", "e2"):
        src = tables[name].source
        assert "BPF task iterator" in src["processes"], src
        assert "CPU time of the first threads only" not in src["processes"], src
    assert "kernel" in tables["lkm"].source["processes"]


def test_same_processes_in_both(tables):
    """Every process the module lists is in the walk just before or just after it, and
    the other way round, but for processes born or gone between the walks."""
    e1, mod, e2 = by_key(tables["e1"]), by_key(tables["lkm"]), by_key(tables["e2"])
    ours = {tables[n] for n in ("busy", "hog", "threaded", "me")}
    for snap in (e1, mod, e2):
        assert ours <= {pid for pid, _ in snap}, sorted(snap)
        assert 2 not in {pid for pid, _ in snap}        # kthreadd: kernel threads skipped
    assert len(common(tables)) >= 0.9 * len(mod) and len(common(tables)) >= 5
    missing = set(mod) - (set(e1) | set(e2))
    assert not missing, missing
    extra = (set(e1) & set(e2)) - set(mod)
    assert not extra, extra


def test_identity_fields_equal(tables):
    for a, m, b in common(tables):
        for f in ("pid", "ppid", "uid", "comm", "start_ns"):
            assert getattr(a, f) == getattr(m, f) == getattr(b, f), (f, a, m, b)
        if a.threads == b.threads:
            assert m.threads == a.threads, (a, m, b)


def test_state_is_one_the_iterator_saw(tables):
    for a, m, b in common(tables):
        assert m.state in {a.state, b.state}, (a, m, b)
    rows = {m.pid: (a, m, b) for a, m, b in common(tables)}
    for pid, want in ((tables["busy"], "R"), (tables["hog"], "S"), (tables["threaded"], "S"),
                      (tables["me"], "R")):
        assert {r.state for r in rows[pid]} == {want}, rows[pid]


def test_cpu_time_bracketed(tables):
    checked = 0
    for a, m, b in common(tables):
        if a.threads == m.threads == b.threads:
            assert a.cpu_ns <= m.cpu_ns <= b.cpu_ns, (a, m, b)
            checked += 1
    assert checked >= 5
    a, m, b = next(r for r in common(tables) if r[1].pid == tables["busy"])
    assert b.cpu_ns > a.cpu_ns, (a, b)          # it ran between the two walks


def test_rss_and_peak_bracketed(tables):
    for a, m, b in common(tables):
        for f in ("rss_kib", "hiwater_rss_kib", "total_vm_kib"):
            lo, hi = sorted((getattr(a, f), getattr(b, f)))
            slack = max(256, hi // 100)
            assert lo - slack <= getattr(m, f) <= hi + slack, (f, a, m, b)


def test_64mib_sleeper_same_rss_as_its_own_vmrss(tables):
    rows = [r for r in common(tables) if r[1].pid == tables["hog"]]
    assert len(rows) == 1
    for p in rows[0]:
        assert abs(p.rss_kib - tables["hog_rss"]) <= 0.05 * tables["hog_rss"], p
        assert p.rss_kib >= MIB64 and p.hiwater_rss_kib >= p.rss_kib
    a, m, b = rows[0]
    # idle: nothing moves its counters between the walks
    assert a.rss_kib == m.rss_kib == b.rss_kib, rows[0]


def test_threads_counted(tables):
    a, m, b = next(r for r in common(tables) if r[1].pid == tables["threaded"])
    assert a.threads == m.threads == b.threads == 4
