"""Reconciliation and metrics on hand-made ledgers and records (native, no kernel)."""
import pytest

from toolkit import schema
from toolkit.bench import metrics
from toolkit.bench.ledger import EXEC_FAILED, LedgerRow
from toolkit.bench.reconcile import reconcile

MS = 1_000_000
FORK, EXEC, EXIT, CLONE = (int(schema.EventType.FORK), int(schema.EventType.EXEC),
                           int(schema.EventType.EXIT), int(schema.EventType.CLONE))
STORM = 900


def row(idx, pid, t0_ms, life_ms=2, exec_=0, status=None, rss=1000, hwm=1200):
    t0 = t0_ms * MS
    return LedgerRow(idx=idx, pid=pid, fork_ns=t0, forked_ns=t0 + MS // 10, exec=exec_,
                     exit_ns=t0 + life_ms * MS, reap_ns=t0 + life_ms * MS + MS // 2,
                     exit_status=(idx % 7) << 8 if status is None else status,
                     rss_kib=rss, hwm_kib=hwm, threads=0)


def rec(etype, pid, ts, start=0, code=0, rss=0, hwm=0, ppid=STORM, tgid=None, comm="forkstorm"):
    return schema.Record(ts_ns=ts, start_ns=start, cpu_ns=0, rss_kib=rss, hiwater_rss_kib=hwm,
                         type=etype, pid=pid, tgid=pid if tgid is None else tgid, ppid=ppid,
                         uid=0, cpu=0, flags=1, exit_code=code, comm=comm)


def kernel_events(r, exec_=False, recv_delay=MS):
    """What a perfect kernel backend reports for one ledger row."""
    ev = [rec(FORK, r.pid, r.fork_ns + 20_000, start=r.fork_ns + 10_000)]
    if exec_:
        ev.append(rec(EXEC, r.pid, r.forked_ns + MS // 10, start=r.fork_ns + 10_000,
                      comm="tk-child"))
    ev.append(rec(EXIT, r.pid, r.exit_ns + 5_000, start=r.fork_ns + 10_000,
                  code=r.exit_status, rss=r.rss_kib, hwm=r.hwm_kib))
    return [(e.ts_ns + recv_delay, e) for e in ev]


def test_perfect_backend_captures_everything():
    rows = [row(i, 100 + i, 10 * i, exec_=int(i % 2 == 0)) for i in range(10)]
    events = [e for r in rows for e in kernel_events(r, exec_=bool(r.exec))]
    rc = reconcile(rows, events, storm_pid=STORM)
    assert rc.truth == {"fork": 10, "exec": 5, "exit": 10}
    assert {t: rc.captured(t) for t in rc.truth} == rc.truth
    m = metrics.backend_metrics([metrics.Capture(rc, records=len(events))])
    assert m["capture"] == {"fork": 1.0, "exec": 1.0, "exit": 1.0}
    assert m["exit_code_agreement"] == 1.0
    assert m["rss_error_pct"]["median"] == 0 and m["peak_rss_error_pct"]["p95"] == 0
    assert m["latency_ms"]["p50"] == pytest.approx(1.0)
    assert m["never_seen"] == 0 and m["misses_equal_drops"]


def test_pid_reuse_is_told_apart_by_start_time():
    # the same pid 4242 names three different children, one after another
    rows = [row(0, 4242, 0), row(1, 4242, 10), row(2, 4242, 20), row(3, 77, 5)]
    events = []
    for r in rows:
        events += kernel_events(r)
    # the middle child's fork record is lost: its exit must not steal a fork match
    events = [(t, e) for t, e in events
              if not (e.type == FORK and e.start_ns == rows[1].fork_ns + 10_000)]
    rc = reconcile(rows, events, storm_pid=STORM)
    assert rc.matched_idx("fork") == {0, 2, 3}
    assert rc.matched_idx("exit") == {0, 1, 2, 3}
    # each exit record went to the row whose life holds its time
    exits = rc.matched[rc.matched["t"] == "exit"]
    assert len(exits) == 4
    for idx, code in zip(exits["l_idx"], exits["exit_code"]):
        assert code == rows[idx].exit_status
    assert rc.duplicates == {"fork": 0, "exec": 0, "exit": 0}


def test_fork_outside_the_fork_window_does_not_match():
    r = row(0, 500, 100)
    late = rec(FORK, 500, r.fork_ns + 50 * MS, start=r.fork_ns + 5 * MS)  # start after forked
    rc = reconcile([r], [(late.ts_ns, late)], storm_pid=STORM)
    assert rc.captured("fork") == 0 and rc.unmatched["fork"] == 1


def test_exclusions_threads_and_duplicates():
    r = row(0, 600, 0)
    evs = kernel_events(r)
    evs.append(evs[0])                                             # duplicate fork
    evs.append((1, rec(CLONE, 601, r.fork_ns + MS, tgid=600)))     # a thread: no truth
    evs.append((1, rec(FORK, 601, r.fork_ns + MS, tgid=600)))      # fork with pid != tgid
    evs.append((1, rec(EXIT, STORM, r.reap_ns, ppid=1)))           # the storm itself
    rc = reconcile([r], evs, storm_pid=STORM, exclude_pids={STORM})
    assert rc.captured("fork") == 1 and rc.duplicates["fork"] == 1
    assert rc.unmatched == {"fork": 0, "exec": 0, "exit": 0}


def test_failed_exec_is_not_exec_truth():
    rows = [row(0, 10, 0, exec_=1, status=EXEC_FAILED), row(1, 11, 5, exec_=1)]
    rc = reconcile(rows, [], storm_pid=STORM)
    assert rc.truth == {"fork": 2, "exec": 1, "exit": 2}


def _stats(seen=None, **dropped):
    seen = seen or {}
    return {"events": {t: {"seen": seen.get(t, 0), "filtered": 0, "delivered": 0,
                           "dropped": dropped.get(t, 0)}
                       for t in ("fork", "clone", "exec", "exit")},
            "hooks": [{"name": "h", "count": 10, "total_ns": 5000, "missed": 0}],
            "lost_in_transport": 0, "read_lost": 0, "missed": 0, "ring_size": 8}


def test_every_miss_is_a_counted_drop():
    rows = [row(i, 200 + i, 10 * i) for i in range(6)]
    events = [e for r in rows for e in kernel_events(r)]
    # the ring overflowed: forks of rows 4,5 and the exit of row 5 never arrived
    lost = {(FORK, 204), (FORK, 205), (EXIT, 205)}
    events = [(t, e) for t, e in events if (e.type, e.pid) not in lost]
    rc = reconcile(rows, events, storm_pid=STORM)
    m = metrics.backend_metrics([metrics.Capture(rc, stats=_stats(fork=2, exit=1),
                                                 records=len(events))])
    assert m["missed"] == {"fork": 2, "exec": 0, "exit": 1}
    assert m["dropped"] == 3 and m["never_seen"] == 0 and m["misses_equal_drops"]
    assert m["ns_per_event"] == 500.0


def test_misses_without_drops_are_flagged_never_seen():
    rows = [row(i, 300 + i, 10 * i) for i in range(4)]
    events = [e for r in rows for e in kernel_events(r) if e[1].pid != 303]
    rc = reconcile(rows, events, storm_pid=STORM)
    m = metrics.backend_metrics([metrics.Capture(rc, stats=_stats(fork=1))])
    assert m["missed"] == {"fork": 1, "exec": 0, "exit": 1}
    assert m["never_seen"] == 1 and not m["misses_equal_drops"]
    from toolkit import report
    s = {"backends": {"lkm": {"backend": "lkm", **m}}}
    assert any("no drop counter explains" in f for f in report.flags(s))


def _with_drops(seen, scope, **dropped):
    rows = [row(i, 400 + i, 10 * i) for i in range(4)]
    events = [e for r in rows for e in kernel_events(r) if (e[1].type, e[1].pid) != (FORK, 403)]
    rc = reconcile(rows, events, storm_pid=STORM)
    m = metrics.backend_metrics([metrics.Capture(rc, stats=_stats(seen, **dropped))])
    from toolkit import report
    s = {"environment": {"parameters": {"scope": scope}},
         "backends": {"lkm": {"backend": "lkm", **m}}}
    return m, report.flags(s)


def test_drops_beyond_misses_are_other_processes_events_and_bounded_by_them():
    # one fork missed; 3 fork drops: 2 were other processes' forks, which the hook saw
    m, fl = _with_drops({"fork": 6, "exit": 4}, "system", fork=3)
    assert m["never_seen"] == 0 and m["seen_other"] == {"fork": 2, "exec": 0, "exit": 0}
    assert m["dropped_other"] == {"fork": 2, "exec": 0, "exit": 0}
    assert fl == []
    # the same drops, but the hooks saw nothing beyond the ledger: double counting
    m, fl = _with_drops({"fork": 4, "exit": 4}, "system", fork=3)
    assert any("more drops than misses" in f for f in fl)


def test_scope_children_wants_misses_equal_drops_exactly():
    m, fl = _with_drops({"fork": 6, "exit": 4}, "children", fork=1)
    assert m["misses_equal_drops"] and fl == []
    m, fl = _with_drops({"fork": 6, "exit": 4}, "children", fork=3)
    assert any("only the storm's children" in f for f in fl)


# ---------------------------------------------------------------- ps
def test_ps_matching_uses_poll_windows():
    # children 0 and 2 live 200 ms, 1 lives 1 ms; polls at 0, 100, 300, 500 ms
    rows = [row(0, 40, 50, life_ms=200), row(1, 41, 160, life_ms=1),
            row(2, 42, 260, life_ms=200)]
    ev = [rec(FORK, 40, 100 * MS), rec(FORK, 42, 300 * MS),
          rec(EXIT, 40, 300 * MS, rss=900),       # gone at the 300 ms poll
          rec(EXIT, 42, 500 * MS, rss=1000),
          # a poll starting just before a fork can still list the child (ps walks /proc)
          ]
    events = [(e.ts_ns + 5 * MS, e) for e in ev]
    rc = reconcile(rows, events, poll=True, period_s=0.1, storm_pid=STORM)
    assert rc.matched_idx("fork") == {0, 2} and rc.matched_idx("exit") == {0, 2}
    m = metrics.backend_metrics([metrics.Capture(rc, poll=True, period_s=0.1)])
    assert m["capture"]["fork"] == pytest.approx(2 / 3, abs=1e-3)
    assert m["exit_code_agreement"] is None and m["ns_per_event"] is None
    assert m["rss_error_pct"]["median"] == pytest.approx(5.0)   # (1000-900)/1000, 0
    # latency from the ledger's fork time: 100+5-50.1 ms for child 0
    assert m["latency_ms"]["n"] == 4
    assert m["ps_model"]["predicted_fork_capture"] == pytest.approx((1 + 0.01 + 1) / 3)


def test_ps_model():
    rows = [row(i, 10 + i, 1000 + i, life_ms=life) for i, life in enumerate([0, 10, 100, 1000, 5000])]
    # visible = exit_ns - fork_ns = life; period 1 s
    exp = (0 + 0.01 + 0.1 + 1 + 1) / 5
    assert metrics.ps_predicted_capture(rows, 1.0) == pytest.approx(exp)
    assert metrics.ps_predicted_capture(rows, 0.1) == pytest.approx((0 + 0.1 + 1 + 1 + 1) / 5)
    assert metrics.ps_predicted_capture([], 1.0) is None


# ---------------------------------------------------------------- stats helpers
def test_percentile_and_bootstrap():
    assert metrics.percentile([], 50) is None
    assert metrics.percentile([1, 2, 3, 4], 50) == 2.5
    assert metrics.percentile([5], 99) == 5
    lo, hi = metrics.bootstrap_median_ci([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert lo <= metrics.median(range(1, 11)) <= hi and lo >= 1 and hi <= 10
    assert metrics.bootstrap_median_ci([1, 2, 3]) == metrics.bootstrap_median_ci([1, 2, 3])
    assert metrics.bootstrap_median_ci([4.0]) == (4.0, 4.0)


def test_slowdowns_pair_rounds():
    base = {(0, 0): 100.0, (0, 1): 200.0}
    att = {(0, 0): 90.0, (0, 1): 200.0, (0, 2): 50.0}   # round 2 has no baseline: skipped
    assert metrics.slowdowns(base, att) == pytest.approx([10.0, 0.0])


def test_ps_poll_span_matches_a_child_forked_during_a_slow_scan():
    # under TCG one ps takes ~0.7 s: the poll's ts is long before the child even existed,
    # but the scan (ts .. receipt) overlapped its life (taken from a real lab run)
    r = LedgerRow(idx=90, pid=1034, fork_ns=204255640884, forked_ns=204256692794, exec=1,
                  exit_ns=204390078524, reap_ns=204413624134, exit_status=1536, rss_kib=2644,
                  hwm_kib=2644, threads=0)
    fork = rec(FORK, 1034, 203695222894, comm="tk-child")
    gone = rec(EXIT, 1034, 204424846424, rss=2644, comm="tk-child")
    rc = reconcile([r], [(204424002004, fork), (204687405574, gone)], poll=True, period_s=0.54,
                   storm_pid=STORM)
    assert rc.matched_idx("fork") == {90} and rc.matched_idx("exit") == {90}
    # the same record without the span (receipt == ts) cannot be this child's
    rc = reconcile([r], [(fork.ts_ns, fork)], poll=True, period_s=0.54, storm_pid=STORM)
    assert rc.captured("fork") == 0


def test_ps_model_subtracts_the_scan_time():
    rows = [row(i, 10 + i, 1000 + 10 * i, life_ms=life) for i, life in enumerate([20, 100, 600])]
    # period 0.5 s, scan 0.05 s: (0 + 0.05/0.5 + 0.55/0.5 -> 1) / 3
    assert metrics.ps_predicted_capture(rows, 0.5, 0.05) == pytest.approx((0 + 0.1 + 1) / 3)
