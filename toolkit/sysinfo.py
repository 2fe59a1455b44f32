"""The running kernel and /proc, read from user space: one module for every reader.

doctor, the backends (the eBPF backend's /proc process table, the module's build and
load checks, the native baselines) and the bench environment all read the same few
things: small files, the kernel release and version, its config, /proc/PID/stat and
status, /proc/meminfo. They read them here, so a parsing fix is made once.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import re
import time
from pathlib import Path

PF_KTHREAD = 0x00200000     # task->flags bit of a kernel thread (include/linux/sched.h)


# ---------------------------------------------------------------- small files

def read_text(path: str | Path, default: str | None = None) -> str | None:
    """The whole of a small file (a /proc or /sys entry), or `default` if unreadable."""
    try:
        return Path(path).read_text()
    except OSError:
        return default


# ---------------------------------------------------------------- the kernel

def release() -> str:
    """The running kernel's release, as `uname -r` prints it."""
    return os.uname().release


TRACEFS = Path("/sys/kernel/tracing")


def tracefs_dir() -> Path | None:
    """Where tracefs is mounted (its own mount point, or debugfs's tracing/), or None."""
    for d in (TRACEFS, Path("/sys/kernel/debug/tracing")):
        if Path(d, "trace").exists() or Path(d, "available_events").exists():
            return d
    return None


def tracefs_mountable() -> bool:
    """Could mount_tracefs() mount it: root, and the kernel has the filesystem."""
    return os.geteuid() == 0 and "\ttracefs" in (read_text("/proc/filesystems") or "")


def mount_tracefs() -> str | None:
    """Mount tracefs at /sys/kernel/tracing if it is not mounted (root only), as
    systemd's sys-kernel-tracing.mount does at boot on Debian and Ubuntu: tracepoints are
    found and attached by the ids under it (bpftrace, BCC). It stays mounted: a view of
    the kernel's tracing state, with nothing of ours in it. -> an error string or None."""
    import subprocess
    if tracefs_dir():
        return None
    if os.geteuid() != 0:
        return "not root"
    try:
        p = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if p.returncode == 0 else (p.stderr.strip() or f"mount exited {p.returncode}")


def kernel_version(rel: str | None = None) -> tuple[int, int]:
    """(major, minor) of a kernel release string such as '6.1.0-56-amd64'."""
    rel = rel or release()
    m = re.match(r"(\d+)\.(\d+)", rel)
    if not m:
        raise ValueError(f"cannot parse kernel release {rel!r}")
    return int(m.group(1)), int(m.group(2))


def kernel_config_text(rel: str | None = None) -> str | None:
    """The kernel's build config: /boot/config-<release>, else the headers' .config
    (/lib/modules/<release>/build/.config: the lab guest has no /boot of its kernel),
    else /proc/config.gz."""
    rel = rel or release()
    for f in (f"/boot/config-{rel}", f"/lib/modules/{rel}/build/.config"):
        text = read_text(f)
        if text is not None:
            return text
    if rel != release():
        return None     # /proc/config.gz describes the running kernel only
    try:
        return gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        return None


def kernel_config(rel: str | None = None) -> dict[str, str]:
    """CONFIG_* -> value ('y', 'm', a number, a string); {} when no config is readable."""
    cfg = {}
    for line in (kernel_config_text(rel) or "").splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, v = line.split("=", 1)
            cfg[k] = v
    return cfg


def kallsyms_has(*symbols: str) -> dict[str, bool]:
    """Which of these kernel symbols /proc/kallsyms lists (all False if unreadable)."""
    want, found = set(symbols), set()
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] in want:
                    found.add(parts[2])
    except OSError:
        pass
    return {s: s in found for s in symbols}


def kallsyms_addr(*symbols: str) -> dict[str, int]:
    """The addresses /proc/kallsyms gives these symbols (0: absent, or hidden from a
    non-root reader by kptr_restrict); the first of duplicate names."""
    want, found = set(symbols), {}
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] in want and parts[2] not in found:
                    found[parts[2]] = int(parts[0], 16)
    except (OSError, ValueError):
        pass
    return {s: found.get(s, 0) for s in symbols}


def cap_effective(pid: int | str = "self") -> int:
    """The effective capability mask of a process (CapEff in /proc/PID/status)."""
    for line in (read_text(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def boot_to_monotonic_offset_ns() -> int:
    """CLOCK_BOOTTIME - CLOCK_MONOTONIC now: /proc start times count from boot including
    suspend; task->start_time (records' start_ns) is monotonic."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)


# ---------------------------------------------------------------- /proc/PID

def proc_stat_fields(text: str) -> tuple[str, list[str]]:
    """comm and the fields after it of /proc/PID/stat (comm may hold spaces and ')').
    The list starts at field 3 (state) of proc(5)."""
    lpar, rpar = text.index("("), text.rindex(")")
    return text[lpar + 1:rpar], text[rpar + 2:].split()


def parse_status(text: str) -> dict[str, list[str]]:
    """/proc/PID/status as key -> its words ('VmRSS' -> ['1234', 'kB'])."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        out[key] = rest.split()
    return out


@dataclasses.dataclass
class ProcInfo:
    """One row of the process table; the same columns for every backend (the backends'
    Snapshot holds these; here it is also the user-space view of /proc/PID)."""
    pid: int
    ppid: int
    uid: int
    comm: str
    state: str
    rss_kib: int
    hiwater_rss_kib: int
    total_vm_kib: int
    cpu_ns: int
    start_ns: int = 0
    threads: int = 1


def parse_proc_process(stat: str, status: str, hz: int, boot_offset_ns: int) -> ProcInfo | None:
    """One process from /proc/PID/stat and /status text; None for kernel threads."""
    comm, f = proc_stat_fields(stat)
    if int(f[6]) & PF_KTHREAD:
        return None
    st = parse_status(status)
    pid = int(st["Tgid"][0]) if "Tgid" in st else int(stat.split(None, 1)[0])

    def kib(key):
        return int(st[key][0]) if key in st else 0
    tick_ns = 1_000_000_000 // hz
    return ProcInfo(
        pid=pid, ppid=int(f[1]), uid=int(st["Uid"][0]) if "Uid" in st else 0,
        comm=comm, state=f[0], rss_kib=kib("VmRSS"), hiwater_rss_kib=kib("VmHWM"),
        total_vm_kib=kib("VmSize"), cpu_ns=(int(f[11]) + int(f[12])) * tick_ns,
        start_ns=max(0, int(f[19]) * tick_ns - boot_offset_ns), threads=int(f[17]))


def proc_table() -> list[ProcInfo]:
    """Every user-space process with an mm (a zombie leader has none: the module lists
    only tasks with an mm too), by pid."""
    hz = os.sysconf("SC_CLK_TCK")
    offset = boot_to_monotonic_offset_ns()
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat, status = read_text(f"{entry.path}/stat"), read_text(f"{entry.path}/status")
        if stat is None or status is None:
            continue    # gone meanwhile
        row = parse_proc_process(stat, status, hz, offset)
        if row is not None and "VmRSS:" in status:   # no VmRSS: no mm (a zombie leader)
            out.append(row)
    return sorted(out, key=lambda p: p.pid)


# ---------------------------------------------------------------- /proc/meminfo, /proc/stat

def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as key -> KiB (or a count, for the few unit-less lines)."""
    kv = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            kv[key] = int(parts[0])
    return kv


def forks_since_boot() -> int:
    """The kernel's own fork counter: `processes` in /proc/stat (every fork and clone)."""
    for line in (read_text("/proc/stat") or "").splitlines():
        if line.startswith("processes "):
            return int(line.split()[1])
    raise OSError("/proc/stat has no 'processes' line")


# ---------------------------------------------------------------- /proc/PID memory layout

@dataclasses.dataclass
class MapsLine:
    """One line of /proc/PID/maps."""
    start: int
    end: int
    perms: str
    pgoff: int      # bytes, as maps prints it
    name: str       # path, [heap], [stack], [vdso], [vvar], [vsyscall], or "" (anonymous)


def parse_maps(text: str) -> list[MapsLine]:
    out = []
    for line in text.splitlines():
        f = line.split(None, 5)
        if len(f) < 5:
            continue
        s, _, e = f[0].partition("-")
        out.append(MapsLine(int(s, 16), int(e, 16), f[1], int(f[2], 16),
                            f[5].strip() if len(f) > 5 else ""))
    return out


# Fields of /proc/PID/stat (proc(5) numbering) that are addresses of the mm.
STAT_ADDRESSES = {"startcode": 26, "endcode": 27, "startstack": 28, "start_data": 45,
                  "end_data": 46, "start_brk": 47, "arg_start": 48, "arg_end": 49,
                  "env_start": 50, "env_end": 51}


def proc_stat_addresses(text: str) -> dict[str, int]:
    """The address fields of /proc/PID/stat (0 unless the reader may ptrace the target)."""
    _, f = proc_stat_fields(text)
    return {k: int(f[n - 3]) for k, n in STAT_ADDRESSES.items() if len(f) > n - 3}


def is_kernel_thread(pid: int) -> bool | None:
    """True for a kernel thread, False for a user process, None if there is no such pid."""
    stat = read_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    return bool(int(proc_stat_fields(stat)[1][6]) & PF_KTHREAD)
