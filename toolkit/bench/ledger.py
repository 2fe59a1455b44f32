"""The ground-truth ledger written by bench/forkstorm.c, and the events files, as pandas
DataFrames (one row per child, one row per record)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from .. import schema
from . import raw_file

LEDGER_FIELDS = ["idx", "pid", "fork_ns", "forked_ns", "exec", "exit_ns", "reap_ns",
                 "exit_status", "rss_kib", "hwm_kib", "threads"]
EXEC_FAILED = 127 << 8     # tk-child could not be exec'd: the child _exit(127)s
EVENT_FIELDS = ["receipt_ns"] + schema.FIELD_NAMES


@dataclasses.dataclass
class LedgerRow:
    """One child of one storm, as forkstorm writes it. Times are CLOCK_MONOTONIC ns.
    (A convenience for building ledgers by hand; the bench itself works on frames.)"""
    idx: int
    pid: int            # 0: fork() failed
    fork_ns: int        # parent, just before fork()
    forked_ns: int      # parent, just after fork() returned
    exec: int           # 1 if the child exec'd tk-child
    exit_ns: int        # child, just before _exit (0: the child never wrote its slot)
    reap_ns: int        # parent, after waitpid() (0: never reaped)
    exit_status: int    # wait(2) status
    rss_kib: int        # child's VmRSS just before exit
    hwm_kib: int        # child's VmHWM just before exit
    threads: int


def ledger_frame(rows) -> pd.DataFrame:
    """A ledger DataFrame from a DataFrame, or a list of LedgerRow or dicts."""
    if isinstance(rows, pd.DataFrame):
        df = rows
    else:
        df = pd.DataFrame([dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r
                           for r in rows], columns=LEDGER_FIELDS)
    return df.astype({k: "int64" for k in LEDGER_FIELDS})


def truth_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The ledger with what counts as truth, per child:
      forked   fork() gave it a pid
      exec_ok  it exec'd tk-child and that exec succeeded (it lived to write its slot)
      reaped   the workload reaped it (waitpid returned): only then has it surely exited
      visible_ns  how long `ps` can see it: fork until exit (a zombie has no mm, VSZ 0,
               and is left out as a kernel thread would be)"""
    df = ledger_frame(df).copy()
    df["forked"] = df["pid"] > 0
    df["exec_ok"] = (df["exec"] != 0) & (df["exit_status"] != EXEC_FAILED) & (df["exit_ns"] > 0)
    df["reaped"] = df["forked"] & (df["reap_ns"] > 0)
    end = df["exit_ns"].where(df["exit_ns"] > 0, df["reap_ns"])
    df["visible_ns"] = (end - df["fork_ns"]).clip(lower=0)
    return df


def truth_of(df: pd.DataFrame) -> dict[str, int]:
    """Per event type, how many events the ledger says happened."""
    t = truth_columns(df)
    return {"fork": int(t["forked"].sum()), "exec": int((t["forked"] & t["exec_ok"]).sum()),
            "exit": int(t["reaped"].sum())}


def read_ledger(path: Path | str) -> pd.DataFrame:
    """forkstorm's ledger CSV (or the run directory's ledger.csv or ledger.csv.gz, extra
    columns kept)."""
    return pd.read_csv(raw_file(path)).astype({k: "int64" for k in LEDGER_FIELDS})


# ---------------------------------------------------------------- events
_EVENT_DTYPES = {n: ("str" if n == "comm" else "int64") for n in EVENT_FIELDS}


def events_frame(events) -> pd.DataFrame:
    """(receipt_ns, Record) pairs, or a DataFrame of them, as an events DataFrame."""
    if isinstance(events, pd.DataFrame):
        return events
    rows = [(receipt, *(getattr(rec, n) for n in schema.FIELD_NAMES)) for receipt, rec in events]
    return pd.DataFrame(rows, columns=EVENT_FIELDS).astype(_EVENT_DTYPES)


def read_events(path: Path | str) -> pd.DataFrame:
    """An events file (the record's fields, receipt_ns, and the bench's columns). A file
    of an older record version (written before fields were appended) reads the appended
    fields as 0; a version this toolkit does not know is a ValueError. `.csv` or `.csv.gz`."""
    df = pd.read_csv(raw_file(path), dtype={"comm": "str"}, keep_default_na=False)
    if "record_version" in df and len(df):
        for version in sorted(set(df["record_version"].astype(int))):
            schema.fields_of_version(version)       # raises for an unknown version
    for name in schema.FIELD_NAMES:
        if name not in df:
            df[name] = "" if name == "comm" else 0
    return df.astype(_EVENT_DTYPES)


def records_of(df: pd.DataFrame) -> list[tuple[int, object]]:
    """(receipt_ns, schema.Record) pairs from an events DataFrame."""
    return [(int(row["receipt_ns"]),
             schema.Record(**{n: (row[n] if n == "comm" else int(row[n]))
                              for n in schema.FIELD_NAMES}))
            for row in df.to_dict("records")]
