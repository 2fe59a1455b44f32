"""Native unit tests of the eBPF backend's pure parts (no bcc, no root needed)."""
from __future__ import annotations

import os

import pytest

from toolkit import schema
from toolkit.backends import base, ebpf
from toolkit.paths import INCLUDE_DIR


def test_default_options():
    o = ebpf.resolve_options(release="6.1.0-56-amd64")
    assert o == ebpf.Options("kprobe", "ringbuf", 256)


def test_auto_transport_falls_back_to_perf_before_5_8():
    assert ebpf.resolve_options(release="5.4.0-150-generic").transport == "perf"
    assert ebpf.resolve_options(release="5.4.0", buffer_pages=None).buffer_pages == 64
    with pytest.raises(base.BackendError, match="5.8"):
        ebpf.resolve_options(transport="ringbuf", release="5.4.0")


@pytest.mark.parametrize("kw,match", [
    ({"probe": "uprobe"}, "probe must be"),
    ({"transport": "pipe"}, "transport must be"),
    ({"buffer_pages": 3}, "power of two"),
    ({"buffer_pages": 0}, "power of two"),
    ({"buffer_pages": "x"}, "integer"),
    ({"ring_size": 16}, "unknown option"),
])
def test_bad_options(kw, match):
    with pytest.raises(base.BackendError, match=match):
        ebpf.resolve_options(release="6.1.0", **kw)


def test_get_backend_validates_without_bcc():
    b = base.get_backend("ebpf", engine="bcc", probe="tracepoint", transport="perf",
                         buffer_pages=8, uid=5)
    assert b.name == "ebpf" and b.uid_filter == 5
    assert (b.opts.probe, b.opts.transport, b.opts.buffer_pages) == ("tracepoint", "perf", 8)


def test_not_root_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    b = ebpf.EbpfBackend()
    with pytest.raises(base.BackendError, match="needs root") as e:
        b.start()
    assert e.value.hint == base.LAB_HINT


def test_cflags():
    o = ebpf.resolve_options(release="6.1.0", buffer_pages=4)
    flags = ebpf.cflags(o, fentry=True)
    assert f"-I{INCLUDE_DIR}" in flags
    assert "-DTK_TRANSPORT_RINGBUF=1" in flags and "-DTK_RINGBUF_PAGES=4" in flags
    assert "-DTK_WITH_FENTRY=1" in flags
    p = ebpf.cflags(ebpf.resolve_options(release="6.1.0", transport="perf"), fentry=False)
    assert "-DTK_TRANSPORT_PERF=1" in p and not any("PAGES" in f or "FENTRY" in f for f in p)


FDINFO = """pos:\t0
flags:\t02000002
mnt_id:\t15
ino:\t1057
prog_type:\t2
prog_jited:\t1
prog_tag:\t3b185187f1855c4c
memlock:\t4096
prog_id:\t12
run_time_ns:\t123456
run_cnt:\t42
recursion_misses:\t1
verified_insns:\t300
"""


def test_parse_fdinfo():
    d = ebpf.parse_fdinfo(FDINFO)
    assert d["run_time_ns"] == 123456 and d["run_cnt"] == 42 and d["prog_id"] == 12
    assert d["recursion_misses"] == 1
    assert "prog_tag" not in d          # not an integer
    assert ebpf.parse_fdinfo("") == {}


def test_hooks_follow_the_header():
    """The kprobe and fentry variants hook the header's TK_HOOKS symbols (those the
    module probes); tracepoint swaps fork and exec for their sched tracepoints. That the
    programs exist and attach is tested for real in tests/kernel/test_ebpf.py."""
    syms = [sym for _, sym, _ in schema.HOOKS]
    assert syms == ["wake_up_new_task", "setup_new_exec", "do_exit"]
    assert [t for _, t, _ in ebpf.HOOKS["kprobe"]] == syms
    assert [t for _, t, _ in ebpf.HOOKS["fentry"]] == syms
    assert [fn for _, _, fn in ebpf.HOOKS["fentry"]] == [f"kfunc__{s}" for s in syms]
    assert [t for _, t, _ in ebpf.HOOKS["tracepoint"]] == ["sched_process_fork",
                                                           "sched_process_exec", "do_exit"]
    assert set(ebpf.HOOKS) == set(ebpf.PROBES)


def test_ring_capacity():
    # a 112-byte version-2 record: 120 bytes with the ringbuf header, 128 in a perf buffer
    assert schema.RECORD_SIZE == 112
    assert ebpf.ring_capacity("ringbuf", 1, 2) == 4096 // 120
    assert ebpf.ring_capacity("perf", 1, 2) == 4096 // 128 * 2


def test_batched_wakeup_never_lets_the_ring_fill_between_two_wakeups():
    """N = min(1024, capacity / (4 x CPUs)): the default ring (256 pages, 8,738 records) on
    2 CPUs wakes every 1024 records of a CPU; more CPUs or a smaller ring, fewer; per-record
    wakeups are 0."""
    cap = ebpf.ring_capacity("ringbuf", 256, 1)
    assert cap == 8738
    assert ebpf.wakeup_every("batch", cap, 2) == 1024
    assert ebpf.wakeup_every("batch", cap, 64) == cap // (4 * 64) == 34
    assert ebpf.wakeup_every("batch", ebpf.ring_capacity("ringbuf", 1, 1), 2) == 4
    assert ebpf.wakeup_every("batch", 3, 4) == 1
    for cpus in (1, 2, 8, 64, 256):
        assert ebpf.wakeup_every("batch", cap, cpus) * 4 * cpus <= max(cap, 4 * cpus)
    assert ebpf.wakeup_every("record", cap, 2) == 0


def test_log_tail():
    text = "\n".join(f"line {i}" for i in range(100)) + "\n\n"
    assert ebpf.log_tail(text, 3) == "line 97\nline 98\nline 99"


def test_capture_stderr():
    with ebpf.capture_stderr() as err:
        os.write(2, b"verifier says no\n")
    assert err == ["verifier says no\n"]


def _proc_row(**kw):
    import struct
    row = dict(start_ns=5, cpu_ns=7, rss_kib=64, hiwater_rss_kib=96, total_vm_kib=128,
               pid=42, ppid=1, uid=4242, threads=2, state=ord("S"), flags=0, comm=b"sleeper")
    row.update(kw)
    return struct.pack(schema.PROC_STRUCT_FORMAT, *row.values())


MEMINFO = "MemTotal: 4000 kB\nMemFree: 1000 kB\nBuffers: 100 kB\nCached: 900 kB\n" \
          "MemAvailable: 2000 kB\n"


def test_iter_snapshot_rows_become_procinfo_by_pid():
    snap = ebpf.iter_snapshot(_proc_row(pid=43, state=ord("R"), comm=b"busy") + _proc_row(),
                              MEMINFO)
    assert [p.pid for p in snap.processes] == [42, 43]
    assert snap.processes[0] == base.ProcInfo(
        pid=42, ppid=1, uid=4242, comm="sleeper", state="S", rss_kib=64,
        hiwater_rss_kib=96, total_vm_kib=128, cpu_ns=7, start_ns=5, threads=2)
    assert snap.processes[1].state == "R"
    assert snap.source["processes"] == "kernel: BPF task iterator (ebpf/procs.c)"
    assert "/proc/meminfo" in snap.source["meminfo"]
    assert (snap.meminfo.total_kib, snap.meminfo.used_kib) == (4000, 2000)


def test_iter_snapshot_names_rows_whose_thread_walk_was_cut_short():
    flag = schema.PROC_FLAGS["CPU_PARTIAL"]
    snap = ebpf.iter_snapshot(_proc_row(pid=7, flags=flag) + _proc_row(), MEMINFO)
    assert "first threads only for 1 process(es)" in snap.source["processes"]
    assert "[7]" in snap.source["processes"]
    with pytest.raises(ValueError):
        ebpf.iter_snapshot(_proc_row()[:-3], MEMINFO)


def test_cflags_find_the_shared_bpf_header():
    o = ebpf.resolve_options(release="6.1.0")
    assert f"-I{ebpf.EBPF_DIR}" in ebpf.cflags(o, fentry=False)
    assert (ebpf.EBPF_DIR / "tk_task.h").exists() and ebpf.PROCS_SOURCE.exists()
