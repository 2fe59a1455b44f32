"""The baseline: polling `ps`, as a monitoring script would.

Every `interval` seconds it runs `ps -e` and diffs the table with the previous one: a pid
that appeared is a fork, a pid whose comm changed is an exec, a pid that vanished is an
exit. It cannot see anything that lived between two polls, and it cannot see exit codes
or peak RSS; timestamps are the poll's, not the event's. Everything it reports comes
from user space (procps reading /proc), and the records say so (flags without
TK_FLAG_HAS_MM, ts_ns = poll time). The `ps` processes it runs are left out.
"""
from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import subprocess
import time

from .. import schema
from .base import Backend, BackendError, HookStats, MemInfo, ProcInfo, Snapshot, Stats, \
    event_counters

PS_TABLE = ["ps", "-e", "-o", "pid=,ppid=,uid=,vsz=,rss=,comm="]
PS_SNAPSHOT = ["ps", "-e", "-o", "pid=,ppid=,uid=,state=,rss=,vsz=,cputimes=,nlwp=,comm="]


def parse_table(text: str) -> dict[int, tuple[int, int, int, str]]:
    """pid -> (ppid, uid, rss_kib, comm) from PS_TABLE; kernel threads (vsz 0) left out."""
    out = {}
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[3] != "0":
            pid, ppid, uid, _, rss, comm = parts
            out[int(pid)] = (int(ppid), int(uid), int(rss), comm)
    return out


def parse_snapshot(text: str) -> list[ProcInfo]:
    procs = []
    for line in text.splitlines():
        parts = line.split(None, 8)
        if len(parts) != 9:
            continue
        pid, ppid, uid, state, rss, vsz, cpus, nlwp, comm = parts
        if int(vsz) == 0:  # kernel threads have no address space
            continue
        procs.append(ProcInfo(pid=int(pid), ppid=int(ppid), uid=int(uid), comm=comm, state=state,
                              rss_kib=int(rss), hiwater_rss_kib=0, total_vm_kib=int(vsz),
                              cpu_ns=int(cpus) * 10**9, threads=int(nlwp)))
    return procs


def parse_free(text: str) -> MemInfo:
    """`free -k -w`: total used free shared buffers cache available."""
    for line in text.splitlines():
        if line.startswith("Mem:"):
            v = [int(x) for x in line.split()[1:]]
            return MemInfo(total_kib=v[0], used_kib=v[1], free_kib=v[2], buffers_kib=v[4],
                           cached_kib=v[5], available_kib=v[6])
    raise ValueError("no Mem: line in `free -k -w` output")


class PsBackend(Backend):
    name = "ps"
    polling = True
    # ps has no peak RSS and no start time (its age counts from first sight)
    snapshot_fields = frozenset(f.name for f in dataclasses.fields(ProcInfo)) - {
        "hiwater_rss_kib", "start_ns"}

    def __init__(self, uid: int | None = None, interval: float = 1.0, **options):
        super().__init__(uid=uid, **options)
        if interval <= 0:
            raise BackendError(f"ps interval must be > 0 s, got {interval}")
        self.interval = interval
        self._prev: dict[int, tuple[int, int, int, str]] | None = None
        self._next = 0.0
        self._counters = event_counters()
        self._polls = 0
        self._ps_cpu_s = 0.0

    def start(self) -> None:
        if not shutil.which("ps"):
            raise BackendError("`ps` not found", "apt-get install procps")
        self._prev = self._poll()
        self._next = time.monotonic() + self.interval

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.run(argv, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._ps_cpu_s += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if p.returncode not in (0, 1):
            raise BackendError(f"{' '.join(argv)} failed: {p.stderr.strip()}")
        return p

    def _poll(self) -> dict[int, tuple[int, int, int, str]]:
        p = subprocess.Popen(PS_TABLE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out, _ = p.communicate()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._ps_cpu_s += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self._polls += 1
        table = parse_table(out)
        table.pop(p.pid, None)  # the harness's own ps is not an observation
        return table

    def _emit(self, etype, pid, info, now) -> schema.Record | None:
        ppid, uid, rss, comm = info
        c = self._counters[schema.EVENT_NAMES[int(etype)]]
        c.seen += 1
        if self.uid_filter is not None and uid != self.uid_filter:
            c.filtered += 1
            return None
        c.delivered += 1
        is_exit = etype == schema.EventType.EXIT
        return schema.Record(ts_ns=now, start_ns=0, cpu_ns=0, rss_kib=rss if is_exit else 0,
                             hiwater_rss_kib=0, type=int(etype), pid=pid, tgid=pid, ppid=ppid,
                             uid=uid, cpu=0, flags=0, exit_code=0, comm=comm[:schema.COMM_LEN])

    def diff(self, prev, cur, now: int) -> list:
        recs = []
        for pid, info in cur.items():
            old = prev.get(pid)
            if old is None:
                recs.append(self._emit(schema.EventType.FORK, pid, info, now))
            elif old[3] != info[3]:
                recs.append(self._emit(schema.EventType.EXEC, pid, info, now))
        for pid, info in prev.items():
            if pid not in cur:
                recs.append(self._emit(schema.EventType.EXIT, pid, info, now))
        return [r for r in recs if r is not None]

    def read(self, timeout: float) -> list:
        if self._prev is None:
            raise BackendError("ps backend not started")
        wait = self._next - time.monotonic()
        if wait > timeout:
            time.sleep(max(0.0, timeout))
            return []
        time.sleep(max(0.0, wait))
        now = time.monotonic_ns()
        cur = self._poll()
        self._next = max(self._next + self.interval, time.monotonic())
        recs = self.diff(self._prev, cur, now)
        self._prev = cur
        return recs

    def snapshot(self) -> Snapshot:
        procs = parse_snapshot(self._run(PS_SNAPSHOT).stdout)
        mem = parse_free(self._run(["free", "-k", "-w"]).stdout)
        return Snapshot(procs, mem, source={
            "processes": "user space (ps reading /proc; no peak RSS or start time: shown as -)",
            "meminfo": "user space (free -k reading /proc/meminfo)"})

    def stats(self) -> Stats:
        return Stats(backend=self.name, events=self._counters,
                     hooks=[HookStats("ps poll", count=self._polls,
                                      total_ns=int(self._ps_cpu_s * 1e9))],
                     extra={"interval_s": self.interval, "polls": self._polls,
                            "ps_cpu_s": self._ps_cpu_s, "pid": os.getpid()})

    def reset_stats(self) -> None:
        self._counters = event_counters()
        self._polls, self._ps_cpu_s = 0, 0.0

    def stop(self) -> None:
        self._prev = None
