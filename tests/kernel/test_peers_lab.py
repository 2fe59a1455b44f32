"""BCC's execsnoop and exitsnoop (execsnoop-bpfcc, exitsnoop-bpfcc) as collectors, in the
lab: they compile against the kernel's headers, which this host lacks. Each is started
once (its BCC compile takes ~25 s under TCG), sees this process's children, and leaves
no process behind."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from toolkit.backends.base import UNTYPED, get_backend

pytestmark = pytest.mark.kernel


def _children(n=6):
    out = {}
    for i in range(n):
        p = subprocess.Popen(["/bin/sh", "-c", f"exit {i}"])
        out[p.pid] = p.wait(60) << 8
    return out


@pytest.mark.parametrize("name,event", [("execsnoop", "exec"), ("exitsnoop", "exit")])
def test_bcc_tool_sees_our_children(name, event):
    b = get_backend(name)
    b.start()
    try:
        # no reset_stats() after start: own_cpu_s then spans the tool's life, its BCC
        # compile included (seconds under TCG). Six exits alone can cost less than one
        # 10 ms tick of utime+stime, and a tick clock reads that as 0 (CI on 6.12).
        kids = _children()
        got, end = [], time.monotonic() + 60
        while time.monotonic() < end and len({r.pid for r in got}) < len(kids):
            got += [r for r in b.read(0.5) if r.pid in kids]
        st = b.stats()
        pids = st.extra["own_pids"]
    finally:
        b.stop()
    assert {r.pid for r in got} == set(kids) and {r.event for r in got} == {event}
    assert all(r.ppid == os.getpid() for r in got)
    if event == "exit":
        assert {r.pid: r.exit_code for r in got} == kids
    assert st.events[UNTYPED].dropped == 0 and st.extra["own_cpu_s"] > 0
    time.sleep(0.5)
    assert not [p for p in pids if os.path.exists(f"/proc/{p}")]
