"""`toolkit export` scraped by a real Prometheus (Debian's `prometheus`, installed by
bin/setup), natively with the cnproc backend (root; not `kernel`: the proc connector
works on this kernel, so these run in the native pass).

Each test starts its own Prometheus on loopback with a temporary config and storage
directory (scrape interval 1 s) and an exporter on a free port; every wait is bounded
and both are killed in teardown.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from click.testing import CliRunner
from promstack import (TOOLKIT, Exporter, free_port, need_tool, settled,  # noqa: F401
                       stack, storm, wait_for)

from toolkit import export as ex
from toolkit.cli import main
from toolkit.paths import ROOT as REPO

ROOT = os.geteuid() == 0
RULES = REPO / "contrib" / "prometheus" / "toolkit-alerts.yml"
needs_root = pytest.mark.skipif(not ROOT, reason="the proc connector needs root")


# ---------------------------------------------------------------- with a real Prometheus

@needs_root
def test_prometheus_reports_exactly_the_storms_children(stack, storm):
    """Filtered to the storm's parent, Prometheus holds exactly its forks and exits."""
    n = 400
    s = storm(n)
    exp, prom = stack("--backend", "cnproc", "--ppid", str(s.pid), "-o", "rcvbuf=16777216",
                      "--interval", "60", "--linger", "4")
    assert prom.query('toolkit_events_total{type="fork"}') == 0
    summary = s.go()
    assert summary.get("forked", n) == n
    forks = settled(prom, 'toolkit_events_total{type="fork",backend="cnproc"}', at_least=n)
    drops = prom.query("sum(toolkit_events_dropped_total)")
    assert drops == 0, f"{drops} events dropped despite a 16 MiB socket buffer"
    assert forks == n
    assert settled(prom, 'toolkit_events_total{type="exit"}', at_least=n) == n
    assert prom.query('increase(toolkit_events_total{type="fork"}[5m])') >= n
    # forks and exits of one window (60 s): at most the 4 children alive at a window
    # boundary (forkstorm's default concurrency) are not short-lived
    short = prom.query("toolkit_short_lived_processes_total")
    assert n - 4 <= short <= n
    assert prom.query('toolkit_events_filtered_total{type="fork"}') >= 0
    final = exp.stop()
    assert final["final_stats"]["events"]["fork"]["delivered"] == n
    assert final["short_lived"] == short
    assert "export: stopped" in exp.stderr() and "Traceback" not in exp.stderr()


@needs_root
def test_prometheus_sees_at_least_the_storm_unfiltered(stack, storm):
    """Unfiltered (everything the machine forks), increase() is at least the storm's
    children; Ctrl-C (SIGINT) stops the exporter cleanly."""
    n = 300
    s = storm(n)
    exp, prom = stack("--backend", "cnproc", "-o", "rcvbuf=16777216")
    wait_for("a pre-storm sample", lambda: prom.query(
        'count_over_time(toolkit_events_total{type="fork"}[1m])') >= 2, 20)
    s.go()
    got = wait_for("the storm's forks and exits in Prometheus", lambda: (
        (prom.query('increase(toolkit_events_total{type="fork"}[5m])') or 0) >= n
        and (prom.query('increase(toolkit_events_total{type="exit"}[5m])') or 0) >= n), 30)
    assert got
    assert prom.query("toolkit_collector_up") == 1
    assert prom.query('count(toolkit_build_info{record_version="%d",kernel="%s"})'
                      % (ex.schema.RECORD_VERSION, os.uname().release)) == 1
    assert prom.query('process_resident_memory_bytes{backend="cnproc"}') > 0
    exp.proc.send_signal(signal.SIGINT)
    assert exp.proc.wait(30) == 0, exp.stderr()
    assert "export: stopped" in exp.stderr() and "Traceback" not in exp.stderr()


@needs_root
def test_forced_drops_reach_prometheus_as_the_backends_own_count(stack, storm, tmp_path):
    """A tiny socket buffer (rcvbuf=1: the kernel's minimum) loses messages during a
    storm; Prometheus's toolkit_events_dropped_total is then the backend's own drop
    count (the sockets' sk_drops), the final one, served during --linger."""
    s = storm(3000)
    exp, prom = stack("--backend", "cnproc", "-o", "rcvbuf=1", "--linger", "4")
    s.go()
    time.sleep(1.5)
    final = exp.stop()["final_stats"]
    own = sum(v or 0 for v in final["extra"]["socket_drops"].values())
    assert own > 0, "no drop with the minimum socket buffer: nothing to compare"
    assert final["dropped"] == own
    expr = "sum(last_over_time(toolkit_events_dropped_total{reason='socket_drops'}[1m]))"
    assert prom.query(expr) == own
    assert prom.query("sum(last_over_time(toolkit_events_dropped_total[1m]))") == \
        own + final["missed"] + final["read_lost"]


# ---------------------------------------------------------------- as a service

def test_port_taken_is_an_error_not_a_traceback():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        r = subprocess.run([TOOLKIT, "export", "--backend", "cnproc", "--listen",
                            f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}: the port is taken")
    assert "Traceback" not in r.stderr


def test_backend_that_cannot_run_here_is_an_error():
    """The kprobe module cannot load on this kernel (no modules): a clear error, exit 2,
    and the port it had bound is free again."""
    port = free_port()
    r = subprocess.run([TOOLKIT, "export", "--backend", "lkm", "--listen",
                        f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


@pytest.mark.parametrize("listen", ["9464", "host:port", "127.0.0.1:70000"])
def test_bad_listen(listen):
    r = CliRunner().invoke(main, ["export", "--backend", "cnproc", "--listen", listen])
    assert r.exit_code == 2
    assert "error: --listen" in r.output


def test_parse_listen():
    assert ex.parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert ex.parse_listen(":0") == ("127.0.0.1", 0)
    assert ex.parse_listen("[::1]:9464") == ("::1", 9464)


def test_systemd_unit_runs_the_exporter():
    unit = (REPO / "contrib" / "systemd" / "toolkit-export.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
    assert exec_start[1] == "export" and "--backend" in exec_start
    assert re.search(r"^KillSignal=SIGTERM$", unit, re.M)
    assert re.search(r"^Restart=on-failure$", unit, re.M)


# ---------------------------------------------------------------- fleet: alert rules

def test_alert_rules_pass_promtool():
    r = subprocess.run([need_tool("promtool"), "check", "rules", str(RULES)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 3 rules found" in r.stdout


def test_alert_rules_fire_on_their_conditions():
    """promtool's rule unit tests (contrib/prometheus/toolkit-alerts.test.yml): each
    alert fires on a made-up series that should trigger it and not on a quiet one."""
    tests = RULES.with_name("toolkit-alerts.test.yml")
    r = subprocess.run([need_tool("promtool"), "test", "rules", str(tests)],
                       capture_output=True, text=True, timeout=60, cwd=tests.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


# ---------------------------------------------------------------- the pieces

def _rec(event, tgid, ts_s, **kw):
    from toolkit import schema
    fields = {f: 0 for f in schema.FIELD_NAMES}
    fields.update(type=schema.EVENT_BY_NAME[event], pid=tgid, tgid=tgid,
                  ts_ns=int(ts_s * 1e9), comm="x", **kw)
    return schema.Record(**fields)


def test_tally_counts_a_fork_and_exit_of_one_window():
    t = ex.Tally(window_s=1.0)
    t.feed([_rec("fork", 10, 5.1), _rec("exit", 10, 5.2),       # short-lived
            _rec("fork", 11, 5.9), _rec("exit", 11, 6.1),       # across a boundary
            _rec("fork", 12, 6.2)])                             # still alive
    t.feed([_rec("fork", 13, 9.0), _rec("exit", 12, 9.5), _rec("exit", 13, 9.6)])
    assert t.short_lived == 2
    assert set(t._forks) == set()       # memory stays small: old windows' forks are gone


def test_tally_counts_quota_kills_by_kind():
    from toolkit import schema
    t = ex.Tally()
    t.feed([_rec("kill", 5, 1.0, quota_kind=schema.QUOTA_KINDS["heap"]),
            _rec("kill", 6, 1.0, quota_kind=schema.QUOTA_KINDS["files"]),
            _rec("kill", 7, 1.0, quota_kind=schema.QUOTA_KINDS["heap"])])
    assert t.kills == {"heap": 2, "files": 1}


def test_drops_by_reason_is_a_partition():
    from toolkit.backends import base
    ev = base.event_counters()
    ev["fork"].dropped, ev["exit"].dropped = 3, 4
    hooks = [base.HookStats(name=n, count=10, total_ns=100, missed=m)
             for (n, _sym, _ev), m in zip(ex.schema.HOOKS, (2, 1, 0, 0, 0, 0))]
    st = base.Stats(backend="x", events=ev, hooks=hooks, lost_in_transport=7, read_lost=5)
    rows = ex.drops_by_reason(st)
    assert sum(n for _t, _r, n in rows) == 3 + 4 + 3 + 5     # transport is inside dropped
    assert {r for _t, r, _n in rows} <= set(ex.REASONS)
    assert (ex.schema.HOOKS[0][2], "hook_missed", 2) in rows


@needs_root
def test_no_series_for_a_type_the_interface_cannot_see(tmp_path):
    """taskstats reports exits only (Backend.event_types): no fork series at 0 that
    would look like a count, and its drops are socket drops of exits."""
    exp = Exporter(tmp_path, "--backend", "taskstats")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{exp.port}/metrics", timeout=10) as r:
            body = r.read().decode()
        assert 'toolkit_events_total{backend="taskstats",type="exit"}' in body
        assert 'type="fork"' not in body and 'type="exec"' not in body
        assert 'reason="socket_drops",type="exit"' in body
        exp.stop()
    finally:
        exp.kill()
