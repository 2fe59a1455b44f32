"""Reconciliation on ledgers and events recorded in the lab (QEMU TCG, Debian 6.1):
tests/data/bench/tcg-<backend>-{ledger,events}.csv, round 0 of a default run."""
import csv
from pathlib import Path

import pytest

from toolkit.bench import metrics
from toolkit.bench.ledger import LEDGER_FIELDS, LedgerRow, parse_event
from toolkit.bench.reconcile import reconcile

DATA = Path(__file__).parent / "data" / "bench"


def load(backend):
    with open(DATA / f"tcg-{backend}-ledger.csv", newline="") as f:
        raw = list(csv.DictReader(f))
    rows = [LedgerRow(**{k: int(r[k]) for k in LEDGER_FIELDS}) for r in raw]
    with open(DATA / f"tcg-{backend}-events.csv", newline="") as f:
        events = [parse_event(e) for e in csv.DictReader(f)]
    return rows, events, int(raw[0]["storm_pid"])


@pytest.mark.parametrize("backend", ["lkm", "ebpf"])
def test_recorded_kernel_backend_catches_every_child(backend):
    rows, events, storm = load(backend)
    rc = reconcile(rows, events, storm_pid=storm, exclude_pids={storm})
    assert rc.truth == {"fork": 300, "exec": 30, "exit": 300}
    assert {t: rc.captured(t) for t in rc.truth} == rc.truth
    assert rc.duplicates == {"fork": 0, "exec": 0, "exit": 0}
    assert rc.unmatched == {"fork": 0, "exec": 0, "exit": 0}
    m = metrics.backend_metrics([metrics.Capture(rc, records=len(events))])
    assert m["exit_code_agreement"] == 1.0
    assert m["latency_ms"]["p50"] > 0


def test_recorded_kernel_pid_shift_breaks_matching():
    # the identity check is real: shift every start time by 1 s and nothing matches
    rows, events, storm = load("lkm")
    shifted = [(t, r.__class__(**{**{f: getattr(r, f) for f in r.__slots__},
                                  "start_ns": r.start_ns + 10**9}))
               for t, r in events if r.type == 1]
    rc = reconcile(rows, shifted, storm_pid=storm)
    assert rc.captured("fork") == 0 and rc.unmatched["fork"] == 300


def test_recorded_ps_under_tcg_sees_almost_nothing_and_the_model_agrees():
    rows, events, storm = load("ps@0.1s")
    rc = reconcile(rows, events, poll=True, period_s=2.31, storm_pid=storm)
    cap = rc.captured("fork") / rc.truth["fork"]
    pred = metrics.ps_predicted_capture(rows, 2.31, 1.95)
    assert cap < 0.05 and abs(cap - pred) < 0.10
