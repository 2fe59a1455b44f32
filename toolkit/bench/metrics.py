"""From reconciled storms to the numbers in summary.json.

Every function here is pure (no I/O), so tests can feed it recorded ledgers and events.
"""
from __future__ import annotations

import dataclasses
import random

import pandas as pd

from .ledger import truth_columns
from .reconcile import TYPES, Reconciliation


def percentile(values, q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), None for no values."""
    s = pd.Series(values, dtype="float64").dropna()
    return None if s.empty else float(s.quantile(q / 100.0))


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
    if any(x is None or x != x for x in v):         # None or NaN: percentile() drops them
        meds = sorted(median(rng.choices(v, k=len(v))) for _ in range(n))
    else:
        meds = sorted(_median_float(rng.choices(v, k=len(v))) for _ in range(n))
    a = (1 - level) / 2 * 100
    return percentile(meds, a), percentile(meds, 100 - a)


def _median_float(values) -> float:
    """median() of numbers without NaN, bit for bit (numpy's linear interpolation at
    q = 0.5: b - (b - a) * 0.5), without building a pandas Series: the bootstrap takes
    2000 of them, 1 s natively per CI through pandas and ~30 s under TCG."""
    s = sorted(float(x) for x in values)
    k, odd = divmod(len(s) - 1, 2)
    if not odd:
        return s[k]
    a, b = s[k], s[k + 1]
    return b - (b - a) * 0.5


def ps_predicted_capture(ledger, period_s: float, scan_s: float = 0.0) -> float | None:
    """What a poller with this period should catch: the chance that a poll catches a child,
    min(1, max(0, visible_i - scan) / period), averaged over children.

    `scan` is the lag between ps listing /proc (one getdents batch, right after it starts)
    and reading the listed pids' files, the storm's children (the newest, highest pids)
    last: a child must be alive at both. The harness measures it as the wall time of the
    ps command minus that of `ps --version` (fork, exec and startup come before the
    listing). scan = 0 gives the upper bound, scan = the whole wall time the lower one.
    """
    led = truth_columns(ledger)
    visible = led.loc[led["forked"], "visible_ns"]
    if visible.empty or period_s <= 0:
        return None
    scan = max(0.0, scan_s) * 1e9
    return float(((visible - scan).clip(lower=0) / (period_s * 1e9)).clip(upper=1).mean())


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


def _counter_by_type(stats_list: list[dict], kind: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in stats_list:
        for name, c in (s.get("events") or {}).items():
            out[name] = out.get(name, 0) + int(c.get(kind, 0))
    return out


def _matched(caps: list[Capture]) -> pd.DataFrame:
    frames = [c.recon.matched.assign(poll=c.poll) for c in caps if len(c.recon.matched)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["t", "poll", "receipt_ns", "ts_ns", "l_exit_ns", "l_forked_ns", "rss_kib",
                 "hiwater_rss_kib", "exit_code", "l_rss_kib", "l_hwm_kib", "l_exit_status"])


def _err_pct(observed: pd.Series, truth: pd.Series) -> pd.Series:
    return (observed - truth).abs() / truth * 100.0


def _pcts(values: pd.Series) -> dict:
    return {"median": median(values), "p95": percentile(values, 95)}


def _sum_by_type(dicts) -> dict[str, int]:
    dicts = list(dicts)
    return {t: int(sum(d[t] for d in dicts)) for t in TYPES}


UNTYPED = "untyped"     # drops of unknown event type (base.UNTYPED)

# summary.json's key order for one backend (as written before the split into steps)
SUMMARY_KEYS = (
    "truth", "capture", "captured", "missed", "dropped", "dropped_by_type",
    "dropped_untyped", "fields", "never_seen", "misses_equal_drops", "seen_by_type",
    "filtered_by_type", "seen_other", "dropped_other", "duplicates", "unmatched",
    "exit_code_agreement", "rss_error_pct", "peak_rss_error_pct", "latency_ms",
    "overhead_pct", "forks_per_s", "forks_per_s_per_round", "records", "cpu_s",
    "cpu_s_per_1k_events", "ns_per_event", "hooks", "lost_in_transport", "read_lost",
    "hook_missed", "ring_size", "ps_model")


@dataclasses.dataclass
class BackendSummary:
    """One backend's figures over all its rounds, in groups, each filled by one step
    below; as_dict() gives its summary.json entry (flat, as the format has it)."""
    capture: dict        # truth, capture, captured, missed, duplicates, unmatched
    drops: dict          # dropped*, never_seen, seen/filtered/other, transport losses
    errors: dict         # exit_code_agreement, rss_error_pct, peak_rss_error_pct
    latency: dict        # latency_ms
    overhead: dict       # overhead_pct, forks_per_s*, records, CPU, in-kernel ns, hooks
    fields: list[str] | None = None     # the record fields the backend fills (None: all)
    ps_model: dict | None = None        # pollers only: the model's prediction

    def as_dict(self) -> dict:
        flat = {**self.capture, **self.drops, **self.errors, "latency_ms": self.latency,
                **self.overhead, "fields": self.fields}
        if self.ps_model is not None:
            flat["ps_model"] = self.ps_model
        return {k: flat[k] for k in SUMMARY_KEYS if k in flat}


def _capture_step(caps: list[Capture], m: pd.DataFrame, sees: list[str]) -> dict:
    """Matched / truth per event type; the types the interface does not report at all
    have no capture (None) and no misses."""
    truth = _sum_by_type(c.recon.truth for c in caps)
    captured = {t: int((m["t"] == t).sum()) for t in TYPES}
    return {"truth": truth,
            "capture": {t: (captured[t] / truth[t] if truth[t] and t in sees else None)
                        for t in TYPES},
            "captured": captured,
            "missed": {t: truth[t] - captured[t] for t in sees},
            "duplicates": _sum_by_type(c.recon.duplicates for c in caps),
            "unmatched": _sum_by_type(c.recon.unmatched for c in caps)}


def _drops_step(stats: list[dict], truth: dict, missed: dict, sees: list[str]) -> dict:
    """The backend's own drop counters beside its misses: what they explain (never_seen
    is the rest) and what the hooks saw beyond the ledger. The storm process itself,
    the harness and the rest of the machine are such events (with --scope children
    they end up filtered, not dropped): drops beyond the ledger's misses can only be
    those."""
    drops = _counter_by_type(stats, "dropped")
    untyped = drops.get(UNTYPED, 0)   # lost messages of unknown type (cnproc seq gaps)
    dropped = sum(drops.get(t, 0) for t in TYPES) + untyped
    unexplained = sum(max(0, missed[t] - drops.get(t, 0)) for t in sees)
    seen = _counter_by_type(stats, "seen")
    seen_other = {t: seen.get(t, 0) - truth[t] for t in sees} if stats else {}
    if stats and untyped:
        seen_other[UNTYPED] = seen.get(UNTYPED, 0)
    dropped_other = {}
    if stats:
        dropped_other = {t: drops.get(t, 0) - missed.get(t, 0) for t in sees}
        if untyped:
            dropped_other[UNTYPED] = untyped - unexplained
    return {
        "dropped": dropped, "dropped_by_type": drops, "dropped_untyped": untyped,
        "never_seen": max(0, unexplained - untyped),
        "misses_equal_drops": sum(missed.values()) == dropped,
        "seen_by_type": {t: seen.get(t, 0) for t in TYPES} if stats else {},
        "filtered_by_type": ({t: v for t, v in _counter_by_type(stats, "filtered").items()
                              if t in TYPES} if stats else {}),
        "seen_other": seen_other, "dropped_other": dropped_other,
        "lost_in_transport": sum(s.get("lost_in_transport", 0) for s in stats),
        "read_lost": sum(s.get("read_lost", 0) for s in stats),
        "hook_missed": sum(s.get("missed", 0) for s in stats),
        "ring_size": max((s.get("ring_size", 0) for s in stats), default=0)}


def _errors_step(m: pd.DataFrame, has) -> dict:
    """Exit codes and RSS / peak RSS at exit against the child's own figures; a field
    the backend does not fill compares nothing (None, "-"), never a zero. Pollers have
    no exit code or peak of their own (their exit is the last poll's view)."""
    kernel = ~m["poll"].astype(bool)
    ended = (m["t"] == "exit") & (m["l_exit_ns"] != 0)
    ex = m[ended] if has("rss_kib") else m.iloc[0:0]
    rss_err = _err_pct(ex["rss_kib"], ex["l_rss_kib"])[ex["l_rss_kib"] != 0]
    kex = m[ended & kernel] if has("hiwater_rss_kib") else m.iloc[0:0]
    peak_err = _err_pct(kex["hiwater_rss_kib"], kex["l_hwm_kib"])[kex["l_hwm_kib"] != 0]
    kexits = m[(m["t"] == "exit") & kernel]
    if not has("exit_code"):
        kexits = kexits.iloc[0:0]
    codes_ok = int((kexits["exit_code"] == kexits["l_exit_status"]).sum())
    return {
        "exit_code_agreement": codes_ok / len(kexits) if len(kexits) else None,
        "rss_error_pct": {**_pcts(rss_err), "vs": "VmRSS", "n": int(len(rss_err))},
        "peak_rss_error_pct": {**_pcts(peak_err), "vs": "VmHWM", "n": int(len(peak_err))}}


def _latency_step(m: pd.DataFrame, poll: bool, receipt_timed: bool) -> dict:
    """Receipt time minus event time. Kernel backends: from the record's own time. A
    poller's times are poll times, and a receipt-timed record (taskstats and acct
    exits; forkstat's forks and execs too) carries none: measure those from the
    ledger's event time (exit for exits, fork for the rest)."""
    ledger_time = m["poll"].astype(bool) | receipt_timed
    ref = m["ts_ns"].where(~ledger_time,
                           m["l_exit_ns"].where(m["t"] == "exit", m["l_forked_ns"]))
    lat = ((m["receipt_ns"] - ref) / 1e6)[ref != 0]
    return {"p50": percentile(lat, 50), "p99": percentile(lat, 99),
            "from": "ledger event time to receipt (poll times are not event "
                    "times)" if poll else "ledger exit time to receipt (the "
                    "records carry no event time)" if receipt_timed else
                    "record ts_ns to receipt",
            "n": int(len(lat))}


def _overhead_step(caps: list[Capture], stats: list[dict], poll: bool,
                   slowdowns_pct: list[float], forks_per_s: list[float]) -> dict:
    """What watching costs: the storm's slowdown (median, bootstrap CI, per round),
    the collector's CPU per 1,000 records, the hooks' in-kernel time per event."""
    hooks = [h for s in stats for h in s.get("hooks", [])]
    hook_count = sum(h.get("count", 0) for h in hooks)
    hook_ns = sum(h.get("total_ns", 0) for h in hooks)
    records = sum(c.records for c in caps)
    cpu = sum(c.cpu_s for c in caps)
    ci = bootstrap_median_ci(slowdowns_pct)
    return {
        "overhead_pct": {"median": median(slowdowns_pct),
                         "ci95_low": ci[0], "ci95_high": ci[1],
                         "rounds": len(slowdowns_pct),
                         "per_round": list(slowdowns_pct)},
        "forks_per_s": median(forks_per_s),
        "forks_per_s_per_round": list(forks_per_s),
        "records": records,
        "cpu_s": cpu,
        "cpu_s_per_1k_events": cpu / records * 1000 if records else None,
        "ns_per_event": None if poll or not hook_count else hook_ns / hook_count,
        "hooks": _hooks(stats)}


def _ps_model_step(caps: list[Capture], measured_fork_capture: float | None) -> dict:
    """A poller's expected fork capture (ps_predicted_capture, weighted by each round's
    forks) at the measured scan lag, and its bounds, beside the measured capture."""
    def weighted(scan_of):
        preds = [(ps_predicted_capture(c.recon.ledger, c.period_s or 0, scan_of(c)),
                  c.recon.truth["fork"]) for c in caps]
        n = sum(w for p, w in preds if p is not None)
        return sum(p * w for p, w in preds if p is not None) / n if n else None
    return {
        "predicted_fork_capture": weighted(lambda c: c.scan_s),
        "predicted_low": weighted(lambda c: max(c.wall_s, c.scan_s)),
        "predicted_high": weighted(lambda c: 0.0),
        "measured_fork_capture": measured_fork_capture,
        "period_s": median([c.period_s for c in caps if c.period_s]),
        "scan_s": median([c.scan_s for c in caps]),
        "ps_wall_s": median([c.wall_s for c in caps]),
        "visible": "fork_ns to exit_ns (a zombie has VSZ 0 and is not listed)",
        "model": "mean of min(1, max(0, visible - scan) / period); scan = ps wall time "
                 "- `ps --version` wall time; low/high: scan = wall time / 0",
    }


def summarize_backend(caps: list[Capture], slowdowns_pct: list[float] | None = None,
                      forks_per_s: list[float] | None = None,
                      provides: list[str] | None = None, receipt_timed: bool = False,
                      event_types: list[str] | None = None) -> BackendSummary:
    """Aggregate the captures of one backend (all its rounds) into its BackendSummary.
    Values are raw (unrounded): the report rounds when it renders.
    provides: the record fields the backend fills (None: all); a comparison that needs
    a field it lacks is None ("-"), not a zero. event_types: the types the interface
    reports at all (taskstats and acct: exits only); the others have no capture and no
    misses. receipt_timed: exit records carry their receipt time, not the event's."""
    has = (lambda f: True) if provides is None else (lambda f: f in provides)
    sees = [t for t in TYPES if event_types is None or t in event_types]
    poll = any(c.poll for c in caps)
    m = _matched(caps)
    stats = [c.stats for c in caps if c.stats]
    capture = _capture_step(caps, m, sees)
    return BackendSummary(
        capture=capture,
        drops=_drops_step(stats, capture["truth"], capture["missed"], sees),
        errors=_errors_step(m, has),
        latency=_latency_step(m, poll, receipt_timed),
        overhead=_overhead_step(caps, stats, poll, slowdowns_pct or [], forks_per_s or []),
        fields=provides,
        ps_model=_ps_model_step(caps, capture["capture"]["fork"]) if poll else None)


def backend_metrics(caps: list[Capture], slowdowns_pct: list[float] | None = None,
                    forks_per_s: list[float] | None = None,
                    provides: list[str] | None = None, receipt_timed: bool = False,
                    event_types: list[str] | None = None) -> dict:
    """summarize_backend(...) as its summary.json entry (a flat dict)."""
    return summarize_backend(caps, slowdowns_pct, forks_per_s, provides, receipt_timed,
                             event_types).as_dict()


def _hooks(stats: list[dict]) -> list[dict]:
    acc: dict[str, dict] = {}
    for s in stats:
        for h in s.get("hooks", []):
            a = acc.setdefault(h["name"], {"name": h["name"], "count": 0, "total_ns": 0,
                                           "missed": 0})
            for k in ("count", "total_ns", "missed"):
                a[k] += int(h.get(k, 0))
    for a in acc.values():
        a["ns_per_call"] = a["total_ns"] / a["count"] if a["count"] else None
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
