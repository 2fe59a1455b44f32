"""auditd, the compliance answer: syscall rules on fork/vfork/clone/clone3/execve/
execveat/exit_group (key toolkit_bench), read from auditd's log.

How it runs without touching the user's configuration:
  * no audit daemon registered (`auditctl -s`: pid 0): a private auditd,
    `auditd -n -c DIR`, with a copy of the system's auditd.conf (its log format,
    flushing, queue) whose log_file is DIR/audit.log and plugin_dir an empty DIR/plugins;
  * an audit daemon already running (the system's auditd.service): our rules go to the
    kernel beside its own and its log_file (from /etc/audit/auditd.conf) is read from its
    end; its configuration is not touched.
Either way the backlog limit and wait time are set as Debian's default rules set them
(-b 8192, --backlog_wait_time 60000), and on stop our rules are deleted (by key) and the
kernel's enabled flag, backlog limit and wait time are put back as they were. Before
changing anything the previous state goes to STATE_FILE: if the harness dies (even by
SIGKILL) the next start finds it, stops the private auditd it names, deletes our rules
and restores that state. (The private auditd also gets SIGTERM from the kernel when the
harness dies: PR_SET_PDEATHSIG.)

What a record carries: the SYSCALL record's time (audit(SECONDS.MS:SERIAL): the
syscall's entry time from the coarse real-time clock, to the millisecond; converted to
CLOCK_MONOTONIC with the offset measured at start; they run 3 to 12 ms early, so the
bench allows 30 ms of slack),
pid, ppid, uid, comm; a fork's child is the syscall's return value; clone's flags are
a0 (CLONE_THREAD: a thread); clone3's flags are in a struct audit does not show, so a
clone3 (glibc's pthread_create) counts as a thread's clone; exit_group's a0 is the exit
code (the status is a0 << 8). What it cannot see: a death by a signal (no exit_group
call), start time, CPU time, memory, the CPU.

Loss: the kernel queues records for auditd up to the backlog limit; past it a process
waits up to backlog_wait_time, then the record is dropped and `lost` grows (`auditctl
-s`). lost (its growth during the run) is counted as untyped drops; backlog and the
time processes waited (backlog_wait_time_actual) are reported beside it. Not seen at
all: a task forked before audit was first enabled since boot has no audit context
(kernel/auditsc.c audit_alloc, audit_ever_enabled), so on a fresh boot the processes
older than the first start are never audited (docs/peers.md).
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from ... import schema
from ..base import BackendError
from .common import (CLONE_THREAD, SYNC_TIMEOUT_S, PeerBackend, cmdline, pids_by_comm,
                     proc_cpu_s, record, spawn, terminate)

KEY = "toolkit_bench"
SYSCALLS = ("fork", "vfork", "clone", "clone3", "execve", "execveat", "exit_group")
RULE = ["-a", "always,exit", "-F", "arch=b64", "-S", ",".join(SYSCALLS), "-k", KEY]
BACKLOG, BACKLOG_WAIT = 8192, 60000           # Debian's /etc/audit/rules.d/audit.rules
STATE_FILE = "/run/toolkit-auditd-state.json"
# Held from start to stop: one auditd backend at a time on the machine (the kernel has
# one audit configuration); the kernel drops the lock when its holder dies, so a state
# file found while holding it is a crashed run's.
LOCK_FILE = "/run/toolkit-auditd.lock"
LOCK_WAIT_S = 120.0
SYSTEM_CONF = "/etc/audit/auditd.conf"
# The coarse clock advances by ticks (4 ms at HZ=250) and lags more after an idle CPU
# (NO_HZ); measured natively: audit times 3 to 11.6 ms before the event, never after.
SLACK_NS = 30_000_000
# x86_64 syscall numbers
NR = {56: "clone", 57: "fork", 58: "vfork", 59: "execve", 231: "exit_group",
      322: "execveat", 435: "clone3"}

MSG = re.compile(r"msg=audit\((\d+)\.(\d+):(\d+)\)")
FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')


# ---------------------------------------------------------------- auditctl
def auditctl(*args: str, check: bool = True) -> str:
    try:
        p = subprocess.run(["auditctl", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise BackendError("auditctl is not installed",
                           "apt-get install auditd (bin/setup installs it)") from None
    if check and p.returncode != 0:
        raise BackendError(f"auditctl {' '.join(args)}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def parse_status(text: str) -> dict[str, int]:
    """`auditctl -s` -> {enabled, failure, pid, backlog_limit, lost, backlog, ...}."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def status() -> dict[str, int]:
    return parse_status(auditctl("-s"))


def our_rules(listing: str) -> list[str]:
    """The lines of `auditctl -l` with our key."""
    return [ln for ln in listing.splitlines() if f"key={KEY}" in ln or f"-k {KEY}" in ln]


def delete_our_rules() -> None:
    if our_rules(auditctl("-l", check=False)):
        auditctl("-D", "-k", KEY)


def restore(state: dict) -> None:
    auditctl("-b", str(state["backlog_limit"]), "--backlog_wait_time",
             str(state["backlog_wait_time"]), check=False)
    if state.get("enabled") in (0, 1):       # 2 (locked) cannot have changed
        auditctl("-e", str(state["enabled"]), check=False)


_lock = {"fd": None, "depth": 0}


def acquire(timeout: float = LOCK_WAIT_S) -> None:
    """Take the machine-wide auditd-backend lock (re-entrant in one process)."""
    if _lock["depth"]:
        _lock["depth"] += 1
        return
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    end = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= end:
                os.close(fd)
                raise BackendError(f"another toolkit process has used the auditd backend "
                                   f"for over {timeout:.0f} s ({LOCK_FILE})",
                                   "wait for it to finish") from None
            time.sleep(0.1)
    _lock.update(fd=fd, depth=1)


def release() -> None:
    if _lock["depth"] == 0:
        return
    _lock["depth"] -= 1
    if _lock["depth"] == 0:
        os.close(_lock["fd"])        # closing the descriptor drops the flock
        _lock["fd"] = None


@contextlib.contextmanager
def exclusive(timeout: float = LOCK_WAIT_S):
    """No other auditd backend changes the audit configuration meanwhile."""
    acquire(timeout)
    try:
        yield
    finally:
        release()


def recover() -> bool:
    """Undo what a previous run left (it died before stop): our private auditd, our
    rules, the kernel's audit settings. True if there was something to undo. Call it
    holding the lock (acquire): a live run's state is then never taken for a crash's."""
    found = False
    try:
        with open(STATE_FILE) as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = None
    if state:
        found = True
        pid = state.get("auditd_pid")
        if pid and state.get("dir") and state["dir"] in " ".join(cmdline(pid)):
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid)
    if shutil.which("auditctl") and our_rules(auditctl("-l", check=False)):
        found = True
        delete_our_rules()
    if state:
        restore(state)
        if state.get("dir"):
            shutil.rmtree(state["dir"], ignore_errors=True)
        os.unlink(STATE_FILE)
    return found


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < end:
        time.sleep(0.05)


# ---------------------------------------------------------------- the log
def conf_value(text: str, key: str, default: str = "") -> str:
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() == key:
            return v.strip()
    return default


def private_conf(system_conf: str, d: str) -> str:
    """The system's auditd.conf with our log file, no plugins and no rotation."""
    override = {"log_file": f"{d}/audit.log", "plugin_dir": f"{d}/plugins",
                "log_group": "root", "max_log_file_action": "IGNORE",
                "space_left_action": "IGNORE", "admin_space_left_action": "IGNORE",
                "disk_full_action": "IGNORE", "disk_error_action": "IGNORE"}
    lines = []
    for line in system_conf.splitlines():
        k = line.partition("=")[0].strip()
        if k not in override:
            lines.append(line)
    lines += [f"{k} = {v}" for k, v in override.items()]
    return "\n".join(lines) + "\n"


def parse_line(line: str, clock_offset_ns: int = 0) -> list | None:
    """One audit log line -> [Record] for a SYSCALL record of our key, [] for any other
    record, None if unreadable. The ENRICHED format's interpreted fields after the
    0x1d separator are ignored."""
    raw = line.split("\x1d", 1)[0]
    if not raw.startswith("type=SYSCALL ") or f'key="{KEY}"' not in raw:
        return [] if raw.startswith("type=") or not raw.strip() else None
    m = MSG.search(raw)
    f = {k: v.strip('"') for k, v in FIELD.findall(raw[m.end():])}
    ts = int(m.group(1)) * 10**9 + int(m.group(2)) * 10**6 - clock_offset_ns
    call = NR.get(int(f["syscall"]))
    pid, ppid, uid, comm = int(f["pid"]), int(f["ppid"]), int(f["uid"]), f.get("comm", "")
    if call is None or f.get("success") == "no":
        return []
    if call in ("clone", "fork", "vfork", "clone3"):
        child = int(f["exit"])
        if child <= 0:
            return []          # the child's side of a fork is not audited, but be sure
        thread = call == "clone3" or (call == "clone" and int(f["a0"], 16) & CLONE_THREAD)
        return [record(schema.EventType.CLONE if thread else schema.EventType.FORK, child,
                       tgid=pid if thread else child, ppid=pid, ts_ns=ts, uid=uid,
                       comm=comm)]
    if call in ("execve", "execveat"):
        return [record(schema.EventType.EXEC, pid, ppid=ppid, ts_ns=ts, uid=uid, comm=comm)]
    code = int(f["a0"], 16) & 0xFF
    return [record(schema.EventType.EXIT, pid, ppid=ppid, ts_ns=ts, uid=uid, comm=comm,
                   exit_code=code << 8)]


class FileTail:
    """New complete lines of a growing file."""

    def __init__(self, path: str, from_end: bool):
        self.f = open(path, "rb")
        if from_end:
            self.f.seek(0, os.SEEK_END)
        self.buf = b""

    def lines(self, timeout: float) -> list[str]:
        end = time.monotonic() + max(0.0, timeout)
        while True:
            chunk = self.f.read(1 << 20)
            if chunk or time.monotonic() >= end:
                break
            time.sleep(min(0.01, max(0.0, end - time.monotonic())))
        self.buf += chunk
        *done, self.buf = self.buf.split(b"\n")
        return [d.decode(errors="replace") for d in done]

    def close(self) -> None:
        self.f.close()


def clock_offset_ns() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC, from the closest of a few paired reads."""
    best = None
    for _ in range(5):
        a = time.monotonic_ns()
        r = time.time_ns()
        b = time.monotonic_ns()
        if best is None or b - a < best[0]:
            best = (b - a, r - (a + b) // 2)
    return best[1]


class AuditdBackend(PeerBackend):
    name = "auditd"
    doctor_needs = ("root", "auditd installed", "audit syscall rules")
    tool = package = "auditd"
    provides = frozenset({"ts_ns", "type", "pid", "tgid", "ppid", "uid", "exit_code",
                          "comm"})
    time_slack_ns = SLACK_NS

    def __init__(self, uid: int | None = None, **options):
        self.dir: str | None = None
        self.state: dict | None = None
        self.mode = None
        self.log_file: str | None = None
        self.offset = 0
        self.recovered = False
        self._st0: dict[str, int] = {}
        super().__init__(uid=uid, **options)

    def argv(self) -> list[str]:
        return (["auditd", "-n", "-c", self.dir or "DIR"] if self.mode != "shared"
                else ["auditctl", *RULE])

    def check_available(self) -> None:
        super().check_available()
        if shutil.which("auditctl") is None:
            raise BackendError("auditctl is not installed", "apt-get install auditd")
        p = subprocess.run(["auditctl", "-s"], capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise BackendError(f"the kernel's audit interface does not answer: "
                               f"{p.stderr.strip()}", "a kernel with CONFIG_AUDITSYSCALL=y")

    def start(self) -> None:
        self.check_available()
        acquire()
        self._locked = True
        try:
            self.recovered = recover()
        except BaseException:
            self._unlock()
            raise
        st = status()
        if st.get("enabled") == 2:
            self._unlock()
            raise BackendError("the audit configuration is locked (enabled 2: -e 2) until "
                               "reboot: no rule can be added")
        self.state = {k: st.get(k, 0) for k in ("enabled", "backlog_limit",
                                                "backlog_wait_time")}
        self.state.update(auditd_pid=None, dir=None)
        atexit.register(self.stop)
        try:
            if st.get("pid") and os.path.exists(f"/proc/{st['pid']}"):
                self._start_shared()
            else:
                self._start_private()
            auditctl("-b", str(BACKLOG), "--backlog_wait_time", str(BACKLOG_WAIT))
            auditctl(*RULE)
            self.offset = clock_offset_ns()
            self._sync()
        except BackendError:
            self.stop()
            raise

    def _save_state(self) -> None:
        with open(STATE_FILE, "w") as f:
            json.dump(self.state, f)

    def _start_shared(self) -> None:
        self.mode = "shared"
        try:
            with open(SYSTEM_CONF) as f:
                conf = f.read()
        except OSError:
            conf = ""
        self.log_file = conf_value(conf, "log_file", "/var/log/audit/audit.log")
        self._save_state()
        try:
            self.src = FileTail(self.log_file, from_end=True)
        except OSError as e:
            raise BackendError(f"auditd is running but its log {self.log_file} cannot be "
                               f"read: {e}") from None

    def _start_private(self) -> None:
        self.mode = "private"
        self.dir = self.state["dir"] = tempfile.mkdtemp(prefix="toolkit-auditd-")
        os.mkdir(f"{self.dir}/plugins", 0o700)
        try:
            with open(SYSTEM_CONF) as f:
                conf = f.read()
        except OSError:
            conf = "log_format = ENRICHED\nflush = INCREMENTAL_ASYNC\nfreq = 50\n"
        fd = os.open(f"{self.dir}/auditd.conf", os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(private_conf(conf, self.dir))
        self._save_state()
        self.proc = spawn(self.argv(), output=False)
        self.state["auditd_pid"] = self.proc.pid
        self._save_state()
        self.log_file = f"{self.dir}/audit.log"
        end = time.monotonic() + SYNC_TIMEOUT_S
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise BackendError(f"auditd exited with status {self.proc.returncode} "
                                   "(`auditd -f -c DIR` shows why)")
            if status().get("pid") == self.proc.pid and os.path.exists(self.log_file):
                self.src = FileTail(self.log_file, from_end=False)
                return
            time.sleep(0.05)
        raise BackendError(f"auditd did not register with the kernel within "
                           f"{SYNC_TIMEOUT_S:.0f} s")

    def parse_line(self, line: str):
        return parse_line(line, self.offset)

    def own_pids(self) -> list[int]:
        daemon = self.proc.pid if self.proc is not None else self._st0.get("pid")
        return [p for p in [daemon, *pids_by_comm("kauditd")]
                if p and proc_cpu_s(p) is not None]

    def reset_stats(self) -> None:
        super().reset_stats()
        self._st0 = status() if self.state else {}

    def stats(self):
        s = super().stats()
        st = status() if self.state else {}
        lost = max(0, st.get("lost", 0) - self._st0.get("lost", 0))
        u = s.events["untyped"]
        u.seen = u.dropped = lost
        s.lost_in_transport = lost
        s.extra.update(mode=self.mode, log_file=self.log_file, recovered=self.recovered,
                       audit_lost=lost, backlog=st.get("backlog"),
                       backlog_limit=st.get("backlog_limit"),
                       backlog_wait_time_actual=st.get("backlog_wait_time_actual", 0)
                       - self._st0.get("backlog_wait_time_actual", 0))
        return s

    def _unlock(self) -> None:
        if getattr(self, "_locked", False):
            self._locked = False
            release()

    def stop(self) -> None:
        if self.state is None:
            self._unlock()
            return
        try:
            delete_our_rules()
        except BackendError:
            pass
        terminate(self.proc, timeout=10)
        self.proc = None
        restore(self.state)
        if self.src is not None:
            self.src.close()
            self.src = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        try:
            os.unlink(STATE_FILE)
        except OSError:
            pass
        self.state = None
        atexit.unregister(self.stop)
        self._unlock()
