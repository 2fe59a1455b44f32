"""BCC's execsnoop and exitsnoop, run as Debian ships them (execsnoop-bpfcc,
exitsnoop-bpfcc, no options), their output parsed.

They are BCC programs: compiled at start against the running kernel's headers, so they
need the headers and python3-bpfcc (here: the lab; `toolkit doctor` says so). They print
no event time (execsnoop -t prints the time since it started, taken when the line is
printed; exitsnoop -t the wall clock when printed), so both are receipt-timed.

  execsnoop  "PCOMM PID PPID RET ARGS" per successful execve (kprobes on the execve
             syscall; the line is printed at its return). PPID from the event, else
             read from /proc ("?" if gone). Sees execs only: no fork, no exit, no uid
             (without -U), no exit code.
  exitsnoop  "PCOMM PID PPID TID AGE(s) EXIT_CODE" per process exit (the
             sched_process_exit tracepoint, thread-group leaders only); EXIT_CODE is
             "0", "code N" or "signal N (NAME)[, core dumped]", turned back into the
             wait(2) status. Sees exits only.
Loss: both read a perf buffer (execsnoop: 8 pages per CPU, BCC's default) without a
lost callback, so libbcc prints "Possibly lost N samples": N untyped drops.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from ... import schema, sysinfo
from ..base import LAB_HINT, BackendError
from .common import PeerBackend, record

LOST = re.compile(r"Possibly lost (\d+) samples")
EXEC_LINE = re.compile(r"^(.*?)\s+(\d+)\s+(\d+|\?)\s+(-?\d+)\s?(.*)$")
EXIT_LINE = re.compile(r"^(.*?)\s+(\d+)\s+(\d+)\s+(\d+)\s+(-?[\d.]+)\s+(.*)$")
SIGNAL = re.compile(r"^signal (\d+)")


def _lost(line: str, count_lost) -> bool:
    m = LOST.search(line)
    if m and count_lost:
        count_lost(int(m.group(1)))
    return bool(m)


def parse_exec_line(line: str, ts_ns: int = 0, count_lost=None) -> list | None:
    if _lost(line, count_lost):
        return []
    if not line.strip() or line.startswith("PCOMM"):
        return []
    m = EXEC_LINE.match(line)
    if not m:
        return None
    comm, pid, ppid, ret = m.group(1).strip(), int(m.group(2)), m.group(3), int(m.group(4))
    if ret != 0:
        return []
    return [record(schema.EventType.EXEC, pid, ppid=0 if ppid == "?" else int(ppid),
                   ts_ns=ts_ns, comm=comm)]


def exit_status(text: str) -> int:
    """exitsnoop's EXIT_CODE column -> the wait(2) status."""
    text = text.strip()
    if text == "0":
        return 0
    if text.startswith("code "):
        return (int(text.split()[1]) & 0xFF) << 8
    m = SIGNAL.match(text)
    if m:
        return int(m.group(1)) | (0x80 if "core dumped" in text else 0)
    raise ValueError(f"exit code {text!r}")


def parse_exit_line(line: str, ts_ns: int = 0, count_lost=None) -> list | None:
    if _lost(line, count_lost):
        return []
    if not line.strip() or line.startswith("PCOMM"):
        return []
    m = EXIT_LINE.match(line)
    if not m:
        return None
    comm, pid, ppid, tid = m.group(1).strip(), int(m.group(2)), int(m.group(3)), int(m.group(4))
    return [record(schema.EventType.EXIT, pid, ppid=ppid, ts_ns=ts_ns, comm=comm,
                   exit_code=exit_status(m.group(6)))]


def bcc_missing() -> str | None:
    """Why a BCC tool cannot run on this kernel (None: it can)."""
    try:
        import bcc  # noqa: F401  (Debian's python3-bpfcc)
    except Exception as e:
        return f"cannot import bcc ({e}): install python3-bpfcc"
    rel = sysinfo.release()
    if not (Path("/lib/modules") / rel / "build").exists():
        return (f"the kernel headers for {rel} are missing (/lib/modules/{rel}/build): "
                "BCC compiles its programs against them")
    return None


class _BccSnoop(PeerBackend):
    package = "bpfcc-tools"
    provides = frozenset({"ts_ns", "type", "pid", "tgid", "ppid", "comm"})
    event_time = "receipt"
    env = {"PYTHONUNBUFFERED": "1"}   # Python buffers a pipe in blocks; a terminal by line
    ready_timeout_s = 240.0           # it prints its header after the BCC compile
    parser = None

    def argv(self) -> list[str]:
        return [self.tool]

    def check_available(self) -> None:
        super().check_available()
        why = bcc_missing()
        if why:
            raise BackendError(f"{self.name} (BCC) cannot run here: {why}", LAB_HINT)

    def is_ready(self, line: str) -> bool:
        return line.startswith("PCOMM")

    def parse_line(self, line: str):
        return type(self).parser(line, time.monotonic_ns(), self.count_lost)


class ExecsnoopBackend(_BccSnoop):
    name = "execsnoop"
    doctor_needs = ("root", "kprobes", "kernel headers", "bcc (python3-bpfcc)",
                    "execsnoop installed")
    tool = "execsnoop-bpfcc"
    event_types = frozenset({"exec"})
    parser = staticmethod(parse_exec_line)


class ExitsnoopBackend(_BccSnoop):
    name = "exitsnoop"
    # its probe is the sched_process_exit tracepoint, found through tracefs
    doctor_needs = ("root", "kernel headers", "tracefs", "bcc (python3-bpfcc)",
                    "exitsnoop installed")
    tool = "exitsnoop-bpfcc"
    event_types = frozenset({"exit"})
    provides = _BccSnoop.provides | {"exit_code"}
    parser = staticmethod(parse_exit_line)
