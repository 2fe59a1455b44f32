"""Reconciliation on data recorded in the lab (QEMU TCG, Debian 6.1):
  * tests/data/bench/tcg-<backend>-{ledger,events}.csv, round 0 of a default run;
  * the committed reference runs under results/reference/: re-reconciled from their
    ledger.csv and events files, they must give the figures in their summary.json."""
import json
from pathlib import Path

import pytest

from toolkit.bench import metrics, raw_file
from toolkit.bench.harness import BackendSpec
from toolkit.bench.ledger import read_events, read_ledger, records_of
from toolkit.bench.reconcile import TOL_NS, TYPES, reconcile
from toolkit.paths import RESULTS_DIR

DATA = Path(__file__).parent / "data" / "bench"
REFERENCE = RESULTS_DIR / "reference"


def load(backend):
    ledger = read_ledger(DATA / f"tcg-{backend}-ledger.csv")
    events = read_events(DATA / f"tcg-{backend}-events.csv")
    return ledger, events, int(ledger["storm_pid"].iloc[0])


@pytest.mark.parametrize("backend", ["lkm", "ebpf"])
def test_recorded_kernel_backend_catches_every_child(backend):
    ledger, events, storm = load(backend)
    rc = reconcile(ledger, events, storm_pid=storm, exclude_pids={storm})
    assert rc.truth == {"fork": 300, "exec": 30, "exit": 300}
    assert {t: rc.captured(t) for t in rc.truth} == rc.truth
    assert rc.duplicates == {"fork": 0, "exec": 0, "exit": 0}
    assert rc.unmatched == {"fork": 0, "exec": 0, "exit": 0}
    m = metrics.backend_metrics([metrics.Capture(rc, records=len(events))])
    assert m["exit_code_agreement"] == 1.0
    assert m["latency_ms"]["p50"] > 0


def test_recorded_kernel_pid_shift_breaks_matching():
    # the identity check is real: shift every start time by 1 s and nothing matches
    ledger, events, storm = load("lkm")
    forks = events[events["type"] == 1].copy()
    forks["start_ns"] += 10**9
    rc = reconcile(ledger, forks, storm_pid=storm)
    assert rc.captured("fork") == 0 and rc.unmatched["fork"] == 300


def test_recorded_events_round_trip_through_records():
    _, events, _ = load("ebpf")
    pairs = records_of(events)
    assert len(pairs) == len(events) and pairs[0][1].comm == events["comm"].iloc[0]


def test_recorded_ps_under_tcg_sees_almost_nothing_and_the_model_agrees():
    ledger, events, storm = load("ps@0.1s")
    rc = reconcile(ledger, events, poll=True, period_s=2.31, storm_pid=storm)
    cap = rc.captured("fork") / rc.truth["fork"]
    pred = metrics.ps_predicted_capture(ledger, 2.31, 1.95)
    assert cap < 0.05 and abs(cap - pred) < 0.10


# ---------------------------------------------------------------- the reference runs
REFERENCE_RUNS = sorted(p.name for p in REFERENCE.iterdir()
                        if (p / "summary.json").exists() and raw_file(p / "ledger.csv").exists())


def rereconcile(run_dir: Path) -> tuple[dict, dict]:
    """Each backend's metrics computed again from the run's files, as the harness
    computes them (the same per-backend fields, event types and receipt windows); and
    the summary."""
    summary = json.loads((run_dir / "summary.json").read_text())
    ledger = read_ledger(run_dir / "ledger.csv")
    runs = {(r["backend"], r["storm_pid"]): r for r in summary["runs"]}
    out = {}
    for label, entry in summary["backends"].items():
        spec = BackendSpec(label, entry["backend"], entry.get("options") or {})
        events = read_events(run_dir / f"events-{label}.csv")
        keys = [k for k in ("lifetime_ms", "rate", "round", "storm_pid") if k in ledger]
        caps = []
        for key, led in ledger[ledger["backend"] == label].groupby(keys):
            sel = dict(zip(keys, key))
            ev = events
            for k, v in sel.items():
                if k in ev:
                    ev = ev[ev[k] == v]
            run = runs[(label, sel["storm_pid"])]
            period = run.get("period_s") or 1.0
            late = int((run["elapsed_s"] + 30) * 1e9) if spec.receipt_timed else 0
            rc = reconcile(led, ev, poll=spec.poll, period_s=period,
                           storm_pid=sel["storm_pid"], exclude_pids={sel["storm_pid"]},
                           receipt_late_ns=late,
                           tol_ns=max(TOL_NS, spec._attr("time_slack_ns", 0)))
            caps.append(metrics.Capture(rc, poll=spec.poll, records=len(ev), period_s=period))
        out[label] = metrics.backend_metrics(caps, provides=spec.provides,
                                             receipt_timed=spec.receipt_timed,
                                             event_types=spec.event_types)
    return out, summary


def close(a, b, rel=2e-3, abs_=2e-3):
    """Equal up to the rounding the summaries of format version 1 applied."""
    if a is None or b is None:
        return a is b
    return b == pytest.approx(a, rel=rel, abs=abs_)


@pytest.mark.parametrize("run", REFERENCE_RUNS)
def test_reference_runs_reconcile_to_their_own_figures(run):
    again, summary = rereconcile(REFERENCE / run)
    assert again, run
    for label, old in summary["backends"].items():
        new = again[label]
        for key in ("truth", "captured", "missed", "duplicates", "unmatched"):
            assert new[key] == {t: old[key][t] for t in TYPES if t in old[key]}, \
                (run, label, key)
        for t in TYPES:
            assert close(new["capture"][t], old["capture"][t]), (run, label, t)
        assert close(new["exit_code_agreement"], old["exit_code_agreement"]), (run, label)
        for key, fields in (("rss_error_pct", ("median", "p95")),
                            ("peak_rss_error_pct", ("median", "p95")),
                            ("latency_ms", ("p50", "p99"))):
            assert new[key]["n"] == old[key]["n"], (run, label, key)
            for f in fields:
                assert close(new[key][f], old[key][f], rel=1e-3, abs_=1.5e-3), \
                    (run, label, key, f, new[key][f], old[key][f])


def test_reference_runs_are_small_and_their_raw_files_compressed():
    """No committed reference file over 1 MB: raw CSV is kept as .csv.gz (the loaders
    read either), so the repository stays small while the tests re-reconcile the runs."""
    files = [p for p in REFERENCE.rglob("*") if p.is_file()]
    assert files
    big = [str(p) for p in files if p.stat().st_size > 1024 * 1024]
    assert big == []
    assert [str(p) for p in files if p.suffix == ".csv"] == []
