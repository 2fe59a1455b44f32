"""`toolkit top` on the kernel backends, in batch jsonl mode as a script reads it: a
busy loop leads by CPU % near 100, a 64 MiB process shows its RSS, a burst of N
short-lived children between two refreshes is counted exactly N, and --uid keeps only
that user's processes and events. The workload runs as an unused uid, so the filter
(in the kernel) leaves exactly it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bounded import lines, readline

pytestmark = pytest.mark.kernel

TOOLKIT = str(Path(sys.executable).parent / "toolkit")
UID = 4242
BURST = 12
MIB64 = 64 << 10    # KiB

# forks BURST children that _exit at once when it reads a line; prints "done" after
# reaping them; lives until stdin closes
BURSTER = f"""
import os, sys
for line in sys.stdin:
    for i in range({BURST}):
        if os.fork() == 0:
            os._exit(i % 7)
    for i in range({BURST}):
        os.wait()
    print("done", flush=True)
"""
# 64 MiB written (so resident), then its own VmRSS, then waits
HOG = """
import sys
b = b"\\x01" * (64 << 20)
rss = [l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]
print(rss, flush=True)
sys.stdin.read()
"""


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def as_uid():
    os.setgroups([])
    os.setresgid(UID, UID, UID)
    os.setresuid(UID, UID, UID)


def spawn(argv):
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=as_uid, cwd="/")


@pytest.fixture(scope="module", params=["lkm", "ebpf"])
def run(request):
    # the busy loop waits for a line: spinning from the start, it took one of the guest's
    # two vCPUs from a BCC compile already slowed by TCG (top's start then passed 240 s)
    busy = spawn(["sh", "-c", "read go; while :; do :; done"])
    hog = spawn([sys.executable, "-c", HOG])
    burster = spawn([sys.executable, "-c", BURSTER])
    hog_rss = int(readline(hog.stdout, what="the hog's VmRSS"))
    top = subprocess.Popen([TOOLKIT, "top", "--backend", request.param, "--uid", str(UID),
                            "--interval", "3", "--format", "jsonl", "--iterations", "4"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    frames, err, truth = [], [], []
    errs = threading.Thread(target=lambda: err.append(top.stderr.read()))
    errs.start()
    try:
        # 4 frames 3 s apart, after the backend starts (a BCC compile: 25-90 s under TCG)
        for line in lines(top.stdout, 300, "toolkit top's 4 frames"):
            frames.append(json.loads(line))
            truth.append((time.monotonic(), proc_cpu_s(busy.pid)))
            if len(frames) == 1:    # the backend runs: the busy loop starts spinning
                busy.stdin.write("go\n")
                busy.stdin.flush()
            if len(frames) == 2:    # just refreshed: the burst falls inside the next interval
                burster.stdin.write("go\n")
                burster.stdin.flush()
                assert readline(burster.stdout, what="the burst").strip() == "done"
        top.wait(120)
    finally:
        for p in (top, busy, hog, burster):
            if p.poll() is None:
                p.kill()
            p.wait(30)
        errs.join(30)
    assert top.returncode == 0, err
    # the busy loop's own CPU % between two frames, from /proc as each frame arrived
    busy_pct = [100 * (c1 - c0) / (t1 - t0) for (t0, c0), (t1, c1) in zip(truth, truth[1:])]
    return request.param, frames, busy.pid, hog.pid, burster.pid, hog_rss, busy_pct


def test_busy_loop_first_by_cpu(run):
    backend, frames, busy, *_ = run
    for f in frames[1:]:
        first = f["processes"][0]
        assert first["pid"] == busy, (backend, f["processes"][:3])
        assert first["cpu_pct"] > 50, (backend, first)


def test_busy_loop_cpu_within_10_points(run):
    """Within 10 points of what it really got. Under TCG on a shared host a vCPU is
    often descheduled, so a busy loop can get less than 100 % of guest time; the truth is
    its own /proc CPU time between two frames (99 % measured)."""
    backend, frames, busy, *_, busy_pct = run
    # (lkm once showed 75 % here where /proc said 99 %: its process table summed
    # tick-sampled utime + stime, which lose ticks under TCG; it now sums the
    # scheduler's runtime, as /proc does, so this holds for both backends)
    for f, truth in zip(frames[1:], busy_pct):
        first = f["processes"][0]
        assert abs(first["cpu_pct"] - truth) <= 10, (backend, first["cpu_pct"], truth)


def test_64mib_rss_within_5_percent(run):
    backend, frames, _, hog, _, hog_rss, _ = run
    row = next(p for p in frames[-1]["processes"] if p["pid"] == hog)
    assert hog_rss >= MIB64
    assert abs(row["rss_kib"] - hog_rss) <= 0.05 * hog_rss, (backend, row, hog_rss)
    assert row["peak_kib"] >= row["rss_kib"] * 0.95


def test_burst_counted_exactly(run):
    backend, frames, _, _, burster, *_ = run
    counts = [f["short_lived"]["count"] for f in frames]
    assert counts[2] == BURST and sum(counts) == BURST, (backend, counts)
    sl = frames[2]["short_lived"]
    exits = {s["exit"] for s in sl["by_cpu"] + sl["by_peak"]}
    assert exits <= {str(i % 7) for i in range(BURST)}
    assert frames[2]["totals"]["fork"] >= BURST and frames[2]["drops"]["dropped"] == 0


def test_uid_filter_only_that_user(run):
    backend, frames, busy, hog, burster, *_ = run
    for f in frames:
        assert {p["uid"] for p in f["processes"]} == {UID}, backend
        assert {busy, hog, burster} <= {p["pid"] for p in f["processes"]}
    # the events of other users (this test's root processes) were filtered in the kernel
    assert frames[-1]["totals"]["fork"] == BURST, (backend, frames[-1]["totals"])
