"""bpftrace, the ad-hoc answer: a script of ours on the kernel's classic tracepoints,
printing one line per event, run as `bpftrace -e PROGRAM`, as its users run it.

  fork  tracepoint:task:task_newtask, which carries the clone flags (CLONE_THREAD tells
        a thread's clone from a process fork; sched:sched_process_fork does not carry
        them, so a one-liner on it counts threads as forks)
  exec  tracepoint:sched:sched_process_exec
  exit  tracepoint:sched:sched_process_exit for a thread-group leader (pid == tid, as
        exitsnoop defines a process exit); the tracepoint has no exit code (its fields
        on 6.18: comm, pid, prio, group_dead), so the script reads curtask->exit_code
        (the wait(2) status) through BTF

Times are `nsecs` (CLOCK_MONOTONIC, the event's own time). It cannot see start time,
CPU time or memory. Loss: bpftrace's perf buffer (BPFTRACE_PERF_RB_PAGES, 64 pages per
CPU by default) drops samples when its reader is late; bpftrace prints "Lost N events",
parsed here as N untyped drops.
"""
from __future__ import annotations

import re

from ... import schema
from .common import CLONE_THREAD, PeerBackend, record

SCRIPT = r"""
BEGIN { printf("READY\n"); }
tracepoint:task:task_newtask
{
	printf("F %llu %d %d %d %d %llu %s\n", nsecs, cpu, args->pid, pid, uid,
	       args->clone_flags, comm);
}
tracepoint:sched:sched_process_exec
{
	printf("E %llu %d %d %d %d %s\n", nsecs, cpu, pid, curtask->real_parent->tgid, uid,
	       comm);
}
tracepoint:sched:sched_process_exit /pid == tid/
{
	printf("X %llu %d %d %d %d %d %s\n", nsecs, cpu, pid, curtask->real_parent->tgid,
	       uid, curtask->exit_code, comm);
}
"""

LOST = re.compile(r"^Lost (\d+) events")


def parse_line(line: str, count_lost=None) -> list | None:
    """One line of the script's output -> [Record], [] for bpftrace's own chatter,
    None if it cannot be read. "Lost N events" calls count_lost(N)."""
    m = LOST.match(line)
    if m:
        if count_lost:
            count_lost(int(m.group(1)))
        return []
    if line.startswith(("Attaching ", "READY")) or not line.strip() or \
            "RLIMIT_MEMLOCK" in line:
        return []
    kind, rest = line[:1], line[2:]
    if kind == "F":
        ts, cpu, child, ptgid, uid, flags, comm = rest.split(" ", 6)
        thread = int(flags) & CLONE_THREAD
        return [record(schema.EventType.CLONE if thread else schema.EventType.FORK,
                       int(child), tgid=int(ptgid) if thread else int(child),
                       ppid=int(ptgid), ts_ns=int(ts), cpu=int(cpu), uid=int(uid),
                       comm=comm)]
    if kind == "E":
        ts, cpu, pid, ppid, uid, comm = rest.split(" ", 5)
        return [record(schema.EventType.EXEC, int(pid), ppid=int(ppid), ts_ns=int(ts),
                       cpu=int(cpu), uid=int(uid), comm=comm)]
    if kind == "X":
        ts, cpu, pid, ppid, uid, code, comm = rest.split(" ", 6)
        return [record(schema.EventType.EXIT, int(pid), ppid=int(ppid), ts_ns=int(ts),
                       cpu=int(cpu), uid=int(uid), exit_code=int(code), comm=comm)]
    return None


class BpftraceBackend(PeerBackend):
    name = "bpftrace"
    doctor_needs = ("root", "tracefs", "bpftrace installed", "BTF for bpftrace")
    tool = package = "bpftrace"
    provides = frozenset({"ts_ns", "type", "pid", "tgid", "ppid", "uid", "cpu",
                          "exit_code", "comm"})

    def argv(self) -> list[str]:
        return ["bpftrace", "-e", SCRIPT]      # no script file to leave behind

    def is_ready(self, line: str) -> bool:
        return line.strip() == "READY"

    def parse_line(self, line: str):
        return parse_line(line, self.count_lost)
