"""The shared /proc and kernel readers (toolkit/sysinfo.py) and the user-space snapshot
built on them, on captured text and natively."""
from __future__ import annotations

import os

import pytest

from toolkit import sysinfo
from toolkit.backends import base


def test_kernel_version():
    assert sysinfo.kernel_version("6.1.0-56-amd64") == (6, 1)
    assert sysinfo.kernel_version("5.15.0") == (5, 15)
    with pytest.raises(ValueError):
        sysinfo.kernel_version("garbage")


def test_read_text_default():
    assert sysinfo.read_text("/proc/no-such-file") is None
    assert sysinfo.read_text("/proc/no-such-file", "") == ""
    assert sysinfo.read_text("/proc/self/stat").startswith(str(os.getpid()))


def test_forks_since_boot_counts_a_fork():
    before = sysinfo.forks_since_boot()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert sysinfo.forks_since_boot() >= before + 1


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
    p = sysinfo.parse_proc_process(STAT, STATUS, hz=100, boot_offset_ns=1_000_000)
    assert p == base.ProcInfo(pid=1234, ppid=1, uid=1000, comm="my (odd) comm", state="S",
                              rss_kib=4000, hiwater_rss_kib=5000, total_vm_kib=19000,
                              cpu_ns=300 * 10_000_000, start_ns=500 * 10_000_000 - 1_000_000,
                              threads=3)


def test_parse_proc_process_skips_kernel_threads():
    kstat = STAT.replace(" 4194304 ", f" {sysinfo.PF_KTHREAD | 0x40} ")
    assert sysinfo.parse_proc_process(kstat, STATUS, hz=100, boot_offset_ns=0) is None


def test_parse_meminfo():
    m = base.meminfo_from_proc("MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 600 kB\n"
                           "Buffers: 50 kB\nCached: 300 kB\nSwapCached: 0 kB\n")
    assert m == base.MemInfo(total_kib=1000, free_kib=100, used_kib=550, buffers_kib=50,
                             cached_kib=300, available_kib=600)


def test_read_proc_table_native():
    procs = base.proc_snapshot().processes
    me = [p for p in procs if p.pid == os.getpid()]
    assert len(me) == 1 and me[0].rss_kib > 0 and me[0].comm


