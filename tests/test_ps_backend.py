"""The ps baseline: parsing and diffing on captured text, and a live run on this host."""
import os
import subprocess
import sys
import time

from toolkit import schema
from toolkit.backends import get_backend
from toolkit.backends.ps import PsBackend, parse_free, parse_snapshot, parse_table

FREE = """\
               total        used        free      shared     buffers       cache   available
Mem:        24589672     1234567    20000000        1234       45678     3309427    23000000
Swap:              0           0           0
"""


def test_parse_free():
    m = parse_free(FREE)
    assert (m.total_kib, m.used_kib, m.free_kib, m.buffers_kib, m.cached_kib, m.available_kib) == \
        (24589672, 1234567, 20000000, 45678, 3309427, 23000000)


def test_parse_snapshot_skips_kernel_threads_and_keeps_spaces_in_comm():
    text = ("    2     0     0 S     0      0        0   1 kthreadd\n"
            "  100     1  1000 S  2048  10000       12   3 Web Content\n")
    procs = parse_snapshot(text)
    assert [(p.pid, p.comm, p.rss_kib, p.cpu_ns, p.threads) for p in procs] == \
        [(100, "Web Content", 2048, 12 * 10**9, 3)]


def test_diff_fork_exec_exit_and_uid_filter():
    b = PsBackend(uid=1000)
    prev = parse_table("10 1 1000 9 100 bash\n11 1 1000 9 200 sleep\n12 1 0 9 50 rootd\n"
                       "41 2 0 0 0 kworker/1:1-virt\n")
    cur = parse_table("10 1 1000 9 100 vim\n13 10 1000 9 10 child\n14 1 0 9 1 rootchild\n"
                      "41 2 0 0 0 kworker/1:1-mm_p\n")
    recs = b.diff(prev, cur, now=123)
    got = sorted((r.event, r.pid, r.comm) for r in recs)
    assert got == [("exec", 10, "vim"), ("exit", 11, "sleep"), ("fork", 13, "child")]
    assert all(r.ts_ns == 123 and not r.flags & schema.FLAGS["HAS_MM"] for r in recs)
    st = b.stats()
    assert st.events["fork"].filtered == 1 and st.events["exit"].filtered == 1
    assert st.events["fork"].seen == st.events["fork"].filtered + st.events["fork"].delivered


def test_live_poll_sees_a_long_lived_child_and_not_itself():
    b = get_backend("ps", interval=0.2)
    b.start()
    try:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
        seen = []
        end = time.monotonic() + 4
        while time.monotonic() < end and not any(r.pid == child.pid and r.event == "exit"
                                                 for r in seen):
            seen += b.read(0.3)
        child.wait(30)
        events = {r.event for r in seen if r.pid == child.pid}
        assert events == {"fork", "exit"}, seen
        assert not any(r.comm == "ps" for r in seen)
        snap = b.snapshot()
        assert any(p.pid == os.getpid() for p in snap.processes)
        assert snap.meminfo.total_kib > 0 and "user space" in snap.source["meminfo"]
    finally:
        b.stop()
