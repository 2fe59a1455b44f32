"""forkstat, the proc connector as a command: `forkstat -l -e fork,exec,exit` (line
buffered, since its output goes to a pipe; the events its users watch).

Its output, one line per event (a fork is two lines, parent then child):

  Time     Event   PID Info   Duration Process
  20:06:41 fork  13074 parent          sh -c sleep 0.1; exit 3
  20:06:41 fork  13075 child           sleep 0.1
  20:06:41 exec  13075                 sleep 0.1
  20:06:41 exit  13074    768   0.100s sh -c sleep 0.1; exit 3

What it cannot give: the event's time (it prints the wall clock to the second, so ts_ns
is when the backend read the line: receipt-timed), uid, comm (it prints the command
line it reads from /proc, not the kernel's comm), CPU, start time and memory; exec and
exit name no parent, and a fork's parent line comes from /proc: for a child gone by
then forkstat prints "0 parent [swapper]" (ppid 0 here: unknown). Its threads' clones
are a separate event (clone) it is not asked for. Loss: when the socket's receive
buffer overflows recv() fails with ENOBUFS and forkstat prints "HH:MM:SS recv -----
nobufs ...": one such line means at least one message lost, counted as one untyped drop (a lower bound). The kernel's own count for
forkstat's socket (sk_drops in /proc/net/netlink) is reported beside it.
"""
from __future__ import annotations

import os
import re
import time

from ... import schema
from ..netlink import socket_drops
from .common import PeerBackend, record

LINE = re.compile(r"^(\S+)\s+(fork|exec|exit|clone|comm|core|ptrce|uid|sid)\s+(\d+)\s?(.*)$")
NOBUFS = re.compile(r"^\S+ recv -+ nobufs")


class Parser:
    """forkstat's lines -> records; a fork's child line takes the parent line's pid."""

    def __init__(self, count_lost=None):
        self.count_lost = count_lost
        self.parent: int | None = None

    def line(self, line: str, ts_ns: int = 0) -> list | None:
        if NOBUFS.match(line):
            if self.count_lost:
                self.count_lost(1)
            return []
        m = LINE.match(line)
        if not m:
            # the header, the -S statistics at exit, blank lines
            return [] if not line.strip() or line.startswith("Time ") or \
                line.lstrip()[:4] in ("Fork", "") or line.split()[0].isdigit() else None
        _t, event, pid, info = m.group(1), m.group(2), int(m.group(3)), m.group(4).split()
        if event == "fork":
            if info[:1] == ["parent"]:
                self.parent = pid
                return []
            ppid, self.parent = self.parent or 0, None
            return [record(schema.EventType.FORK, pid, ppid=ppid, ts_ns=ts_ns)]
        if event == "exec":
            return [record(schema.EventType.EXEC, pid, ts_ns=ts_ns)]
        if event == "exit":
            return [record(schema.EventType.EXIT, pid, ts_ns=ts_ns, exit_code=int(info[0]))]
        return []


class ForkstatBackend(PeerBackend):
    name = "forkstat"
    doctor_needs = ("root", "proc connector", "forkstat installed")
    tool = package = "forkstat"
    provides = frozenset({"ts_ns", "type", "pid", "tgid", "ppid", "exit_code"})
    event_time = "receipt"

    def __init__(self, uid: int | None = None, **options):
        super().__init__(uid=uid, **options)
        self.parser = Parser(self.count_lost)
        self._sk0 = 0

    def argv(self) -> list[str]:
        return ["forkstat", "-l", "-e", "fork,exec,exit"]

    def is_ready(self, line: str) -> bool:
        return line.startswith("Time ")

    def parse_line(self, line: str):
        return self.parser.line(line, time.monotonic_ns())

    def _socket_inodes(self) -> list[int]:
        out = []
        if self.proc is None:
            return out
        d = f"/proc/{self.proc.pid}/fd"
        try:
            for fd in os.listdir(d):
                link = os.readlink(f"{d}/{fd}")
                if link.startswith("socket:["):
                    out.append(int(link[8:-1]))
        except OSError:
            pass
        return out

    def _sk_drops(self) -> int | None:
        vals = [socket_drops(i) for i in self._socket_inodes()]
        vals = [v for v in vals if v is not None]
        return sum(vals) if vals else None

    def reset_stats(self) -> None:
        super().reset_stats()
        self._sk0 = (self._sk_drops() or 0) if getattr(self, "proc", None) else 0

    def extra_stats(self) -> dict:
        sk = self._sk_drops()
        return {"nobufs_lines": self._lost_reports,
                "kernel_socket_drops": None if sk is None else sk - self._sk0,
                "loss_source": "nobufs lines (>= 1 lost each); kernel_socket_drops: "
                               "the kernel's sk_drops for forkstat's socket"}
