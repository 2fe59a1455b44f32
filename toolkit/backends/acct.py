"""BSD process accounting, version 3 (CONFIG_BSD_PROCESS_ACCT_V3): acct(2) makes the
kernel append one 64-byte struct acct_v3 to a file each time a process (a whole thread
group) exits. The backend mounts a small tmpfs of its own, creates the file there, turns
accounting on with acct(path) when it starts and off with acct(NULL) when it stops, and
reads the file's new records.

What a record carries (include/uapi/linux/acct.h): pid, ppid, uid, gid, exit code (the
wait(2) status), comm, user and system time and the average memory (comp_t, 3-bit
base-8 exponent and 13-bit mantissa), the begin time in wall-clock seconds, the elapsed
time (a float, in AHZ ticks), and flags: AFORK (forked but never exec'd), ASU, ACORE,
AXSIG. What it cannot: forks and execs as events (AFORK says only whether an exit had
exec'd), the event's time (ts_ns is when the backend read the record), peak or exit RSS
(ac_mem is the virtual size, not resident memory), the CPU, the monotonic start time.

Loss: the kernel writes the record synchronously in do_exit, so a slow reader loses
nothing. Accounting suspends itself instead: every 30 s (ACCT_TIMEOUT) and when switched
on, kernel/acct.c checks the file system's free space; below 2% free (SUSPEND) it stops
writing, silently, until 4% (RESUME) are free again. The backend checks the same
statfs figures on every read and reports `suspended` (state and how often seen); the
records lost meanwhile cannot be counted, so the report flags the run.
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import errno
import os
import struct
import subprocess
import tempfile
import time

from .. import schema
from .base import Backend, BackendError, Snapshot, Stats, event_counters, proc_snapshot

ACCT_V3 = struct.Struct("=BBHIIIIIIf8H16s")   # struct acct_v3, 64 bytes
ACCT_VERSION = 3
AFORK, ASU, ACORE, AXSIG = 0x01, 0x02, 0x08, 0x10
AHZ = 100
SUSPEND_PCT, RESUME_PCT = 2, 4                # kernel/acct.c
TMPFS_SIZE = "16m"                            # 262,144 records


def comp_t(v: int) -> int:
    """Decode comp_t: 13-bit mantissa, 3-bit base-8 exponent."""
    return (v & 0x1FFF) << (((v >> 13) & 0x7) * 3)


def parse_record(buf: bytes) -> dict:
    if len(buf) != ACCT_V3.size:
        raise ValueError(f"an acct_v3 record is {ACCT_V3.size} bytes, got {len(buf)}")
    (flag, version, _tty, exitcode, uid, _gid, pid, ppid, btime, etime, utime, stime, mem,
     _io, _rw, _minflt, _majflt, _swaps, comm) = ACCT_V3.unpack(buf)
    if version & 0x7F != ACCT_VERSION:
        raise ValueError(f"acct record version {version & 0x7F}, expected {ACCT_VERSION}")
    return {"flag": flag, "exit_code": exitcode, "uid": uid, "pid": pid, "ppid": ppid,
            "btime_s": btime, "etime_ticks": etime, "utime_ticks": comp_t(utime),
            "stime_ticks": comp_t(stime), "mem_kib": comp_t(mem),
            "comm": comm.split(b"\0", 1)[0].decode("utf-8", "replace")}


def to_record(a: dict, ts_ns: int):
    return schema.Record(
        ts_ns=ts_ns, start_ns=0,
        cpu_ns=(a["utime_ticks"] + a["stime_ticks"]) * (10**9 // AHZ), rss_kib=0,
        hiwater_rss_kib=0, type=int(schema.EventType.EXIT), pid=a["pid"], tgid=a["pid"],
        ppid=a["ppid"], uid=a["uid"], cpu=0, flags=0, exit_code=a["exit_code"],
        comm=a["comm"][:schema.COMM_LEN])


def free_pct(path: str) -> float:
    st = os.statvfs(path)
    return 100.0 * st.f_bavail / st.f_blocks if st.f_blocks else 100.0


def would_suspend(pct: float, suspended: bool) -> bool:
    """kernel/acct.c check_free_space(): the state after a check at `pct` % free."""
    if not suspended and pct < SUSPEND_PCT:
        return True
    if suspended and pct >= RESUME_PCT:
        return False
    return suspended


def _libc():
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    lib.acct.argtypes = [ctypes.c_char_p]
    return lib


def set_acct(path: str | None) -> None:
    if _libc().acct(None if path is None else path.encode()) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class AcctBackend(Backend):
    name = "acct"
    doctor_needs = ("root", "BSD process accounting v3")
    provides = frozenset({"ts_ns", "cpu_ns", "type", "pid", "tgid", "ppid", "uid",
                          "exit_code", "comm"})
    event_time = "receipt"
    event_types = frozenset({"exit"})

    def __init__(self, uid: int | None = None, directory: str | None = None, **options):
        super().__init__(uid=uid, **options)
        self.directory = directory          # an existing directory: no tmpfs of our own
        self.mount: str | None = None
        self.path: str | None = None
        self._f = None
        self._buf = b""
        self.reset_stats()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise BackendError("acct(2) needs root (CAP_SYS_PACCT)", "run as root")
        try:
            if self.directory:
                d = self.directory
            else:
                d = self.mount = tempfile.mkdtemp(prefix="toolkit-acct-")
                p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=700",
                                    "toolkit-acct", d], capture_output=True, text=True)
                if p.returncode != 0:
                    raise OSError(errno.EIO, f"mount tmpfs: {p.stderr.strip()}")
            self.path = os.path.join(d, "pacct")
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            self._f = open(self.path, "rb", buffering=0)
            set_acct(self.path)
            # accounting is system-wide and outlives this process: switch it off (and
            # unmount) even if the caller never calls stop()
            atexit.register(self.stop)
        except OSError as e:
            self.stop()
            hint = ("a kernel with CONFIG_BSD_PROCESS_ACCT=y" if e.errno == errno.ENOSYS
                    else "run as root; only one accounting file is active system-wide")
            raise BackendError(f"cannot switch on process accounting: {e}", hint) from None
        self._check_space()

    def _check_space(self) -> None:
        pct = free_pct(os.path.dirname(self.path))
        self._free_pct_min = min(self._free_pct_min, pct)
        self._suspended = would_suspend(pct, self._suspended)
        if self._suspended:
            self._suspended_checks += 1

    def read(self, timeout: float) -> list:
        if self._f is None:
            raise BackendError("acct backend not started")
        end = time.monotonic() + max(0.0, timeout)
        while True:
            chunk = self._f.read(1 << 20)
            if chunk or time.monotonic() >= end:
                break
            time.sleep(min(0.01, max(0.0, end - time.monotonic())))
        now = time.monotonic_ns()
        self._check_space()
        if not chunk:
            return []
        self._buf += chunk
        n = len(self._buf) // ACCT_V3.size * ACCT_V3.size
        raw, self._buf = self._buf[:n], self._buf[n:]
        out = []
        for off in range(0, n, ACCT_V3.size):
            try:
                a = parse_record(raw[off:off + ACCT_V3.size])
            except (ValueError, struct.error):
                self._malformed += 1
                continue
            self._afork += bool(a["flag"] & AFORK)
            rec = to_record(a, now)   # ac_flag stays out of flags (TK_FLAG_* bits)
            c = self._counters["exit"]
            c.seen += 1
            if (self.uid_filter is not None and rec.uid != self.uid_filter) or \
                    (self.ppid_filter is not None and rec.ppid != self.ppid_filter):
                c.filtered += 1
                continue
            c.delivered += 1
            out.append(rec)
        return out

    def set_ppid_filter(self, ppid: int | None) -> None:
        """A user-space filter on ac_ppid."""
        self.ppid_filter = ppid

    def snapshot(self) -> Snapshot:
        return proc_snapshot()

    def stats(self) -> Stats:
        return Stats(backend=self.name, events=self._counters,
                     extra={"suspended": self._suspended,
                            "suspended_checks": self._suspended_checks,
                            "free_pct_min": round(self._free_pct_min, 2),
                            "suspend_below_pct": SUSPEND_PCT, "resume_at_pct": RESUME_PCT,
                            "afork_exits": self._afork, "malformed": self._malformed,
                            "file": self.path, "pid": os.getpid()})

    def reset_stats(self) -> None:
        self._counters = event_counters()
        self._afork = self._malformed = self._suspended_checks = 0
        self._suspended = getattr(self, "_suspended", False)
        self._free_pct_min = 100.0

    def stop(self) -> None:
        if self.path is not None:
            try:
                set_acct(None)
            except OSError:
                pass
        if self._f is not None:
            self._f.close()
            self._f = None
        if self.path and os.path.exists(self.path):
            os.unlink(self.path)
        self.path = None
        if self.mount:
            subprocess.run(["umount", self.mount], capture_output=True)
            try:
                os.rmdir(self.mount)
            except OSError:
                pass
            self.mount = None
        self._buf = b""
        self._suspended = False
        atexit.unregister(self.stop)
