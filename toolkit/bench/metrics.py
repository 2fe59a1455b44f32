"""From reconciled storms to the numbers in summary.json.

Every function here is pure (no I/O), so tests can feed it recorded ledgers and events.
"""
from __future__ import annotations

import dataclasses
import math
import random

from .ledger import LedgerRow
from .reconcile import TYPES, Reconciliation


def percentile(values, q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), None for no values."""
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def median(values) -> float | None:
    return percentile(values, 50)


def bootstrap_median_ci(values, level: float = 0.95, n: int = 2000,
                        seed: int = 12345) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of the median (deterministic seed)."""
    v = list(values)
    if not v:
        return None, None
    if len(v) == 1:
        return v[0], v[0]
    rng = random.Random(seed)
    meds = sorted(median(rng.choices(v, k=len(v))) for _ in range(n))
    a = (1 - level) / 2 * 100
    return percentile(meds, a), percentile(meds, 100 - a)


def ps_predicted_capture(rows: list[LedgerRow], period_s: float,
                         scan_s: float = 0.0) -> float | None:
    """What a poller with this period should catch: the chance that a poll catches a child,
    min(1, max(0, visible_i - scan) / period), averaged over children.

    `scan` is the lag between ps listing /proc (one getdents batch, right after it starts)
    and reading the listed pids' files, the storm's children (the newest, highest pids)
    last: a child must be alive at both. The harness measures it as the wall time of the
    ps command minus that of `ps --version` (fork, exec and startup come before the
    listing). scan = 0 gives the upper bound, scan = the whole wall time the lower one.
    """
    rows = [r for r in rows if r.pid > 0]
    if not rows or period_s <= 0:
        return None
    p, scan = period_s * 1e9, max(0.0, scan_s) * 1e9
    return sum(min(1.0, max(0.0, r.visible_ns - scan) / p) for r in rows) / len(rows)


@dataclasses.dataclass
class Capture:
    """One storm as one backend saw it, plus what the harness measured around it."""
    recon: Reconciliation
    poll: bool = False
    stats: dict | None = None          # base.Stats.as_dict() for this round
    cpu_s: float = 0.0                 # collector CPU during capture (harness + ps children)
    records: int = 0                   # all records received, any process
    period_s: float | None = None      # ps: effective poll period in this round
    scan_s: float = 0.0                # ps: listing-to-read lag (median)
    wall_s: float = 0.0                # ps: wall time of one ps run (median)


def _rel_err_pct(observed: int, truth: int) -> float | None:
    return abs(observed - truth) / truth * 100.0 if truth > 0 else None


def _counter_by_type(stats_list: list[dict], kind: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in stats_list:
        for name, c in (s.get("events") or {}).items():
            out[name] = out.get(name, 0) + int(c.get(kind, 0))
    return out


def _r(x, nd=3):
    return None if x is None else round(x, nd)


UNTYPED = "untyped"     # drops of unknown event type (base.UNTYPED)


def backend_metrics(caps: list[Capture], slowdowns_pct: list[float] | None = None,
                    forks_per_s: list[float] | None = None,
                    provides: list[str] | None = None, receipt_timed: bool = False,
                    event_types: list[str] | None = None) -> dict:
    """Aggregate the captures of one backend (all its rounds) into its summary entry.
    provides: the record fields the backend fills (None: all); a comparison that needs
    a field it lacks is None ("-"), not a zero."""
    has = (lambda f: True) if provides is None else (lambda f: f in provides)
    # event types the interface reports at all (taskstats and acct: exits only); the
    # others are unavailable: no capture, no misses
    sees = [t for t in TYPES if event_types is None or t in event_types]
    truth = dict.fromkeys(TYPES, 0)
    captured = dict.fromkeys(TYPES, 0)
    dups = dict.fromkeys(TYPES, 0)
    unmatched = dict.fromkeys(TYPES, 0)
    rss_err, peak_err, lat, codes_ok, codes_n = [], [], [], 0, 0
    poll = any(c.poll for c in caps)
    for c in caps:
        rc = c.recon
        rows = {r.idx: r for r in rc.rows}
        for t in TYPES:
            truth[t] += rc.truth[t]
            captured[t] += rc.captured(t)
            dups[t] += rc.duplicates[t]
            unmatched[t] += rc.unmatched[t]
            for idx, (receipt, rec) in rc.matched[t].items():
                row = rows[idx]
                if poll or (receipt_timed and t == "exit"):
                    # ps times are poll times, taskstats/acct exit times are receipt
                    # times: measure from the ledger's event time
                    ref = row.exit_ns if t == "exit" else row.forked_ns
                else:
                    ref = rec.ts_ns
                if ref:
                    lat.append((receipt - ref) / 1e6)
        for idx, (_, rec) in rc.matched["exit"].items():
            row = rows[idx]
            if row.exit_ns and row.rss_kib and has("rss_kib"):
                rss_err.append(_rel_err_pct(rec.rss_kib, row.rss_kib))
            if row.exit_ns and row.hwm_kib and not poll and has("hiwater_rss_kib"):
                peak_err.append(_rel_err_pct(rec.hiwater_rss_kib, row.hwm_kib))
            if not poll and has("exit_code"):
                codes_n += 1
                codes_ok += int(rec.exit_code == row.exit_status)
    stats = [c.stats for c in caps if c.stats]
    drops = _counter_by_type(stats, "dropped")
    missed = {t: truth[t] - captured[t] for t in sees}
    untyped = drops.get(UNTYPED, 0)   # lost messages of unknown type (cnproc seq gaps)
    dropped = sum(drops.get(t, 0) for t in TYPES) + untyped
    never_seen = max(0, sum(max(0, missed[t] - drops.get(t, 0)) for t in sees) - untyped)
    # What the hooks saw beyond the ledger (the storm process itself, the harness, the
    # rest of the machine; with --scope children these end up filtered, not dropped):
    # drops beyond the ledger's misses can only be such events.
    seen = _counter_by_type(stats, "seen")
    seen_other = {t: seen.get(t, 0) - truth[t] for t in sees} if stats else {}
    if stats and untyped:
        seen_other[UNTYPED] = seen.get(UNTYPED, 0)
    hook_count = sum(h.get("count", 0) for s in stats for h in s.get("hooks", []))
    hook_ns = sum(h.get("total_ns", 0) for s in stats for h in s.get("hooks", []))
    records = sum(c.records for c in caps)
    cpu = sum(c.cpu_s for c in caps)
    ci = bootstrap_median_ci(slowdowns_pct or [])
    out = {
        "truth": truth,
        "capture": {t: (_r(captured[t] / truth[t], 4) if truth[t] and t in sees else None)
                    for t in TYPES},
        "captured": captured,
        "missed": missed,
        "dropped": dropped,
        "dropped_by_type": drops,
        "dropped_untyped": untyped,
        "fields": provides,
        "never_seen": never_seen,
        "misses_equal_drops": sum(missed.values()) == dropped,
        "seen_by_type": {t: seen.get(t, 0) for t in TYPES} if stats else {},
        "filtered_by_type": ({t: v for t, v in _counter_by_type(stats, "filtered").items()
                              if t in TYPES} if stats else {}),
        "seen_other": seen_other,
        "dropped_other": ({t: drops.get(t, 0) - missed.get(t, 0) for t in sees}
                          | ({UNTYPED: untyped - sum(max(0, missed[t] - drops.get(t, 0))
                                                     for t in sees)} if untyped else {})
                          if stats else {}),
        "duplicates": dups,
        "unmatched": unmatched,
        "exit_code_agreement": _r(codes_ok / codes_n, 4) if codes_n else None,
        "rss_error_pct": {"median": _r(median(rss_err)), "p95": _r(percentile(rss_err, 95)),
                          "vs": "VmRSS", "n": len(rss_err)},
        "peak_rss_error_pct": {"median": _r(median(peak_err)),
                               "p95": _r(percentile(peak_err, 95)), "vs": "VmHWM",
                               "n": len(peak_err)},
        "latency_ms": {"p50": _r(percentile(lat, 50)), "p99": _r(percentile(lat, 99)),
                       "from": "ledger event time to receipt (poll times are not event "
                               "times)" if poll else "ledger exit time to receipt (the "
                               "records carry no event time)" if receipt_timed else
                               "record ts_ns to receipt",
                       "n": len(lat)},
        "overhead_pct": {"median": _r(median(slowdowns_pct or []), 2),
                         "ci95_low": _r(ci[0], 2), "ci95_high": _r(ci[1], 2),
                         "rounds": len(slowdowns_pct or [])},
        "forks_per_s": _r(median(forks_per_s or []), 1),
        "records": records,
        "cpu_s": _r(cpu, 4),
        "cpu_s_per_1k_events": _r(cpu / records * 1000, 4) if records else None,
        "ns_per_event": None if poll or not hook_count else _r(hook_ns / hook_count, 1),
        "hooks": _hooks(stats),
        "lost_in_transport": sum(s.get("lost_in_transport", 0) for s in stats),
        "read_lost": sum(s.get("read_lost", 0) for s in stats),
        "hook_missed": sum(s.get("missed", 0) for s in stats),
        "ring_size": max((s.get("ring_size", 0) for s in stats), default=0),
    }
    if poll:
        def weighted(scan_of):
            preds = [(ps_predicted_capture(c.recon.rows, c.period_s or 0, scan_of(c)),
                      c.recon.truth["fork"]) for c in caps]
            n = sum(w for p, w in preds if p is not None)
            return _r(sum(p * w for p, w in preds if p is not None) / n, 4) if n else None
        periods = [c.period_s for c in caps if c.period_s]
        out["ps_model"] = {
            "predicted_fork_capture": weighted(lambda c: c.scan_s),
            "predicted_low": weighted(lambda c: max(c.wall_s, c.scan_s)),
            "predicted_high": weighted(lambda c: 0.0),
            "measured_fork_capture": out["capture"]["fork"],
            "period_s": _r(median(periods), 4),
            "scan_s": _r(median([c.scan_s for c in caps]), 4),
            "ps_wall_s": _r(median([c.wall_s for c in caps]), 4),
            "visible": "fork_ns to exit_ns (a zombie has VSZ 0 and is not listed)",
            "model": "mean of min(1, max(0, visible - scan) / period); scan = ps wall time "
                     "- `ps --version` wall time; low/high: scan = wall time / 0",
        }
    return out


def _hooks(stats: list[dict]) -> list[dict]:
    acc: dict[str, dict] = {}
    for s in stats:
        for h in s.get("hooks", []):
            a = acc.setdefault(h["name"], {"name": h["name"], "count": 0, "total_ns": 0,
                                           "missed": 0})
            for k in ("count", "total_ns", "missed"):
                a[k] += int(h.get(k, 0))
    for a in acc.values():
        a["ns_per_call"] = round(a["total_ns"] / a["count"], 1) if a["count"] else None
    return list(acc.values())


def slowdowns(baseline: dict, attached: dict) -> list[float]:
    """Per round slowdown %: 1 - forks/s attached / forks/s with nothing attached, both
    keyed by (lifetime_ms, round) so each run is paired with its own round's baseline."""
    out = []
    for key, tput in attached.items():
        base = baseline.get(key)
        if base and tput:
            out.append((1.0 - tput / base) * 100.0)
    return out
