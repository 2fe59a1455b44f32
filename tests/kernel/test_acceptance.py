"""One acceptance suite for every kernel backend (like Falco's driver tests run against
either driver): the workload's children must come out exactly as its ledger says.

The workload runs under its own uid and the backend filters on it, so the expected
event counts are exact (no background noise in the lab VM).
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402

from toolkit import schema  # noqa: E402

BACKENDS = workload.backend_params()   # lkm, ebpf (lab: kernel), ebpf-core (native too)
UID = 4242
N, THREADS, MEM_MIB = 5, 3, 32
# backend options: a normal buffer, and the smallest one (to force drops)
NORMAL_OPTS = {"lkm": {"ring_size": 16384}, "ebpf": {}, "ebpf-core": {}}
TINY_OPTS = {"lkm": {"ring_size": 16}, "ebpf": {"buffer_pages": 1},
             "ebpf-core": {"buffer_pages": 1}}


def capture(backend, **kw):
    return workload.capture(backend, UID, **kw)


@pytest.fixture(scope="module", params=BACKENDS)
def captured(request):
    b = workload.make_backend(request.param, uid=UID, **NORMAL_OPTS[request.param])
    b.start()
    try:
        ledger, records = capture(b, n=N, threads=THREADS, mem_mib=MEM_MIB)
        stats = b.stats()
    finally:
        b.stop()
    return request.param, ledger, records, stats


def by_pid(records, ledger):
    kids = {c["pid"] for c in ledger["children"]}
    out = {pid: [] for pid in kids}
    for r in records:
        if r.tgid in out:
            out[r.tgid].append(r)
    return out


def test_each_kind_exactly_n(captured):
    _, ledger, records, _ = captured
    per = by_pid(records, ledger)
    counts = Counter()
    for c in ledger["children"]:
        for r in per[c["pid"]]:
            counts[(c["kind"], r.event)] += 1
    assert counts == workload.expected_by_kind(N, THREADS)


def test_fork_exec_exit_fields(captured):
    _, ledger, records, _ = captured
    per = by_pid(records, ledger)
    for c in ledger["children"]:
        recs = per[c["pid"]]
        fork = [r for r in recs if r.event == "fork"]
        exits = [r for r in recs if r.event == "exit"]
        assert len(fork) == 1 and len(exits) == 1, (c, recs)
        f, e = fork[0], exits[0]
        assert (f.pid, f.tgid, f.ppid, f.comm) == (c["pid"], c["pid"], ledger["pid"],
                                                     c["fork_comm"]), (c, f)
        assert (e.pid, e.tgid, e.ppid, e.comm) == (c["pid"], c["pid"], ledger["pid"],
                                                     c["exit_comm"]), (c, e)
        assert e.exit_code == c["status"], (c, e)
        assert f.start_ns == e.start_ns and f.ts_ns <= e.ts_ns
        assert abs(f.start_ns // 10_000_000 - c["start_ticks"]) <= 2, (c, f)
        if c["kind"] == "exec":
            (x,) = [r for r in recs if r.event == "exec"]
            assert (x.pid, x.tgid, x.ppid, x.comm) == (c["pid"], c["pid"], ledger["pid"],
                                                         "true")
            assert f.ts_ns <= x.ts_ns <= e.ts_ns


def test_threads_are_clone_not_fork(captured):
    _, ledger, records, _ = captured
    per = by_pid(records, ledger)
    for c in ledger["children"]:
        clones = [r for r in per[c["pid"]] if r.event == "clone"]
        if c["kind"] != "threads":
            assert clones == []
            continue
        assert sorted(r.pid for r in clones) == sorted(c["tids"])
        for r in clones:
            assert r.tgid == c["pid"] and r.pid != r.tgid and r.ppid == ledger["pid"]
            assert r.comm == c["fork_comm"]
    # a thread is never reported as a fork
    tids = {t for c in ledger["children"] for t in c["tids"]}
    assert not [r for r in records if r.event == "fork" and r.pid in tids]


def test_rss_at_exit_matches_vmhwm(captured):
    _, ledger, records, _ = captured
    per = by_pid(records, ledger)
    for c in ledger["children"]:
        if c["kind"] != "mem":
            continue
        (e,) = [r for r in per[c["pid"]] if r.event == "exit"]
        assert e.flags & schema.FLAGS["HAS_MM"]
        assert e.rss_kib >= MEM_MIB * 1024, (c, e)
        assert abs(e.rss_kib - c["vmhwm_kib"]) <= 0.10 * c["vmhwm_kib"], (c, e)
        assert e.hiwater_rss_kib >= e.rss_kib


def test_record_contract(captured):
    """Every record has the schema's fields with sane types and values."""
    _, ledger, records, _ = captured
    assert records
    for r in records:
        assert isinstance(r, schema.Record)
        for name in schema.FIELD_NAMES:
            v = getattr(r, name)
            ctype, count = schema.FIELD_CTYPES[name]
            if count:
                assert isinstance(v, str) and len(v.encode()) < count
            else:
                assert isinstance(v, int)
                bits = 64 if ctype == "__u64" else 32
                lo = -(1 << (bits - 1)) if ctype.startswith("__s") else 0
                hi = (1 << (bits - 1)) if ctype.startswith("__s") else (1 << bits)
                assert lo <= v < hi, (name, v)
        assert r.event in schema.EVENT_BY_NAME
        assert ledger["t0_ns"] - 30 * 10**9 <= r.ts_ns <= ledger["t1_ns"] + 5 * 10**9
        assert 0 < r.start_ns <= r.ts_ns
        assert r.pid > 0 and r.tgid > 0 and r.uid == UID and r.comm
        if r.event != "exit":
            assert r.rss_kib == r.hiwater_rss_kib == r.cpu_ns == r.exit_code == 0
        if r.event in ("fork", "exec", "exit"):
            assert r.pid == r.tgid


@pytest.mark.parametrize("name", BACKENDS)
def test_tiny_buffer_accounting(name):
    b = workload.make_backend(name, uid=UID, **TINY_OPTS[name])
    b.start()
    try:
        b.drain(0.3)
        b.reset_stats()
        ledger, records = capture(b, read_while_running=False, n=N, threads=THREADS,
                                  mem_mib=4)
        stats = b.stats()
    finally:
        b.stop()
    workload.assert_exact_accounting(stats, ledger, records)


@pytest.mark.parametrize("name", BACKENDS)
def test_parent_filter_keeps_only_that_parents_children(name):
    """set_ppid_filter(P): records of P's children only, the rest counted as filtered
    (the bench's --scope children). Here P is this test process: its /bin/true children
    and the tk_helper it starts are delivered, tk_helper's 20 children are filtered."""
    helper = workload.helper()
    me = os.getpid()
    b = workload.make_backend(name, **NORMAL_OPTS[name])
    b.start()
    try:
        b.set_ppid_filter(me)
        b.drain(0.3)
        b.reset_stats()
        kids = [subprocess.run(["/bin/true"], timeout=30) for _ in range(3)]
        noise = subprocess.Popen([str(helper), "forks", "20"], stdout=subprocess.PIPE)
        noise.communicate(timeout=120)
        records = b.drain(1.0)
        stats = b.stats()
        b.set_ppid_filter(None)
    finally:
        b.stop()
    assert all(k.returncode == 0 for k in kids) and noise.returncode == 0
    assert records and all(r.ppid == me for r in records), \
        {(r.event, r.tgid, r.ppid) for r in records if r.ppid != me}
    exits = {r.tgid for r in records if r.event == "exit"}
    assert noise.pid in exits and len(exits) == 4, exits   # 3 x /bin/true + tk_helper
    for ev in ("fork", "exit"):
        c = stats.events[ev]
        assert c.seen == c.filtered + c.delivered + c.dropped and c.dropped == 0, (ev, c)
        assert c.filtered >= 20 and c.delivered == 4, (ev, c)
