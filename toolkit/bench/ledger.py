"""The ground-truth ledger written by bench/forkstorm.c, and the events files."""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from .. import schema

LEDGER_FIELDS = ["idx", "pid", "fork_ns", "forked_ns", "exec", "exit_ns", "reap_ns",
                 "exit_status", "rss_kib", "hwm_kib", "threads"]
EXEC_FAILED = 127 << 8     # tk-child could not be exec'd: the child _exit(127)s


@dataclasses.dataclass
class LedgerRow:
    """One child of one storm. Times are CLOCK_MONOTONIC ns."""
    idx: int
    pid: int
    fork_ns: int        # parent, just before fork()
    forked_ns: int      # parent, just after fork() returned
    exec: int           # 1 if the child exec'd tk-child
    exit_ns: int        # child, just before _exit (0: the child never wrote its slot)
    reap_ns: int        # parent, after waitpid()
    exit_status: int    # wait(2) status
    rss_kib: int        # child's VmRSS just before exit
    hwm_kib: int        # child's VmHWM just before exit
    threads: int

    @property
    def exec_ok(self) -> bool:
        return bool(self.exec) and self.exit_status != EXEC_FAILED and self.exit_ns > 0

    @property
    def visible_ns(self) -> int:
        """How long `ps` can see the child: from fork until it exits (a zombie has no mm,
        VSZ 0, and the ps backend leaves VSZ-0 rows out as kernel threads)."""
        end = self.exit_ns or self.reap_ns
        return max(0, end - self.fork_ns)


def read_ledger(path: Path | str) -> list[LedgerRow]:
    with open(path, newline="") as f:
        return [LedgerRow(**{k: int(row[k]) for k in LEDGER_FIELDS}) for row in csv.DictReader(f)]


def write_ledger(path: Path | str, rows: list[LedgerRow]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(LEDGER_FIELDS)
        for r in rows:
            w.writerow([getattr(r, k) for k in LEDGER_FIELDS])


# ---------------------------------------------------------------- events files
EVENT_FIELDS = ["receipt_ns"] + schema.FIELD_NAMES


def event_row(receipt_ns: int, rec) -> list:
    return [receipt_ns] + [getattr(rec, n) for n in schema.FIELD_NAMES]


def parse_event(row: dict) -> tuple[int, object]:
    """One events-file row; a row of an older record version (a results file written
    before fields were appended) reads the appended fields as 0."""
    v = row.get("record_version")
    if v in (None, ""):     # no version column: the newest version whose columns it has
        version = max((ver for ver in range(schema.OLDEST_READABLE_VERSION,
                                            schema.RECORD_VERSION + 1)
                       if all(n in row for n in schema.fields_of_version(ver))),
                      default=schema.RECORD_VERSION)
    else:
        version = int(v)
    try:
        present = set(schema.fields_of_version(version))
    except ValueError as e:
        raise ValueError(f"events file: {e}") from None
    values = {n: (row[n] if n == "comm" else int(row[n]) if n in present else 0)
              for n in schema.FIELD_NAMES}
    return int(row["receipt_ns"]), schema.Record(**values)


def read_events(path: Path | str) -> list[tuple[int, object]]:
    """(receipt_ns, Record) pairs from an events file (extra columns are ignored)."""
    with open(path, newline="") as f:
        return [parse_event(row) for row in csv.DictReader(f)]
