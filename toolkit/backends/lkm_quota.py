"""The module's quotas (lkm/quota.c, lkm/quota_proc.c) behind the Quotas interface:
/proc/toolkit/quota read and written, kill records from /proc/toolkit/events.

/proc/toolkit/quota (root only): reading gives a `# probes_missed N` line, a header and
one row per process (COLUMNS); writing takes `set PID heap=BYTES files=N`, `clear PID`,
`reset`, one a line, checked all before any is applied.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from .. import schema
from ..errors import BackendError, QuotaError
from . import lkm
from .quotas import QuotaRow, Quotas

QUOTA_FILE = Path("/proc/toolkit/quota")
COLUMNS = ["pid", "start_ns", "comm", "heap", "heap_quota", "files", "files_quota", "state"]
NOT_LOADED = ("the toolkit_lkm module is not loaded (or predates quotas)",
              "`toolkit lkm load` (as root)")


def parse_table(text: str) -> tuple[list[QuotaRow], int]:
    """/proc/toolkit/quota -> (rows, probes_missed); checks the header line."""
    rows, missed, header = [], 0, False
    for line in text.splitlines():
        if line.startswith("# probes_missed "):
            missed = int(line.split()[2])
        elif line.startswith("#"):
            if line.split()[1:] != COLUMNS:
                raise ValueError(f"unexpected quota header: {line!r}")
            header = True
        elif line:
            parts = line.split(" ")
            if len(parts) != len(COLUMNS):
                raise ValueError(f"bad quota line: {line!r}")
            vals = dict(zip(COLUMNS, parts))
            rows.append(QuotaRow(**{k: (schema.unescape(v) if k == "comm" else
                                        v if k == "state" else int(v))
                                    for k, v in vals.items()}))
    if not header:
        raise ValueError("no header line in /proc/toolkit/quota")
    return rows, missed


def set_command(pid: int, heap: int | None, files: int | None) -> str:
    if not heap and not files:
        raise QuotaError("nothing to set", hint="give --heap SIZE, --files N or both")
    return " ".join([f"set {pid}"] + ([f"heap={heap}"] if heap else []) +
                    ([f"files={files}"] if files else []))


def _write_error(e: OSError, what: str) -> QuotaError:
    if e.errno == errno.ESRCH:
        return QuotaError(f"{what}: no such process (or, to clear, no quota on it)")
    if e.errno == errno.EINVAL:
        return QuotaError(f"{what}: refused by the module (bad value, pid 1, a kernel "
                          "thread or the writer itself)")
    if e.errno == errno.ENOSPC:
        return QuotaError(f"{what}: the module tracks its maximum number of processes",
                          hint="clear some with `toolkit quota clear PID`")
    return QuotaError(f"{what}: {e.strerror}")


def write(*commands: str) -> None:
    """Write commands to /proc/toolkit/quota in one write (all or nothing)."""
    data = ("\n".join(commands) + "\n").encode()
    try:
        fd = os.open(QUOTA_FILE, os.O_WRONLY)
    except FileNotFoundError:
        raise BackendError(*NOT_LOADED) from None
    except PermissionError:
        raise QuotaError(f"{QUOTA_FILE} is root-only", hint="run as root") from None
    try:
        os.write(fd, data)
    except OSError as e:
        raise _write_error(e, "; ".join(commands)) from None
    finally:
        os.close(fd)


def read() -> tuple[list[QuotaRow], int]:
    try:
        return parse_table(QUOTA_FILE.read_text())
    except FileNotFoundError:
        raise BackendError(*NOT_LOADED) from None
    except PermissionError:
        raise QuotaError(f"{QUOTA_FILE} is root-only", hint="run as root") from None


def _events_now() -> str:
    """Whatever /proc/toolkit/events holds now, without waiting."""
    chunks = []
    fd = os.open(lkm.PROC_DIR / "events", os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


class LkmQuotas(Quotas):
    """Exclusive (the bench): the module is loaded if it is not, its event stream
    carries kill records only while this object lives (and is cleared first), and
    close() resets every quota and restores every event type."""

    name = "lkm"
    persistent = True
    hooks = "kprobe"

    def __init__(self, exclusive: bool = False, load: bool = False):
        super().__init__(exclusive, load)
        if (exclusive or load) and not lkm.is_loaded():
            lkm.load()
            self.load_note = "loaded the toolkit_lkm module"
        if exclusive:
            lkm.control("events kill", "clear")

    def set(self, pid, heap=None, files=None):
        write(set_command(pid, heap, files))

    def clear(self, pid):
        write(f"clear {pid}")

    def entries(self):
        return {r.pid: r for r in read()[0]}

    def kills(self, timeout_ms=0):
        if not self.exclusive:
            return []
        return [r for r in lkm.parse_events(_events_now())
                if r.type == schema.EventType.KILL]

    def counts(self):
        return {"probes_missed": read()[1]}

    def reset(self):
        write("reset")

    def close(self):
        super().close()
        if self.exclusive:
            lkm.control("events all")
