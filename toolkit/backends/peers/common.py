"""What the peer backends share: a child process that dies with us, its output read
line by line without blocking, its CPU time from /proc, and one Backend base class that
turns parsed lines into counted records.

A peer runs with PR_SET_PDEATHSIG (SIGTERM): if the harness dies, even by SIGKILL, the
kernel signals the peer, so no peer process outlives the bench. State a peer leaves in
the kernel (audit rules) is cleaned by the next start (see auditd.py).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import shutil
import signal
import subprocess
import time
from typing import ClassVar

from ... import schema
from ..base import (UNTYPED, Backend, BackendError, Snapshot, Stats, deliver_children,
                    ensure_tracefs, event_counters, proc_snapshot)

PR_SET_PDEATHSIG = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
SYNC_TIMEOUT_S = 15.0
CLONE_THREAD = 0x00010000


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the process that started it dies."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(argv: list[str], output: bool = True, env: dict | None = None) -> subprocess.Popen:
    """Start a peer, killed with its parent: its output (stderr merged) on a pipe, or
    discarded (a daemon that logs elsewhere); `env` is added to our environment."""
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE if output else subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                            env=dict(os.environ, **env) if env else None)


def terminate(proc: subprocess.Popen | None, timeout: float = 5.0) -> int | None:
    """SIGTERM, then SIGKILL after `timeout`; reaps it. Returns its status."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of one process (or kernel thread), seconds; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(rest[11]) + int(rest[12])) / CLK_TCK    # fields 14 and 15


def pids_by_comm(comm: str) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == comm:
                        out.append(int(d))
            except OSError:
                pass
    return out


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def record(etype: schema.EventType, pid: int, *, tgid: int | None = None, ppid: int = 0,
           ts_ns: int = 0, exit_code: int = 0, comm: str = "", uid: int = 0,
           cpu: int = 0):
    """A Record with the fields a peer can fill; the rest are 0 (and declared not
    provided by the backend, so the report shows "-")."""
    return schema.Record(ts_ns=ts_ns, start_ns=0, cpu_ns=0, rss_kib=0, hiwater_rss_kib=0,
                         type=int(etype), pid=pid, tgid=pid if tgid is None else tgid,
                         ppid=ppid, uid=uid, cpu=cpu, flags=0, exit_code=exit_code,
                         comm=comm[:schema.COMM_LEN - 1])


class LineSource:
    """Complete lines from a pipe, a non-blocking read at a time."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = b""
        self.eof = False

    def lines(self, timeout: float) -> list[str]:
        if self.eof:
            return []
        r, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not r:
            return []
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            self.eof = True
            chunk = b"\n" if self.buf else b""
        self.buf += chunk
        *done, self.buf = self.buf.split(b"\n")
        return [d.decode(errors="replace") for d in done]


class PeerBackend(Backend):
    """A peer tool whose output lines become records. Subclasses give the command
    (argv), parse one line (parse_line, which may also count the tool's own losses
    with self.count_lost), and say which processes are theirs (own_pids)."""

    tool: ClassVar[str]                        # the binary that must be installed
    package: ClassVar[str]                     # the Debian package that has it
    # the reconcile tolerance this tool's clock needs (coarse or printed to ms)
    time_slack_ns: ClassVar[int] = 0
    env: ClassVar[dict | None] = None          # added to the tool's environment
    # how long the tool may take to say it is attached (a BCC compile: ~25 s under TCG)
    ready_timeout_s: ClassVar[float] = SYNC_TIMEOUT_S

    def __init__(self, uid: int | None = None, **options):
        super().__init__(uid=uid, **options)
        if uid is not None:
            raise BackendError(f"the {self.name} backend has no uid filter")
        self.proc: subprocess.Popen | None = None
        self.src: LineSource | None = None
        self._children: set[int] = set()
        self._tail: list[str] = []
        self.reset_stats()

    # ---------------------------------------------------------------- subclass API
    def argv(self) -> list[str]:
        raise NotImplementedError

    def parse_line(self, line: str) -> list:
        raise NotImplementedError

    def own_pids(self) -> list[int]:
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def spawned_pids(self) -> list[int]:
        """The tool's process, which this backend started (its threads follow it)."""
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def is_ready(self, line: str) -> bool:
        """The line the tool prints once it is attached (a header, READY)."""
        return True

    def count_lost(self, n: int) -> None:
        """The tool said it lost n events of unknown type."""
        c = self._counters[UNTYPED]
        c.seen += n
        c.dropped += n
        self._lost_reports += 1

    # ---------------------------------------------------------------- lifecycle
    def check_available(self) -> None:
        if os.geteuid() != 0:
            raise BackendError(f"{self.name} needs root", "run as root")
        if shutil.which(self.tool) is None:
            raise BackendError(f"{self.tool} is not installed",
                               f"apt-get install {self.package} (bin/setup installs it)")
        if "tracefs" in self.doctor_needs:      # its tracepoints are found through it
            ensure_tracefs(self.name)

    def start(self) -> None:
        self.check_available()
        self.proc = spawn(self.argv(), env=self.env)
        self.src = LineSource(self.proc.stdout.fileno())
        try:
            self._wait_ready()
            self._sync()
        except BackendError:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            for line in self._lines(0.2):
                if self.is_ready(line):
                    return
            if self.proc.poll() is not None and self.src.eof:
                break
        raise BackendError(f"{self.tool} did not start within {self.ready_timeout_s:.0f} s: "
                           + self._said())

    def _said(self) -> str:
        return " | ".join(self._tail[-5:]) or "no output"

    def _sync(self) -> None:
        """Run a marker process and wait until the tool reports it: then the tool
        really sees events (its probes attached, its rules loaded)."""
        marker = subprocess.Popen(["/bin/true"])
        marker.wait()
        deadline = time.monotonic() + SYNC_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(r.tgid == marker.pid or r.pid == marker.pid
                   for r in self._parse(self._lines(0.2))):
                return
            if self.proc is not None and self.proc.poll() is not None and self.src.eof:
                break
        raise BackendError(f"{self.tool} did not report a test process within "
                           f"{SYNC_TIMEOUT_S:.0f} s: " + self._said())

    def _lines(self, timeout: float) -> list[str]:
        lines = self.src.lines(timeout) if self.src else []
        self._tail = (self._tail + lines)[-20:]
        return lines

    def _parse(self, lines: list[str]) -> list:
        out = []
        for line in lines:
            try:
                recs = self.parse_line(line)
            except (ValueError, IndexError):
                recs = None
            if recs is None:
                self._unparsed += 1
                continue
            out.extend(recs)
        return out

    def read(self, timeout: float) -> list:
        if self.src is None:
            raise BackendError(f"{self.name} backend not started")
        out = []
        for rec in self._parse(self._lines(timeout)):
            if self._deliver(rec):
                out.append(rec)
        return out

    def _deliver(self, rec) -> bool:
        return deliver_children(rec, self._counters[rec.event], self.ppid_filter,
                                self._children)

    def set_ppid_filter(self, ppid: int | None) -> None:
        """A user-space filter: the children of `ppid`, followed from their fork."""
        self.ppid_filter = ppid
        self._children = set()

    def snapshot(self) -> Snapshot:
        return proc_snapshot()

    def _own_cpu(self) -> dict[int, float]:
        return {p: c for p in self.own_pids() if (c := proc_cpu_s(p)) is not None}

    def reset_stats(self) -> None:
        self._counters = event_counters(untyped=True)
        self._unparsed = self._lost_reports = 0
        self._cpu0 = self._own_cpu() if getattr(self, "proc", None) else {}

    def extra_stats(self) -> dict:
        return {}

    def stats(self) -> Stats:
        now = self._own_cpu()
        own = sum(c - self._cpu0.get(p, 0.0) for p, c in now.items())
        return Stats(backend=self.name, events=self._counters,
                     lost_in_transport=self._counters[UNTYPED].dropped,
                     extra={"own_cpu_s": own, "own_pids": sorted(now),
                            "argv": self.argv(), "unparsed_lines": self._unparsed,
                            "loss_reports": self._lost_reports, "pid": os.getpid(),
                            **self.extra_stats()})

    def stop(self) -> None:
        terminate(self.proc)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        self.src = None
