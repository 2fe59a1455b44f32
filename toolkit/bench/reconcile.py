"""Match a backend's records to the ledger of one storm.

A process is named by (pid, start time), never by pid alone (PIDs are reused). A record
matches the ledger row whose pid equals the record's tgid and whose time window holds
the record's time:

  kernel backends (records carry the kernel's own times)
    fork  start_ns in [fork_ns, forked_ns]    (task start time is set inside fork())
    exec  ts_ns in [fork_ns, reap_ns]
    exit  ts_ns in [exit_ns, reap_ns]         (the child stamps exit_ns just before _exit)
  polling (ps: ts_ns is the time a poll started, start_ns is 0; the poll's scan of /proc
  ran somewhere in [ts_ns, receipt_ns], and under TCG that takes half a second)
    fork, exec  [ts_ns, receipt] overlaps [fork_ns, reap_ns]  (the pid is the child's then)
    exit  exit_ns <= receipt and ts_ns <= reap_ns + late  (ps notices a vanished pid at a
                                                           later poll; late = 2 periods + 1 s)

All windows widen by `tol_ns` on both sides. When several rows of the same pid qualify,
a row whose life [fork_ns, reap_ns] holds the record's time wins over one that only
qualifies through the slack; then the one that started last. A row is counted once per event
type; further matches are duplicates. Records of excluded pids (the harness's own
processes: the storm parent, each `ps`) are ignored, and so are event types the ledger
has no truth for (clone).
"""
from __future__ import annotations

import collections
import dataclasses

from .. import schema
from .ledger import LedgerRow

TYPES = ("fork", "exec", "exit")
TOL_NS = 1_000_000
FORK, EXEC, EXIT = (int(schema.EventType.FORK), int(schema.EventType.EXEC),
                    int(schema.EventType.EXIT))
_NAME = {FORK: "fork", EXEC: "exec", EXIT: "exit"}


@dataclasses.dataclass
class Reconciliation:
    """The outcome for one storm under one backend."""
    truth: dict[str, int]
    matched: dict[str, dict[int, tuple[int, object]]]   # type -> idx -> (receipt_ns, rec)
    duplicates: dict[str, int]
    unmatched: dict[str, int]     # records of storm children (ppid == storm) matching no row
    rows: list[LedgerRow]

    def captured(self, t: str) -> int:
        return len(self.matched[t])

    def missed(self, t: str) -> int:
        return self.truth[t] - self.captured(t)

    def seen_flags(self, row: LedgerRow) -> dict[str, int]:
        return {f"seen_{t}": int(row.idx in self.matched[t]) for t in TYPES}


def truth_of(rows: list[LedgerRow]) -> dict[str, int]:
    return {"fork": sum(1 for r in rows if r.pid > 0),
            "exec": sum(1 for r in rows if r.pid > 0 and r.exec_ok),
            "exit": sum(1 for r in rows if r.pid > 0)}


def _window(row: LedgerRow, etype: int, poll: bool, late_ns: int, tol: int):
    lo = row.fork_ns - tol
    hi = row.reap_ns + tol
    if etype == FORK and not poll:
        hi = row.forked_ns + tol
    elif etype == EXIT:
        lo = (row.exit_ns or row.fork_ns) - tol
        hi += late_ns   # poll, or a receipt-timed exit (late_ns 0 for kernel-timed)
    return lo, hi


def match_record(rec, cands: list[LedgerRow], poll: bool, late_ns: int = 0,
                 tol: int = TOL_NS, receipt_ns: int | None = None) -> LedgerRow | None:
    """The ledger row (among rows of the record's pid) this record belongs to, or None.
    A record's time is a point (kernel) or, for a poll, the span [ts_ns, receipt_ns]."""
    if rec.type == FORK and not poll and rec.start_ns:
        k_lo = k_hi = rec.start_ns
    else:
        k_lo = rec.ts_ns
        k_hi = max(k_lo, receipt_ns or k_lo) if poll else k_lo
    best, best_score = None, None
    for row in cands:
        lo, hi = _window(row, rec.type, poll, late_ns, tol)
        if k_lo <= hi and lo <= k_hi:
            inside = row.fork_ns <= k_lo <= row.reap_ns or row.fork_ns <= k_hi <= row.reap_ns
            score = (0 if inside else 1, -lo)
            if best is None or score < best_score:
                best, best_score = row, score
    return best


def reconcile(rows: list[LedgerRow], events: list[tuple[int, object]], *, poll: bool = False,
              period_s: float = 1.0, storm_pid: int | None = None,
              exclude_pids=(), tol_ns: int = TOL_NS,
              receipt_late_ns: int = 0) -> Reconciliation:
    """Match (receipt_ns, Record) pairs against one storm's ledger rows.
    receipt_late_ns: for a backend whose exit records carry the time they were received,
    not the event's (taskstats, acct), how long after the reap an exit may arrive."""
    by_pid: dict[int, list[LedgerRow]] = collections.defaultdict(list)
    for r in rows:
        if r.pid > 0:
            by_pid[r.pid].append(r)
    exec_truth = {r.idx for r in rows if r.exec_ok}
    late_ns = int((2 * period_s + 1.0) * 1e9) if poll else receipt_late_ns
    exclude = set(exclude_pids)
    matched = {t: {} for t in TYPES}
    dups = dict.fromkeys(TYPES, 0)
    unmatched = dict.fromkeys(TYPES, 0)
    for receipt, rec in events:
        t = _NAME.get(rec.type)
        if t is None or rec.tgid in exclude:
            continue
        if rec.type == FORK and rec.pid != rec.tgid:
            continue  # not a new process
        row = match_record(rec, by_pid.get(rec.tgid, ()), poll, late_ns, tol_ns, receipt)
        if row is None or (t == "exec" and row.idx not in exec_truth):
            if storm_pid is not None and rec.ppid == storm_pid:
                unmatched[t] += 1
            continue
        if row.idx in matched[t]:
            dups[t] += 1
            continue
        matched[t][row.idx] = (receipt, rec)
    return Reconciliation(truth=truth_of(rows), matched=matched, duplicates=dups,
                          unmatched=unmatched, rows=rows)
