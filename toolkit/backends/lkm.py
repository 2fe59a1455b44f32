"""The kprobe kernel module backend: lkm/toolkit_lkm.ko and /proc/toolkit.

Module-level functions (``build``, ``load``, ``unload``, ``status``, ``control``)
are what ``toolkit lkm ...`` uses; ``LkmBackend`` is the Backend. The parsers
(``parse_stats``, ``parse_processes``, ``parse_meminfo``, ``parse_events``) are pure
functions of the text the module prints, unit-tested natively on captured text.

/proc/toolkit/events semantics (see lkm/procfs.c): every record is read by exactly one
reader; a blocking read waits for a record; a read with O_NONBLOCK fails with EAGAIN when
nothing is queued; 0 bytes (end of file) means the module is being unloaded.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import select
import shutil
import subprocess
from pathlib import Path

from .. import kcache, schema, sysinfo
from ..errors import InspectError
from ..paths import INCLUDE_DIR, LKM_DIR, RESULTS_DIR
from .base import (LAB_HINT, Backend, BackendError, EventCounters, HookStats, LayoutText,
                   MemInfo, ProcInfo, Snapshot, Stats, event_counters)

MODULE = "toolkit_lkm"
PROC_DIR = Path("/proc/toolkit")
TOOL_TIMEOUT_S = 180   # insmod / rmmod; minutes are normal only under emulation
PID_MAX_LIMIT = 4 * 1024 * 1024   # the kernel's PID_MAX_LIMIT on 64-bit
SYS_MODULE = Path("/sys/module") / MODULE
PARAMS = ("ring_size", "proc_gid")
SNAPSHOT_SOURCE = {"processes": "kernel (/proc/toolkit/processes)",
                   "meminfo": "kernel (si_meminfo)"}
_READ_CHUNK = 1 << 16


# ---------------------------------------------------------------- parsers (pure)

def parse_events(text: str) -> list:
    """Lines of /proc/toolkit/events -> schema.Record list (blank lines ignored)."""
    return [schema.parse_line(line) for line in text.splitlines() if line]


def parse_stats(text: str) -> Stats:
    """/proc/toolkit/stats -> base.Stats."""
    events = event_counters()
    hooks: list[HookStats] = []
    scalars: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "event":
            name, kv = parts[1], parts[2:]
            vals = {kv[i]: int(kv[i + 1]) for i in range(0, len(kv) - 1, 2)}
            events[name] = EventCounters(**{k: vals.get(k, 0) for k in schema.COUNTER_KINDS})
        elif parts[0] == "hook":
            kv = parts[2:]
            vals = {kv[i]: int(kv[i + 1]) for i in range(0, len(kv) - 1, 2)}
            hooks.append(HookStats(name=parts[1], count=vals.get("count", 0),
                                   total_ns=vals.get("total_ns", 0),
                                   missed=vals.get("missed", 0)))
        elif len(parts) == 2:
            scalars[parts[0]] = parts[1]
        else:
            raise ValueError(f"unexpected stats line: {line!r}")
    version = int(scalars.get("record_version", schema.RECORD_VERSION))
    if version != schema.RECORD_VERSION:
        raise ValueError(f"module speaks record version {version}, "
                         f"toolkit knows {schema.RECORD_VERSION}: rebuild and reload it")
    events_mask = scalars.get("events", "")
    return Stats(
        backend="lkm", events=events, hooks=hooks,
        ring_size=int(scalars.get("ring_size", 0)),
        ring_fill=int(scalars.get("ring_fill", 0)),
        read_lost=int(scalars.get("read_lost", 0)),
        extra={"cleared": int(scalars.get("cleared", 0)),
               "uid_filter": _filter(scalars.get("uid_filter", "off")),
               "ppid_filter": _filter(scalars.get("ppid_filter", "off")),
               "events": [] if events_mask in ("", "none") else events_mask.split(","),
               "record_version": version},
    )


def _filter(text: str) -> int | None:
    """A filter as the stats file shows it: "off" (None) or the id."""
    return None if text == "off" else int(text)


PROCESS_COLUMNS = ["pid", "ppid", "uid", "state", "rss_kib", "hiwater_rss_kib",
                   "total_vm_kib", "cpu_ns", "start_ns", "threads", "comm"]


def parse_processes(text: str) -> list[ProcInfo]:
    """/proc/toolkit/processes -> ProcInfo list; checks the header line."""
    out = []
    lines = text.splitlines()
    if not lines or lines[0].split() != ["#"] + PROCESS_COLUMNS:
        raise ValueError(f"unexpected processes header: {lines[:1]!r}")
    for line in lines[1:]:
        if not line:
            continue
        parts = line.split(" ", len(PROCESS_COLUMNS) - 1)
        if len(parts) != len(PROCESS_COLUMNS):
            raise ValueError(f"bad processes line: {line!r}")
        pid, ppid, uid, state, rss, hwm, vm, cpu, start, threads, comm = parts
        out.append(ProcInfo(pid=int(pid), ppid=int(ppid), uid=int(uid),
                            comm=schema.unescape(comm), state=state, rss_kib=int(rss),
                            hiwater_rss_kib=int(hwm), total_vm_kib=int(vm),
                            cpu_ns=int(cpu), start_ns=int(start), threads=int(threads)))
    return out


MEMINFO_KEYS = ("total_kib", "free_kib", "used_kib", "buffers_kib", "cached_kib",
                "available_kib")


def parse_meminfo(text: str) -> MemInfo:
    vals = {}
    for line in text.splitlines():
        if line.strip():
            key, value = line.split()
            vals[key] = int(value)
    missing = [k for k in MEMINFO_KEYS if k not in vals]
    if missing:
        raise ValueError(f"meminfo lacks {', '.join(missing)}")
    return MemInfo(**{k: vals[k] for k in MEMINFO_KEYS})


def vermagic(ko_bytes: bytes) -> str | None:
    """The vermagic string of a .ko image (from its .modinfo section)."""
    m = re.search(rb"(?:^|\0)vermagic=([^\0]*)", ko_bytes)
    return m.group(1).decode(errors="replace") if m else None


# ---------------------------------------------------------------- build / load

release = sysinfo.release


def build_dir(rel: str | None = None) -> Path:
    """$TOOLKIT_BUILD_DIR, else /var/tmp/toolkit/<release>/lkm (writable in the lab)."""
    env = os.environ.get("TOOLKIT_BUILD_DIR")
    if env:
        return Path(env)
    return Path("/var/tmp/toolkit") / (rel or release()) / "lkm"


# include/ headers the module shares with eBPF and Python (copied into a build dir)
SHARED_HEADERS = ("toolkit_record.h", "toolkit_quota.h")


def lab_build_dir(rel: str) -> Path:
    """A build the host prepares for the lab (`toolkit lkm build --release R --for-lab`):
    results/ is the one host directory the guest sees, and building under TCG is slow."""
    return RESULTS_DIR / ".build" / rel / "lkm"


def _sources() -> list[tuple[Path, str]]:
    """(source file, path relative to the build dir)."""
    files = sorted(p for p in LKM_DIR.iterdir()
                   if p.suffix in (".c", ".h") or p.name in ("Kbuild", "Makefile"))
    return [(p, p.name) for p in files] + [(INCLUDE_DIR / h, f"include/{h}")
                                           for h in SHARED_HEADERS]


def is_built_for_lab(rel: str) -> bool:
    """Is there an up-to-date build of these sources for `rel` in lab_build_dir?"""
    return _up_to_date(lab_build_dir(rel), source_digest(rel)) is not None


def source_digest(rel: str) -> str:
    h = hashlib.sha256(rel.encode())
    for src, name in _sources():
        h.update(name.encode() + b"\0" + src.read_bytes() + b"\0")
    return h.hexdigest()


def kernel_build_dir(rel: str) -> Path:
    """/lib/modules/<rel>/build (the running kernel's, or the lab guest's), else the
    headers of the lab kernel `rel` in the lab's cache (toolkit.kcache)."""
    native = Path("/lib/modules") / rel / "build"
    if (native / "Makefile").exists():
        return native
    return kcache.headers_for(rel) or native


def _up_to_date(bdir: Path, digest: str) -> Path | None:
    ko, stamp = bdir / f"{MODULE}.ko", bdir / ".toolkit-source"
    try:
        if ko.exists() and stamp.read_text() == digest:
            return ko
    except OSError:
        pass
    return None


def build(release_: str | None = None, force: bool = False, make_args: tuple = (),
          into: Path | None = None) -> Path:
    """Build toolkit_lkm.ko for a kernel release (default: the running one) into `into`
    or build_dir(); reuse an existing build of the same sources (also one the host made
    for the lab, see lab_build_dir). Returns the .ko path."""
    rel = release_ or release()
    if not force and into is None:
        digest = source_digest(rel)
        for cand in (build_dir(rel), lab_build_dir(rel)):
            ko = _up_to_date(cand, digest)
            if ko is not None:
                return ko
    kdir = kernel_build_dir(rel)
    if not (kdir / "Makefile").exists():
        raise BackendError(f"kernel headers for {rel} are missing ({kdir} has no Makefile)",
                           hint=f"install linux-headers-{rel}, or {LAB_HINT}")
    if not shutil.which("make"):
        raise BackendError("`make` is not installed", hint="install make and gcc")
    bdir = Path(into) if into is not None else build_dir(rel)
    ko = bdir / f"{MODULE}.ko"
    stamp = bdir / ".toolkit-source"
    digest = source_digest(rel)
    if not force and _up_to_date(bdir, digest):
        return ko
    try:
        (bdir / "include").mkdir(parents=True, exist_ok=True)
        for src, name in _sources():
            dst = bdir / name
            if not dst.exists() or dst.read_bytes() != src.read_bytes():
                shutil.copyfile(src, dst)
        stamp.unlink(missing_ok=True)
    except OSError as e:
        raise BackendError(f"cannot prepare the build directory {bdir}: {e.strerror}",
                           hint="set TOOLKIT_BUILD_DIR to a writable directory") from None
    cmd = ["make", "-C", str(kdir), f"M={bdir}", *make_args, "modules"]
    cp = subprocess.run(cmd, capture_output=True, text=True)
    if cp.returncode != 0 or not ko.exists():
        tail = "\n".join((cp.stdout + cp.stderr).strip().splitlines()[-15:])
        raise BackendError(f"building {MODULE}.ko for {rel} failed:\n{tail}",
                           hint=f"run `make -C {kdir} M={bdir}` to see the full log")
    stamp.write_text(digest)
    return ko


def is_loaded() -> bool:
    return SYS_MODULE.exists() or PROC_DIR.exists()


def loaded_params() -> dict[str, int]:
    out = {}
    for name in PARAMS:
        try:
            out[name] = int((SYS_MODULE / "parameters" / name).read_text())
        except (OSError, ValueError):
            pass
    return out


def check_environment(rel: str | None = None) -> None:
    """Raise BackendError if this machine cannot load the module at all."""
    rel = rel or release()
    if os.geteuid() != 0:
        raise BackendError("loading the kernel module needs root",
                           hint=f"run as root (sudo), or {LAB_HINT}")
    if not Path("/proc/modules").exists():
        raise BackendError(f"kernel {rel} has no loadable module support (CONFIG_MODULES=n: "
                           "/proc/modules is missing)", hint=LAB_HINT)
    config = sysinfo.kernel_config_text(rel)
    if config is not None and "CONFIG_KPROBES=y" not in config:
        raise BackendError(f"kernel {rel} is built without kprobes (CONFIG_KPROBES)",
                           hint=LAB_HINT)


def _run_tool(args: list[str]) -> subprocess.CompletedProcess:
    tool = shutil.which(args[0]) or next(
        (p for p in (f"/sbin/{args[0]}", f"/usr/sbin/{args[0]}") if os.path.exists(p)), None)
    if tool is None:
        raise BackendError(f"`{args[0]}` is not installed", hint="install kmod")
    # a hung insmod/rmmod (stuck in the kernel, where no signal reaches it) must fail
    # with a message, not hang the caller: do not wait for it after the timeout
    p = subprocess.Popen([tool, *args[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        out, err = p.communicate(timeout=TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        p.kill()
        raise BackendError(f"`{' '.join(args)}` did not finish in {TOOL_TIMEOUT_S} s "
                           f"(pid {p.pid}, stuck in the kernel?)",
                           hint="`dmesg` shows why (a hung-task report names the wait)") from None
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def load(ring_size: int | None = None, proc_gid: int | None = None,
         ko: Path | None = None) -> Path:
    """Build if needed and insmod the module with the given parameters."""
    rel = release()
    check_environment(rel)
    if is_loaded():
        raise BackendError(f"{MODULE} is already loaded", hint="`toolkit lkm unload` first")
    ko = ko or build(rel)
    magic = vermagic(ko.read_bytes())
    if magic is not None and magic.split()[0] != rel:
        raise BackendError(f"{ko} was built for kernel {magic.split()[0]}, this is {rel} "
                           "(vermagic mismatch: a module only loads into the kernel it was "
                           "built against)", hint="rebuild with `toolkit lkm build`")
    params = [f"{k}={int(v)}" for k, v in (("ring_size", ring_size), ("proc_gid", proc_gid))
              if v is not None]
    cp = _run_tool(["insmod", str(ko), *params])
    if cp.returncode != 0:
        msg = cp.stderr.strip() or cp.stdout.strip()
        hint = "see `dmesg | grep toolkit_lkm` for the module's own message"
        if "Invalid module format" in msg:
            hint = "vermagic or symbol versions do not match this kernel: rebuild it"
        elif "Unknown symbol" in msg:
            hint = "this kernel lacks a symbol the module needs (kprobes?): " + LAB_HINT
        elif "Operation not permitted" in msg:
            hint = "not root, or module loading is locked down (Secure Boot / lockdown)"
        raise BackendError(f"insmod {ko.name} {' '.join(params)} failed: {msg}", hint=hint)
    return ko


def unload() -> bool:
    """rmmod the module; False if it was not loaded."""
    if not SYS_MODULE.exists():
        return False
    if os.geteuid() != 0:
        raise BackendError("unloading the kernel module needs root", hint="run as root")
    cp = _run_tool(["rmmod", MODULE])
    if cp.returncode != 0:
        raise BackendError(f"rmmod {MODULE} failed: {cp.stderr.strip()}")
    return True


def _read_proc(name: str) -> str:
    try:
        return (PROC_DIR / name).read_text()
    except FileNotFoundError:
        raise BackendError(f"{PROC_DIR / name} does not exist: {MODULE} is not loaded",
                           hint="`toolkit lkm load`") from None
    except PermissionError:
        raise BackendError(f"no permission to read {PROC_DIR / name}",
                           hint="run as root, or load with --proc-gid GID") from None


def control(*commands: str) -> None:
    """Write commands to /proc/toolkit/control in one write (all or nothing)."""
    data = "\n".join(commands).encode() + b"\n"
    try:
        fd = os.open(PROC_DIR / "control", os.O_WRONLY)
    except FileNotFoundError:
        raise BackendError(f"{MODULE} is not loaded", hint="`toolkit lkm load`") from None
    except PermissionError:
        raise BackendError("/proc/toolkit/control is root-only", hint="run as root") from None
    try:
        os.write(fd, data)
    except OSError as e:
        if e.errno == errno.EINVAL:
            raise BackendError(f"the module rejected {commands!r} (EINVAL)") from None
        raise
    finally:
        os.close(fd)


def read_stats() -> Stats:
    return parse_stats(_read_proc("stats"))


def status() -> dict:
    """Loaded?, parameters, build location, and the stats when loaded."""
    rel = release()
    ko = build_dir(rel) / f"{MODULE}.ko"
    out = {"module": MODULE, "release": rel, "loaded": is_loaded(),
           "params": loaded_params(), "ko": str(ko) if ko.exists() else None,
           "stats": None}
    if out["loaded"]:
        try:
            out["stats"] = read_stats()
        except BackendError as e:
            out["error"] = str(e)
    return out


# ---------------------------------------------------------------- /proc/toolkit/vm

def _vm_select(fd: int, pid: int) -> None:
    """Write @pid to an open /proc/toolkit/vm (the selection belongs to that open file)."""
    try:
        os.write(fd, f"{pid}\n".encode())
    except OSError as e:
        if e.errno == errno.ESRCH:
            raise InspectError(f"no process with pid {pid} (or it has exited)") from None
        if e.errno == errno.EINVAL:
            raise InspectError(f"pid {pid} cannot be inspected: a kernel thread, "
                               "or not a valid pid") from None
        raise


def _vm_read(fd: int, pid: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    try:
        while chunk := os.read(fd, _READ_CHUNK):
            chunks.append(chunk)
    except OSError as e:
        if e.errno == errno.ESRCH:
            raise InspectError(f"pid {pid} exited while being read") from None
        raise
    return b"".join(chunks).decode(errors="replace")


def read_vm_text(pid: int) -> str:
    """The module's /proc/toolkit/vm text for @pid (open, write the pid, seek to 0,
    read); errors as the module returns them, explained."""
    path = PROC_DIR / "vm"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise BackendError(f"{path} does not exist: {MODULE} is not loaded "
                           "(or is older than `inspect`)",
                           hint="`toolkit lkm load`, or add --lab") from None
    except PermissionError:
        raise BackendError(f"{path} is root-only", hint="run as root") from None
    try:
        _vm_select(fd, pid)
        return _vm_read(fd, pid)
    finally:
        os.close(fd)


def read_layout(pid: int) -> LayoutText:
    """LkmBackend.layout: the module loaded if it is not, then /proc/toolkit/vm."""
    if not is_loaded():
        load()
    return LayoutText(read_vm_text(pid))


# ---------------------------------------------------------------- the backend

class LkmBackend(Backend):
    """Records from the kprobe module. Options: ring_size, proc_gid (reload the module
    with these if it runs with others), events ("fork,exec" / "all"), keep_loaded."""

    name = "lkm"
    doctor_needs = ("root", "capabilities", "loadable modules", "kprobes", "hook symbols",
                    "kernel headers", "lockdown / module signing")
    layout_reader = "toolkit.backends.lkm:read_layout"      # /proc/toolkit/vm (lkm/vm.c)
    quotas_impl = "toolkit.backends.lkm_quota:LkmQuotas"    # /proc/toolkit/quota

    def __init__(self, uid: int | None = None, ring_size: int | None = None,
                 proc_gid: int | None = None, events: str | None = None,
                 keep_loaded: bool = False, **options):
        super().__init__(uid=uid, **options)
        self.ring_size = ring_size
        self.proc_gid = proc_gid
        self.events = events
        self.keep_loaded = keep_loaded
        self.loaded_here = False
        self._fd: int | None = None
        self._partial = b""
        self.eof = False

    # -- lifecycle
    def start(self) -> None:
        want = {k: v for k, v in (("ring_size", self.ring_size), ("proc_gid", self.proc_gid))
                if v is not None}
        if is_loaded():
            have = loaded_params()
            if any(have.get(k) != v for k, v in want.items()):
                unload()
        if not is_loaded():
            load(**want)
            self.loaded_here = True
        try:
            self._fd = os.open(PROC_DIR / "events", os.O_RDONLY | os.O_NONBLOCK)
        except PermissionError:
            raise BackendError("no permission to read /proc/toolkit/events",
                               hint="run as root, or load with --proc-gid GID") from None
        except FileNotFoundError:
            raise BackendError(f"{MODULE} loaded but /proc/toolkit/events is missing",
                               hint="`dmesg | grep toolkit_lkm`") from None
        commands = [f"uid {self.uid_filter}" if self.uid_filter is not None else "uid off",
                    f"ppid {self.ppid_filter}" if self.ppid_filter is not None else "ppid off"]
        if self.events is not None:
            commands.append(f"events {self.events}")
        if os.geteuid() == 0:
            control(*commands)
        elif self.uid_filter is not None or self.events is not None:
            raise BackendError("setting filters needs root (/proc/toolkit/control)")

    def stop(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.loaded_here and not self.keep_loaded:
            unload()
            self.loaded_here = False

    # -- events
    def read(self, timeout: float) -> list:
        if self._fd is None:
            raise BackendError("the lkm backend is not started")
        if self.eof:
            return []
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        if not poller.poll(max(0.0, timeout) * 1000):
            return []
        chunks = [self._partial]
        for _ in range(64):     # bounded: return to the caller under a flood
            try:
                data = os.read(self._fd, _READ_CHUNK)
            except BlockingIOError:
                break
            if not data:        # the module is being unloaded
                self.eof = True
                break
            chunks.append(data)
        buf = b"".join(chunks)
        cut = buf.rfind(b"\n") + 1
        self._partial = buf[cut:]
        return parse_events(buf[:cut].decode("utf-8", "surrogateescape"))

    # -- tables and counters
    def snapshot(self) -> Snapshot:
        return Snapshot(processes=parse_processes(_read_proc("processes")),
                        meminfo=parse_meminfo(_read_proc("meminfo")),
                        source=dict(SNAPSHOT_SOURCE))

    def stats(self) -> Stats:
        return read_stats()

    def set_uid_filter(self, uid: int | None) -> None:
        control(f"uid {uid}" if uid is not None else "uid off")
        self.uid_filter = uid

    def set_ppid_filter(self, ppid: int | None) -> None:
        if ppid is not None and not 0 < int(ppid) <= PID_MAX_LIMIT:
            raise BackendError(f"lkm backend: ppid must be in 1..{PID_MAX_LIMIT}, not {ppid}")
        control(f"ppid {int(ppid)}" if ppid is not None else "ppid off")
        self.ppid_filter = None if ppid is None else int(ppid)

    def reset_stats(self) -> None:
        control("reset")

    def clear(self) -> None:
        """Discard queued records (counted as cleared, not dropped)."""
        control("clear")
