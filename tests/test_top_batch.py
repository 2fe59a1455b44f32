"""toolkit top: the model on hand-made snapshots and records, batch mode natively with the
ps backend, and bad input."""
import csv
import io
import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from toolkit import schema
from toolkit.backends.base import MemInfo, ProcInfo, Snapshot, Stats, event_counters
from toolkit.cli import main
from toolkit.top.model import Model, sort_rows

S = 10**9
MEM = MemInfo(total_kib=1000, free_kib=100, used_kib=700, buffers_kib=50, cached_kib=150,
              available_kib=250)


def proc(pid, cpu_s, start_ns, rss=1000, peak=2000, uid=0, comm="x"):
    return ProcInfo(pid=pid, ppid=1, uid=uid, comm=comm, state="R", rss_kib=rss,
                    hiwater_rss_kib=peak, total_vm_kib=rss * 2, cpu_ns=int(cpu_s * S),
                    start_ns=start_ns)


def rec(etype, pid, ts, start, cpu_ms=0, hwm=0, status=0, uid=0, comm="short"):
    return schema.Record(ts_ns=ts, start_ns=start, cpu_ns=cpu_ms * 10**6, rss_kib=0,
                         hiwater_rss_kib=hwm, type=int(etype), pid=pid, tgid=pid, ppid=1,
                         uid=uid, cpu=0, flags=0, exit_code=status, comm=comm)


def stats(dropped=0):
    ev = event_counters()
    ev["fork"].seen, ev["fork"].dropped = 5 + dropped, dropped
    return Stats(backend="t", events=ev)


def snap(*procs):
    return Snapshot(list(procs), MEM)


def test_cpu_delta_over_the_interval_not_since_boot():
    m = Model(0, ncpu=2)
    m.update(snap(proc(10, 100.0, 5)), [], stats(), 0)
    f = m.update(snap(proc(10, 101.0, 5)), [], stats(), 2 * S)
    assert f.rows[0].cpu_pct == pytest.approx(50.0)
    assert f.meminfo.used_kib == 700 and f.drops["seen"] == 5


def test_reused_pid_is_a_new_row_without_delta():
    m = Model(0, ncpu=2)
    m.update(snap(proc(10, 500.0, start_ns=5)), [], stats(), 0)
    # same pid, another start time, less CPU: a new process, no negative delta
    f = m.update(snap(proc(10, 0.2, start_ns=7 * S)), [], stats(), 2 * S)
    assert f.rows[0].cpu_pct is None
    f = m.update(snap(proc(10, 1.2, start_ns=7 * S)), [], stats(), 4 * S)
    assert f.rows[0].cpu_pct == pytest.approx(50.0)


def test_proc_start_time_jitter_is_the_same_process():
    """/proc start times jitter by up to a tick between snapshots (boot offset re-read)."""
    m = Model(0, ncpu=2)
    m.update(snap(proc(10, 100.0, 5 * S)), [], stats(), 0)
    f = m.update(snap(proc(10, 101.0, 5 * S + 9_999_999)), [], stats(), 2 * S)
    assert f.rows[0].cpu_pct == pytest.approx(50.0)
    f = m.update(snap(proc(10, 102.0, 5 * S - 1)), [], stats(), 4 * S)
    assert f.rows[0].cpu_pct == pytest.approx(50.0)


def test_ps_reused_pid_without_start_time():
    m = Model(0, ncpu=2)
    m.update(snap(proc(10, 500.0, 0)), [], stats(), 0)
    assert m.update(snap(proc(10, 3.0, 0)), [], stats(), 2 * S).rows[0].cpu_pct is None
    # more CPU than 2 CPUs over 2 s (+ ps's one-second resolution) could give: reused
    assert m.update(snap(proc(10, 9.0, 0)), [], stats(), 4 * S).rows[0].cpu_pct is None
    # one more second (ps resolution) in 2 s: a delta
    assert m.update(snap(proc(10, 10.0, 0)), [], stats(), 6 * S).rows[0].cpu_pct == 50.0


def test_short_lived_counted_per_interval_with_exit_status():
    E = schema.EventType
    m = Model(0, ncpu=1)
    m.update(snap(), [], stats(), 0)
    recs = []
    for i in range(5):      # five born and dead inside the interval
        start = S + i * 1000
        recs += [rec(E.FORK, 100 + i, start, start),
                 rec(E.EXIT, 100 + i, start + 3 * 10**6, start, cpu_ms=i, hwm=100 * i,
                     status=9 if i == 4 else (i << 8))]
    recs.append(rec(E.EXIT, 50, S, start=1))          # born before: not short-lived
    recs.append(rec(E.FORK, 60, S, start=S))           # still alive
    recs.append(rec(E.CLONE, 60, S, start=S))
    f = m.update(snap(), recs, stats(dropped=2), 2 * S)
    assert f.short_count == 5 and f.short_total == 5
    assert f.totals == {"fork": 6, "clone": 1, "exec": 0, "exit": 6}
    assert f.per_s["fork"] == pytest.approx(3.0)
    top = f.short_by_cpu[0]
    assert (top.pid, top.exit, top.lifetime_ms) == (104, "SIGKILL", pytest.approx(3.0))
    assert [s.pid for s in f.short_by_peak] == [104, 103, 102]
    assert f.short_by_peak[1].exit == "3"
    assert f.drops["dropped"] == 2
    # the next interval: nothing new, totals stay
    f = m.update(snap(), [], stats(), 4 * S)
    assert f.short_count == 0 and f.short_total == 5 and f.totals["fork"] == 6


def test_uid_filter_and_sorts():
    m = Model(0, ncpu=1, uid=1000)
    m.update(snap(), [], stats(), 0)
    f = m.update(snap(proc(1, 1, 1, rss=5, uid=0), proc(2, 1, 1, rss=9, peak=9, uid=1000),
                      proc(3, 1, 1, rss=7, peak=50, uid=1000)), [], stats(), S)
    assert [r.pid for r in f.rows] == [2, 3]
    assert [r.pid for r in sort_rows(f.rows, "rss")] == [2, 3]
    assert [r.pid for r in sort_rows(f.rows, "peak")] == [3, 2]
    with pytest.raises(ValueError):
        sort_rows(f.rows, "bogus")


def run_top(*args, timeout=60):
    return subprocess.run([sys.executable, "-c", "from toolkit.cli import main; main()", "top", "--backend", "ps",
                           *args], capture_output=True, text=True, timeout=timeout)


def test_batch_jsonl_ps_stamped_iterations():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        r = run_top("--interval", "1.5", "--iterations", "2", "--format", "jsonl")
    finally:
        busy.kill()
        busy.wait(30)
    assert r.returncode == 0, r.stderr
    frames = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(frames) == 2 and frames[0]["time"] < frames[1]["time"]
    assert frames[1]["t_s"] > frames[0]["t_s"]
    assert frames[0]["short_lived"]["unseen_forks"] is not None    # ps: the kernel's count
    assert frames[0]["meminfo"]["total_kib"] > 0
    for fr in frames:
        pids = [p["pid"] for p in fr["processes"]]
        assert busy.pid in pids
        # ps has no peak RSS: null, never a 0 that looks like data
        assert {p["peak_kib"] for p in fr["processes"]} == {None}
    # sorted by CPU delta: the busy loop leads (ps counts whole seconds: >= 1 s in 1.5 s)
    last = frames[1]["processes"]
    assert last[0]["cpu_pct"] >= 60, last[:3]


def test_batch_csv_and_table():
    r = run_top("--interval", "0.5", "--once", "--format", "csv", "--sort", "pid")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    pids = [int(x["pid"]) for x in rows]
    assert pids == sorted(pids) and rows[0]["time"]
    assert {x["peak_kib"] for x in rows} == {""}       # ps: no peak RSS, an empty cell
    r = run_top("--interval", "0.5", "--once", "--limit", "3")
    assert r.returncode == 0 and "polling cannot see them" in r.stdout
    assert r.stdout.startswith("--- ") and "cpu%" in r.stdout
    assert set(column(r.stdout, "peak")) == {"-"}, r.stdout     # never 0K


def column(table: str, name: str) -> list[str]:
    """The cells of column @name in a tabulate "simple" table (by the dashes' spans, so
    an empty cell elsewhere does not shift it)."""
    lines = table.splitlines()
    head = next(i for i, line in enumerate(lines) if line.lstrip().startswith("pid"))
    spans = [m.span() for m in re.finditer(r"-+", lines[head + 1])]
    a, b = next(sp for sp in spans if lines[head][sp[0]:sp[1]].strip() == name)
    body = lines[head + 2:]
    body = body[:body.index("")] if "" in body else body       # the table ends at a blank
    cells = [line[a:b].strip() for line in body]
    assert cells, table
    return cells


def test_mem_ps_has_no_peak_rss():
    """`toolkit mem --backend ps`: ps has no peak RSS, shown as "-" and null, not 0."""
    r = subprocess.run([sys.executable, "-c", "from toolkit.cli import main; main()", "mem",
                        "--backend", "ps", "--top", "5"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert set(column(r.stdout.split("\n\n", 1)[1], "peak_kib")) == {"-"}, r.stdout
    r = subprocess.run([sys.executable, "-c", "from toolkit.cli import main; main()", "mem",
                        "--backend", "ps", "--format", "json"], capture_output=True,
                       text=True, timeout=60)
    procs = json.loads(r.stdout)["processes"]
    assert procs and {p["hiwater_rss_kib"] for p in procs} == {None}
    assert all(p["rss_kib"] is not None for p in procs)


@pytest.mark.parametrize("args,msg", [
    (["--interval", "0"], "--interval"),
    (["--interval", "-1"], "--interval"),
    (["--sort", "bogus"], "--sort"),
    (["--uid", "bob"], "--uid"),
    (["--format", "xml"], "--format"),
    (["--iterations", "0"], "--iterations"),
])
def test_bad_input_exit_2_no_traceback(args, msg):
    r = CliRunner().invoke(main, ["top", "--backend", "ps", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output
