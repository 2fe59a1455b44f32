"""Contract: one workload, both kernel backends attached at once, records compared
field by field. Both fill the one struct tk_record from the same hook points (the ebpf
kprobe variant attaches to the module's functions), so they must agree: identity fields
exactly, times and memory within what two handlers on the same hook can differ by."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402

from toolkit import schema  # noqa: E402
from toolkit.backends.base import get_backend  # noqa: E402

pytestmark = pytest.mark.kernel

UID = 4243
EXACT = ("type", "pid", "tgid", "ppid", "uid", "comm", "start_ns", "exit_code", "flags")


@pytest.fixture(scope="module", params=["bcc", "core"])
def both(request):
    """The module and one eBPF engine (BCC, then CO-RE), both on the kprobe hooks."""
    lkm = get_backend("lkm", uid=UID)
    ebpf = get_backend("ebpf", engine=request.param, uid=UID, probe="kprobe")
    lkm.start()
    try:
        ebpf.start()
        try:
            for b in (lkm, ebpf):
                b.drain(0.3)
            proc = workload.start_as(UID, n=3, threads=2, mem_mib=16)
            got = {"lkm": [], "ebpf": []}
            while proc.poll() is None:
                got["lkm"] += lkm.read(0.1)
                got["ebpf"] += ebpf.read(0.1)
            ledger = workload.finish(proc)
            got["lkm"] += lkm.drain(1.0)
            got["ebpf"] += ebpf.drain(1.0)
            stats = {"lkm": lkm.stats(), "ebpf": ebpf.stats()}
        finally:
            ebpf.stop()
    finally:
        lkm.stop()
    kids = {c["pid"] for c in ledger["children"]}
    recs = {n: [r for r in rs if r.uid == UID and r.tgid in kids] for n, rs in got.items()}
    return ledger, recs, stats


def _key(r):
    return (r.type, r.pid)


def test_nothing_dropped_by_either(both):
    _, _, stats = both
    for name, st in stats.items():
        assert st.dropped == 0, (name, st.as_dict())


def test_same_events_same_identity_fields(both):
    ledger, recs, _ = both
    lk = {_key(r): r for r in recs["lkm"]}
    eb = {_key(r): r for r in recs["ebpf"]}
    assert len(lk) == len(recs["lkm"]) and len(eb) == len(recs["ebpf"]), "duplicate records"
    assert set(lk) == set(eb)
    assert len(lk) == sum(workload.expected_events(ledger).values())
    for k in lk:
        a, b = lk[k], eb[k]
        diff = {f: (getattr(a, f), getattr(b, f)) for f in EXACT if getattr(a, f) != getattr(b, f)}
        assert not diff, (schema.EVENT_NAMES[k[0]], k[1], diff)


def test_times_and_memory_agree(both):
    _, recs, _ = both
    eb = {_key(r): r for r in recs["ebpf"]}
    exits = 0
    for a in recs["lkm"]:
        b = eb[_key(a)]
        # two handlers on the same hook run back to back; allow for TCG's slowness
        assert abs(a.ts_ns - b.ts_ns) < 50_000_000, (a, b)
        if a.type == schema.EventType.EXIT:
            exits += 1
            assert a.flags & schema.FLAGS["HAS_MM"]
            assert abs(a.rss_kib - b.rss_kib) <= max(64, a.rss_kib // 100), (a, b)
            assert abs(a.hiwater_rss_kib - b.hiwater_rss_kib) <= max(64, a.hiwater_rss_kib // 100)
            assert abs(a.cpu_ns - b.cpu_ns) < 20_000_000, (a, b)
        else:
            assert (a.rss_kib, a.hiwater_rss_kib, a.cpu_ns) == (b.rss_kib, b.hiwater_rss_kib,
                                                                 b.cpu_ns) == (0, 0, 0)
    assert exits > 0
