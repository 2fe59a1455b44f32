"""Match a backend's records to the ledger of one storm: a pandas merge on pid and a
filter on time windows.

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
qualifies through the slack; then the one that started last; then the first in the
ledger. A row is counted once per event type, by the first record that matches it;
further matches are duplicates. Records of excluded pids (the harness's own processes:
the storm parent, each `ps`) are ignored, and so are event types the ledger has no
truth for (clone).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .. import schema
from .ledger import events_frame, truth_columns, truth_of

TYPES = ("fork", "exec", "exit")
TOL_NS = 1_000_000
FORK, EXEC, EXIT = (int(schema.EventType.FORK), int(schema.EventType.EXEC),
                    int(schema.EventType.EXIT))
_NAME = {FORK: "fork", EXEC: "exec", EXIT: "exit"}


@dataclasses.dataclass
class Reconciliation:
    """The outcome for one storm under one backend."""
    truth: dict[str, int]
    # one row per matched (type, ledger row): the type `t`, the record's fields and
    # receipt_ns, and the ledger row's fields prefixed `l_`
    matched: pd.DataFrame
    duplicates: dict[str, int]
    unmatched: dict[str, int]     # records of storm children (ppid == storm) matching no row
    ledger: pd.DataFrame          # the storm's ledger with truth_columns()

    def captured(self, t: str) -> int:
        return int((self.matched["t"] == t).sum())

    def missed(self, t: str) -> int:
        return self.truth[t] - self.captured(t)

    def matched_idx(self, t: str) -> set[int]:
        return set(self.matched.loc[self.matched["t"] == t, "l_idx"].astype(int))

    def seen_columns(self) -> pd.DataFrame:
        """seen_fork, seen_exec, seen_exit (0/1) for each ledger row, in ledger order."""
        out = pd.DataFrame(index=self.ledger.index)
        for t in TYPES:
            out[f"seen_{t}"] = self.ledger["idx"].isin(self.matched_idx(t)).astype(int)
        return out


def _candidates(ev: pd.DataFrame, led: pd.DataFrame, poll: bool, late_ns: int,
                tol: int) -> pd.DataFrame:
    """Every (record, ledger row of its pid) pair whose time window holds the record,
    with what decides between rows of the same pid."""
    point = (ev["type"] == FORK) & (ev["start_ns"] != 0) & (not poll)
    ev = ev.assign(k_lo=np.where(point, ev["start_ns"], ev["ts_ns"]))
    k_hi = np.maximum(ev["ts_ns"], ev["receipt_ns"]) if poll else ev["ts_ns"]
    ev = ev.assign(k_hi=np.where(point, ev["start_ns"], k_hi))
    m = ev.merge(led.add_prefix("l_"), left_on="tgid", right_on="l_pid", how="inner")
    lo = m["l_fork_ns"] - tol
    hi = m["l_reap_ns"] + tol
    if not poll:
        hi = hi.where(m["type"] != FORK, m["l_forked_ns"] + tol)
    is_exit = m["type"] == EXIT
    exit_lo = m["l_exit_ns"].where(m["l_exit_ns"] > 0, m["l_fork_ns"]) - tol
    lo = lo.where(~is_exit, exit_lo)
    # a poll's exits, or any receipt-timed record (late_ns is 0 otherwise)
    hi = hi.where(~is_exit, hi + late_ns) if poll else hi + late_ns
    inside = (((m["l_fork_ns"] <= m["k_lo"]) & (m["k_lo"] <= m["l_reap_ns"]))
              | ((m["l_fork_ns"] <= m["k_hi"]) & (m["k_hi"] <= m["l_reap_ns"])))
    m = m.assign(lo=lo, slack_only=~inside)
    return m[(m["k_lo"] <= hi) & (lo <= m["k_hi"])]


def reconcile(ledger, events, *, poll: bool = False, period_s: float = 1.0,
              storm_pid: int | None = None, exclude_pids=(), tol_ns: int = TOL_NS,
              receipt_late_ns: int = 0) -> Reconciliation:
    """Match one storm's records ((receipt_ns, Record) pairs or an events DataFrame)
    against its ledger (a DataFrame or LedgerRows). receipt_late_ns: for a backend whose
    exit records carry the time they were received, not the event's (taskstats, acct),
    how long after the reap an exit may arrive."""
    led = truth_columns(ledger)
    led = led[led["forked"]].reset_index(drop=True)
    led["order"] = np.arange(len(led))
    ev = events_frame(events).reset_index(drop=True)
    ev = ev.assign(seq=np.arange(len(ev)), t=ev["type"].map(_NAME))
    ev = ev[ev["t"].notna() & ~ev["tgid"].isin(list(exclude_pids))
            & ~((ev["type"] == FORK) & (ev["pid"] != ev["tgid"]))]   # a thread: no process
    late_ns = int((2 * period_s + 1.0) * 1e9) if poll else receipt_late_ns

    cands = _candidates(ev, led, poll, late_ns, tol_ns)
    best = (cands.sort_values(["seq", "slack_only", "lo", "l_order"],
                              ascending=[True, True, False, True], kind="mergesort")
            .drop_duplicates("seq", keep="first"))
    # an exec record whose row did not exec (successfully) matches nothing
    best = best[(best["t"] != "exec") | best["l_exec_ok"]]
    dup = best.duplicated(["t", "l_idx"], keep="first")
    matched = best[~dup].drop(columns=["k_lo", "k_hi", "lo", "slack_only"])
    duplicates = best[dup]["t"].value_counts()
    lost = ev[~ev["seq"].isin(best["seq"])]
    unmatched = (lost[lost["ppid"] == storm_pid]["t"].value_counts()
                 if storm_pid is not None else pd.Series(dtype=int))
    return Reconciliation(truth=truth_of(led), matched=matched.reset_index(drop=True),
                          duplicates={t: int(duplicates.get(t, 0)) for t in TYPES},
                          unmatched={t: int(unmatched.get(t, 0)) for t in TYPES},
                          ledger=led)
