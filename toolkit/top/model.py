"""What `toolkit top` shows, computed from the backend's snapshots, records and stats,
without any terminal: the UI (render.py) and batch mode (batch.py) both draw a Frame.

- CPU % is the delta of a process's CPU time over the last interval (100 = one CPU),
  per process identified by (pid, start_ns): a reused pid is a new process, so a new row
  with no delta yet, never a negative or huge one. The ps backend does not know start
  times (start_ns 0); there a CPU time that went backwards, or grew more than the wall
  time allows on all CPUs, means the pid was reused and also starts a new row.
- Lifecycle counters (fork, clone = new thread, exec, exit) are counted from the records
  the backend delivered: totals since start and per second over the last interval.
- Short-lived processes: those whose fork and exit records (same (pid, start_ns)) both
  arrived inside the last interval, which no polling view can list.
"""
from __future__ import annotations

import dataclasses
import os
import pwd

from .. import schema
from ..backends.base import fills
from ..cli.common import status_text

SORT_KEYS = ("cpu", "rss", "peak", "pid", "age")
COUNTERS = ("fork", "clone", "exec", "exit")
PS_CPU_RESOLUTION_NS = 10**9     # ps -o cputimes: whole seconds
START_TOLERANCE_NS = 2 * 10**7   # two clock ticks at HZ 100 (/proc start times)
SHORT_TOP = 3       # short-lived processes shown by CPU time and by peak RSS


@dataclasses.dataclass
class Row:
    pid: int
    user: str
    uid: int
    ppid: int
    threads: int
    state: str
    cpu_pct: float | None        # None: first interval of this process
    cpu_ns: int
    rss_kib: int
    peak_kib: int | None         # None: the backend has no peak RSS (ps)
    comm: str
    age_s: float                 # since start (or since first seen when start is unknown)


@dataclasses.dataclass
class ShortLived:
    pid: int
    comm: str
    uid: int
    lifetime_ms: float
    cpu_ms: float
    peak_kib: int
    exit: str                    # exit code, or the signal's name


@dataclasses.dataclass
class Frame:
    t_s: float                                   # since the dashboard started
    interval_s: float                            # length of the last interval
    rows: list[Row]
    meminfo: object                              # backends.base.MemInfo
    source: dict
    totals: dict[str, int]
    per_s: dict[str, float]
    drops: dict[str, int]
    short_count: int                             # short-lived in the last interval
    short_total: int
    short_by_cpu: list[ShortLived]
    short_by_peak: list[ShortLived]
    unseen_forks: int | None = None              # ps: kernel forks ps never listed


_USERS: dict[int, str] = {}


def user_name(uid: int) -> str:
    if uid not in _USERS:
        try:
            _USERS[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            _USERS[uid] = str(uid)
    return _USERS[uid]


def drops_of(stats) -> dict[str, int]:
    """The backend's counters a user must see: events seen, and every way one was lost."""
    return {"seen": sum(c.seen for c in stats.events.values()),
            "dropped": stats.dropped, "missed": stats.missed,
            "lost": stats.lost_in_transport + stats.read_lost}


def sort_rows(rows: list[Row], key: str) -> list[Row]:
    if key not in SORT_KEYS:
        raise ValueError(f"unknown sort key {key!r}")
    k = {"cpu": lambda r: (-(r.cpu_pct or 0.0), -r.cpu_ns, r.pid),
         "rss": lambda r: (-r.rss_kib, r.pid), "peak": lambda r: (-(r.peak_kib or 0), r.pid),
         "pid": lambda r: r.pid, "age": lambda r: (r.age_s, r.pid)}[key]
    return sorted(rows, key=k)


class Model:
    """Feed it one interval at a time: update(snapshot, records, stats, now_ns)."""

    def __init__(self, t0_ns: int, ncpu: int | None = None, uid: int | None = None,
                 fields: frozenset[str] | None = None):
        self.t0_ns = t0_ns
        self.has_peak = fills(fields, "hiwater_rss_kib")     # the backend's snapshot_fields
        self.ncpu = ncpu or os.cpu_count() or 1
        self.uid = uid
        self._prev_ns = t0_ns
        self._cpu: dict[tuple[int, int], int] = {}          # (pid, start_ns) -> cpu_ns
        self._first_seen: dict[tuple[int, int], int] = {}
        self._starts: dict[int, int] = {}                   # pid -> start_ns as keyed
        self.totals = {c: 0 for c in COUNTERS}
        self.short_total = 0
        self._kernel_forks: int | None = None

    def _start_of(self, p) -> int:
        """The start time that names this process: /proc gives start times in clock
        ticks, converted with a boot-to-monotonic offset read anew each time, so the
        same process's start_ns jitters by up to a tick between snapshots; within
        START_TOLERANCE_NS of the previous start of that pid it is the same process."""
        prev = self._starts.get(p.pid)
        if prev is not None and abs(p.start_ns - prev) <= START_TOLERANCE_NS:
            return prev
        return p.start_ns

    def update(self, snap, records: list, stats, now_ns: int,
               kernel_forks: int | None = None) -> Frame:
        wall_ns = max(1, now_ns - self._prev_ns)
        rows = self._rows(snap, now_ns, wall_ns)
        interval, short = self._count(records)
        for c in COUNTERS:
            self.totals[c] += interval[c]
        self.short_total += len(short)
        frame = Frame(
            t_s=(now_ns - self.t0_ns) / 1e9, interval_s=wall_ns / 1e9, rows=rows,
            meminfo=snap.meminfo, source=dict(snap.source), totals=dict(self.totals),
            per_s={c: interval[c] * 1e9 / wall_ns for c in COUNTERS},
            drops=drops_of(stats), short_count=len(short), short_total=self.short_total,
            short_by_cpu=sorted(short, key=lambda s: -s.cpu_ms)[:SHORT_TOP],
            short_by_peak=sorted(short, key=lambda s: -s.peak_kib)[:SHORT_TOP],
            unseen_forks=self._unseen(kernel_forks, interval["fork"]))
        self._prev_ns = now_ns
        return frame

    def _rows(self, snap, now_ns: int, wall_ns: int) -> list[Row]:
        """The table: one row per process, CPU % as the delta over the interval."""
        rows, cpu, seen = [], {}, {}
        for p in snap.processes:
            if self.uid is not None and p.uid != self.uid:
                continue
            key = (p.pid, self._start_of(p))
            old = self._cpu.get(key)
            delta = None if old is None else p.cpu_ns - old
            # ps gives no start time (0) and whole seconds of CPU: there a reused pid
            # shows as CPU time going backwards or growing faster than every CPU could
            # run it (give or take ps's one-second resolution); either way a new process
            if delta is not None and (delta < 0 or (p.start_ns == 0 and delta > (
                    wall_ns * self.ncpu + PS_CPU_RESOLUTION_NS))):
                delta = None
                self._first_seen.pop(key, None)
            cpu[key] = p.cpu_ns
            first = self._first_seen.get(key, now_ns)
            seen[key] = first
            age_ns = now_ns - p.start_ns if p.start_ns else now_ns - first
            rows.append(Row(pid=p.pid, user=user_name(p.uid), uid=p.uid, ppid=p.ppid,
                            threads=p.threads, state=p.state,
                            cpu_pct=None if delta is None else 100.0 * delta / wall_ns,
                            cpu_ns=p.cpu_ns, rss_kib=p.rss_kib,
                            peak_kib=p.hiwater_rss_kib if self.has_peak else None,
                            comm=p.comm, age_s=max(0.0, age_ns / 1e9)))
        self._cpu, self._first_seen = cpu, seen
        self._starts = {pid: start for pid, start in cpu}
        return rows

    def _count(self, records: list) -> tuple[dict[str, int], list[ShortLived]]:
        """The interval's lifecycle counts, and the processes whose fork and exit both
        arrived in it (the short-lived)."""
        interval = {c: 0 for c in COUNTERS}
        forks: dict[tuple[int, int], object] = {}
        short: list[ShortLived] = []
        for r in records:
            if self.uid is not None and r.uid != self.uid:
                continue        # a backend filtering in user space (ps) already dropped them
            name = schema.EVENT_NAMES.get(r.type)
            if name in interval:
                interval[name] += 1
            if name == "fork":
                forks[r.key] = r
            elif name == "exit" and r.key in forks:
                f = forks.pop(r.key)
                short.append(ShortLived(
                    pid=r.tgid, comm=r.comm, uid=r.uid,
                    lifetime_ms=max(0, r.ts_ns - (r.start_ns or f.ts_ns)) / 1e6,
                    cpu_ms=r.cpu_ns / 1e6, peak_kib=r.hiwater_rss_kib,
                    exit=status_text(r.exit_code)))
        return interval, short

    def _unseen(self, kernel_forks: int | None, forks: int) -> int | None:
        """Forks the kernel counted that no record reported (a poller's blind spot)."""
        unseen = None
        if kernel_forks is not None:
            if self._kernel_forks is not None:
                unseen = max(0, kernel_forks - self._kernel_forks - forks)
            self._kernel_forks = kernel_forks
        return unseen
