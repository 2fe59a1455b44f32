"""Native unit tests of the eBPF backend's pure parts (no bcc, no root needed)."""
from __future__ import annotations

import os
import re

import pytest

from toolkit import schema
from toolkit.backends import base, ebpf
from toolkit.paths import EBPF_DIR, INCLUDE_DIR


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
    b = base.get_backend("ebpf", probe="tracepoint", transport="perf", buffer_pages=8, uid=5)
    assert b.name == "ebpf" and b.uid_filter == 5
    assert (b.opts.probe, b.opts.transport, b.opts.buffer_pages) == ("tracepoint", "perf", 8)


def test_not_root_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    b = ebpf.EbpfBackend()
    with pytest.raises(base.BackendError, match="needs root") as e:
        b.start()
    assert e.value.hint == base.LAB_HINT


def test_kernel_version():
    assert ebpf.kernel_version("6.1.0-56-amd64") == (6, 1)
    assert ebpf.kernel_version("5.15.0") == (5, 15)
    with pytest.raises(ValueError):
        ebpf.kernel_version("garbage")


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


def test_counter_keys_match_the_c_layout():
    src = (EBPF_DIR / "lifecycle.c").read_text()
    kinds = dict(re.findall(r"#define TK_(SEEN|FILTERED|DELIVERED|DROPPED)\s+(\d+)", src))
    assert [int(kinds[k.upper()]) for k in ebpf.KINDS] == [0, 1, 2, 3]
    assert "#define TK_NKINDS\t4" in src
    assert ebpf.counter_key(schema.EventType.EXIT, "dropped") == 4 * 4 + 3


def test_hooks_name_programs_that_exist():
    src = (EBPF_DIR / "lifecycle.c").read_text()
    for variant, hooks in ebpf.HOOKS.items():
        assert len(hooks) == 3, variant
        for kind, target, fn in hooks:
            if kind == "fentry":
                assert fn == f"kfunc__{target}"
                assert f"KFUNC_PROBE({target}," in src
            else:
                assert re.search(rf"\bint {fn}\(", src), fn
    # the kprobe variant uses the module's hook points
    assert [t for _, t, _ in ebpf.HOOKS["kprobe"]] == ["wake_up_new_task", "setup_new_exec",
                                                       "do_exit"]


def test_ring_capacity():
    assert ebpf.ring_capacity("ringbuf", 1, 2) == 4096 // 96
    assert ebpf.ring_capacity("perf", 1, 2) == 4096 // 104 * 2


def test_log_tail():
    text = "\n".join(f"line {i}" for i in range(100)) + "\n\n"
    assert ebpf.log_tail(text, 3) == "line 97\nline 98\nline 99"


STAT = ("1234 (my (odd) comm) S 1 1234 1234 0 -1 4194304 100 0 0 0 "
        "250 50 0 0 20 0 3 0 500 10000000 1000 18446744073709551615 "
        "1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0")
STATUS = """Name:\tmy (odd) comm
State:\tS (sleeping)
Tgid:\t1234
Pid:\t1234
PPid:\t1
Uid:\t1000\t1001\t1002\t1003
VmPeak:\t   20000 kB
VmSize:\t   19000 kB
VmHWM:\t    5000 kB
VmRSS:\t    4000 kB
Threads:\t3
"""


def test_parse_proc_process():
    p = ebpf.parse_proc_process(STAT, STATUS, hz=100, boot_offset_ns=1_000_000)
    assert p == base.ProcInfo(pid=1234, ppid=1, uid=1000, comm="my (odd) comm", state="S",
                              rss_kib=4000, hiwater_rss_kib=5000, total_vm_kib=19000,
                              cpu_ns=300 * 10_000_000, start_ns=500 * 10_000_000 - 1_000_000,
                              threads=3)


def test_parse_proc_process_skips_kernel_threads():
    kstat = STAT.replace(" 4194304 ", f" {ebpf.PF_KTHREAD | 0x40} ")
    assert ebpf.parse_proc_process(kstat, STATUS, hz=100, boot_offset_ns=0) is None


def test_parse_meminfo():
    m = ebpf.parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 600 kB\n"
                           "Buffers: 50 kB\nCached: 300 kB\nSwapCached: 0 kB\n")
    assert m == base.MemInfo(total_kib=1000, free_kib=100, used_kib=550, buffers_kib=50,
                             cached_kib=300, available_kib=600)


def test_read_proc_table_native():
    procs = ebpf.read_proc_table()
    me = [p for p in procs if p.pid == os.getpid()]
    assert len(me) == 1 and me[0].rss_kib > 0 and me[0].comm


def test_capture_stderr():
    with ebpf.capture_stderr() as err:
        os.write(2, b"verifier says no\n")
    assert err == ["verifier says no\n"]
