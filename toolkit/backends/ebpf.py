"""The eBPF backend: BCC programs (ebpf/lifecycle.c) producing struct tk_record.

Options (all keyword arguments of ``EbpfBackend`` / ``get_backend("ebpf", ...)``):

``probe``        kprobe (default) | tracepoint | fentry.  kprobe attaches to the
                 functions the kernel module probes (wake_up_new_task,
                 setup_new_exec, do_exit), so the two backends measure the same
                 hook points and differ only in the handler machinery; it also
                 needs nothing but CONFIG_KPROBES.  tracepoint uses
                 sched:sched_process_fork/exec (as raw tracepoints, for the task
                 pointers) and the do_exit kprobe for exit (sched_process_exit fires
                 after exit_mm() on 6.1, when RSS is gone).  fentry uses BPF
                 trampolines on the three functions (needs BTF).
``transport``    auto (default: ringbuf on >= 5.8, else perf) | ringbuf | perf.
``buffer_pages`` pages of the BPF ring buffer (total), or of each CPU's perf
                 buffer; a power of two.  Default 256 (ringbuf) / 64 (perf).
``uid``          deliver only records of this real uid (filtered in the kernel).

Loss accounting: per event type the programs count seen / filtered / delivered /
dropped in a per-CPU array (seen == filtered + delivered + dropped); a failed ring
buffer reservation or perf output is a drop.  Perf's own PERF_RECORD_LOST
notifications (lost_cb) count the same losses again and are reported as
``lost_in_transport``.  Per-program run count and time come from
kernel.bpf_stats_enabled (switched on while the backend runs, restored on stop)
via /proc/self/fdinfo/<prog fd>.

A BCC compile takes ~25-50 s under QEMU TCG, so compiled modules are kept per
(cflags) in this process and reused by later backends with the same transport and
buffer size (probes detached, counters re-based, stale records discarded).
"""
from __future__ import annotations

import contextlib
import ctypes as ct
import dataclasses
import os
import tempfile
import time
import warnings
from pathlib import Path

from .. import schema, sysinfo
from ..paths import EBPF_DIR, INCLUDE_DIR
from . import base, bpf_iter, quota_pins

SOURCE = EBPF_DIR / "lifecycle.c"
PROCS_SOURCE = EBPF_DIR / "procs.c"
# the process table's sources: the task iterator's rows come from the kernel; meminfo
# has no BPF counterpart worth a program (the module's is si_meminfo, /proc/meminfo's too)
ITER_SNAPSHOT_SOURCE = {
    "processes": "kernel: BPF task iterator (ebpf/procs.c)",
    "meminfo": "user space: /proc/meminfo"}
PROBES = ("kprobe", "tracepoint", "fentry")
TRANSPORTS = ("auto", "ringbuf", "perf")
DEFAULT_PAGES = {"ringbuf": 256, "perf": 64}
STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
RINGBUF_MIN_KERNEL = (5, 8)

# per probe variant: (attach kind, kernel function / tracepoint, BPF function). The
# kprobe and fentry variants hook the header's TK_HOOKS symbols, as the module does; the
# tracepoint variant replaces fork and exec by their sched tracepoints.
_SYM = schema.HOOK_SYMBOLS
TRACEPOINTS = {"fork": "sched_process_fork", "exec": "sched_process_exec"}
HOOKS = {
    "kprobe": [("kprobe", _SYM[h], f"kp_{_SYM[h]}") for h, _, _ in schema.HOOKS],
    "tracepoint": [("raw_tracepoint", TRACEPOINTS[h], f"tp_{TRACEPOINTS[h]}")
                   if h in TRACEPOINTS else ("kprobe", _SYM[h], f"kp_{_SYM[h]}")
                   for h, _, _ in schema.HOOKS],
    "fentry": [("fentry", _SYM[h], f"kfunc__{_SYM[h]}") for h, _, _ in schema.HOOKS],
}


# ---------------------------------------------------------------- pure helpers

@dataclasses.dataclass(frozen=True)
class Options:
    probe: str
    transport: str          # resolved: ringbuf | perf
    buffer_pages: int


def resolve_options(probe: str | None = None, transport: str | None = None,
                    buffer_pages: int | None = None, release: str | None = None,
                    **unknown) -> Options:
    """Validate the backend options; raise BackendError naming a bad one."""
    if unknown:
        raise base.BackendError(
            f"ebpf backend: unknown option(s) {', '.join(sorted(unknown))}; "
            "known: probe, transport, buffer_pages, uid")
    probe = probe or "kprobe"
    if probe not in PROBES:
        raise base.BackendError(f"ebpf backend: probe must be one of {', '.join(PROBES)}, "
                                f"not {probe!r}")
    transport = transport or "auto"
    if transport not in TRANSPORTS:
        raise base.BackendError(f"ebpf backend: transport must be one of "
                                f"{', '.join(TRANSPORTS)}, not {transport!r}")
    ringbuf_ok = sysinfo.kernel_version(release) >= RINGBUF_MIN_KERNEL
    if transport == "auto":
        transport = "ringbuf" if ringbuf_ok else "perf"
    elif transport == "ringbuf" and not ringbuf_ok:
        raise base.BackendError("ebpf backend: the BPF ring buffer needs Linux >= 5.8; "
                                "use transport=perf", base.LAB_HINT)
    if buffer_pages is None:
        buffer_pages = DEFAULT_PAGES[transport]
    try:
        buffer_pages = int(buffer_pages)
    except (TypeError, ValueError):
        raise base.BackendError(f"ebpf backend: buffer_pages must be an integer, "
                                f"not {buffer_pages!r}") from None
    if buffer_pages < 1 or buffer_pages & (buffer_pages - 1):
        raise base.BackendError(f"ebpf backend: buffer_pages must be a power of two >= 1, "
                                f"not {buffer_pages}")
    return Options(probe, transport, buffer_pages)


def cflags(opts: Options, fentry: bool) -> list[str]:
    """BCC cflags for one compile of ebpf/lifecycle.c."""
    out = [f"-I{INCLUDE_DIR}", f"-I{EBPF_DIR}", "-Wno-macro-redefined"]
    if opts.transport == "ringbuf":
        out += ["-DTK_TRANSPORT_RINGBUF=1", f"-DTK_RINGBUF_PAGES={opts.buffer_pages}"]
    else:
        out += ["-DTK_TRANSPORT_PERF=1"]
    if fentry:
        out.append("-DTK_WITH_FENTRY=1")
    return out


def parse_fdinfo(text: str) -> dict[str, int]:
    """The integer fields of a /proc/<pid>/fdinfo/<fd> file (run_time_ns, run_cnt, ...)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        value = value.strip()
        try:
            out[key.strip()] = int(value, 0) if value.startswith("0x") else int(value)
        except ValueError:
            continue
    return out


def log_tail(text: str, lines: int = 25) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


def ring_capacity(transport: str, pages: int, ncpus: int, page_size: int = 4096) -> int:
    """Records the buffer can hold: ringbuf entries carry an 8-byte header; perf
    samples a perf_event_header + u32 size, rounded to 8 bytes; perf has one buffer
    per CPU."""
    if transport == "ringbuf":
        per = (schema.RECORD_SIZE + 8 + 7) // 8 * 8
        return pages * page_size // per
    per = (schema.RECORD_SIZE + 8 + 4 + 7) // 8 * 8
    return pages * page_size // per * ncpus


WAKEUPS = ("batch", "record")
DEFAULT_WAKEUP = "batch"
WAKEUP_EVERY_MAX = 1024     # records per CPU between forced wakeups (batched policy)


def wakeup_every(policy: str, capacity: int, ncpus: int) -> int:
    """TK_CONFIG_WAKEUP for a policy: 0 (wake the reader at each record, the kernel's
    default) or N, a forced wakeup every N records of a CPU (BPF_RB_NO_WAKEUP otherwise),
    small enough that the ring never fills between two wakeups."""
    if policy == "record":
        return 0
    return max(1, min(WAKEUP_EVERY_MAX, capacity // (4 * max(1, ncpus))))


def check_wakeup(wakeup: str | None, what: str) -> str:
    wakeup = wakeup or DEFAULT_WAKEUP
    if wakeup not in WAKEUPS:
        raise base.BackendError(f"{what}: wakeup must be one of {', '.join(WAKEUPS)}, "
                                f"not {wakeup!r}")
    return wakeup


class BpfStatsSwitch:
    """kernel.bpf_stats_enabled on while a backend runs (per-program run time and count in
    fdinfo), restored to what it was on stop."""

    def __init__(self):
        self.prev: str | None = None

    def enable(self) -> None:
        try:
            self.prev = STATS_SYSCTL.read_text().strip()
            if self.prev != "1":
                STATS_SYSCTL.write_text("1\n")
        except OSError:
            self.prev = None

    def restore(self) -> None:
        if self.prev is not None and self.prev != "1":
            with contextlib.suppress(OSError):
                STATS_SYSCTL.write_text(self.prev + "\n")
        self.prev = None


def decode(raw: list[bytes]) -> tuple[list, int]:
    """Records from the ring's byte strings, and how many were too short to be one (a
    reader loss: counted as read_lost, never silently skipped)."""
    out = [schema.unpack(b) for b in raw if len(b) >= schema.RECORD_SIZE]
    return out, len(raw) - len(out)


def check_uid(uid: int | None) -> int | None:
    if uid is not None and not (0 <= int(uid) < 2**32 - 1):
        raise base.BackendError(f"ebpf backend: uid must be in 0..2^32-2, not {uid}")
    return None if uid is None else int(uid)


def check_ppid(ppid: int | None) -> int | None:
    if ppid is not None and not 0 < int(ppid) < 2**32:
        raise base.BackendError(f"ebpf backend: ppid must be a positive pid, not {ppid}")
    return None if ppid is None else int(ppid)


def stats_enabled() -> bool:
    return STATS_SYSCTL.exists() and STATS_SYSCTL.read_text().strip() == "1"


def prog_stats(prog_fds: dict[str, int]) -> dict[str, dict[str, int]]:
    """fdinfo of each program fd (run_time_ns, run_cnt, recursion_misses, prog_id)."""
    out = {}
    for name, fd in prog_fds.items():
        try:
            out[name] = parse_fdinfo(Path(f"/proc/self/fdinfo/{fd}").read_text())
        except OSError:
            out[name] = {}
    return out


def events_from_counters(raw: dict[int, int], base_raw: dict[int, int]) -> dict:
    """Per event type EventCounters from the tk_counters values, minus a baseline."""
    events = base.event_counters()
    for value, name in schema.EVENT_NAMES.items():
        c = events[name]
        for kind in schema.COUNTER_KINDS:
            k = schema.counter_key(value, kind)
            setattr(c, kind, raw.get(k, 0) - base_raw.get(k, 0))
    return events


def hook_stats(progs: dict, base_progs: dict) -> list:
    """HookStats per program from fdinfo deltas. kprobe nmissed is not in fdinfo;
    recursion_misses (>= 5.12) counts runs the kernel skipped."""
    out = []
    for name, info in progs.items():
        b0 = base_progs.get(name, {})
        out.append(base.HookStats(
            name=name, count=info.get("run_cnt", 0) - b0.get("run_cnt", 0),
            total_ns=info.get("run_time_ns", 0) - b0.get("run_time_ns", 0),
            missed=info.get("recursion_misses", 0) - b0.get("recursion_misses", 0)))
    return out


@contextlib.contextmanager
def capture_stderr():
    """Collect what C code (clang, libbpf, the verifier log BCC prints) writes to fd 2.
    Yields a list that holds the text after the block."""
    out: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode("utf-8", "replace"))


def preflight(source: Path = SOURCE) -> None:
    """Root, BCC importable, the kernel's headers (BCC compiles against them), the source:
    what every BCC compile needs (also ebpf/vm.c's, for inspect)."""
    if os.geteuid() != 0:
        raise base.BackendError("ebpf backend: loading BPF programs needs root "
                                f"(euid is {os.geteuid()})", base.LAB_HINT)
    try:
        import bcc  # noqa: F401  (Debian's python3-bpfcc; never the PyPI 'bcc')
    except Exception as e:  # ImportError, or libbcc failing to load
        raise base.BackendError(
            f"ebpf backend: cannot import bcc ({e}); install python3-bpfcc and run "
            "from a venv made with --system-site-packages", base.LAB_HINT) from None
    rel = sysinfo.release()
    build = Path("/lib/modules") / rel / "build"
    if not build.exists():
        raise base.BackendError(
            f"ebpf backend: kernel headers for {rel} are missing ({build}); BCC "
            f"compiles against them (apt-get install linux-headers-{rel})", base.LAB_HINT)
    if not source.exists():
        raise base.BackendError(f"ebpf backend: BPF source {source} not found")


def compile_source(source: Path, cflags: list[str], bpf_class=None, what: str = "ebpf backend",
                   hint: str = base.LAB_HINT):
    """Compile a BCC source (the caller has run preflight()); a failure is a
    BackendError carrying the tail of what clang / the verifier printed."""
    if bpf_class is None:
        from bcc import BPF as bpf_class
    with capture_stderr() as err:
        try:
            bpf = bpf_class(src_file=str(source).encode(), cflags=cflags)
        except Exception as e:
            failure = e
        else:
            failure = None
    if failure is not None:
        raise base.BackendError(f"{what}: BCC failed to compile {source.name} ({failure}):\n"
                                f"{log_tail(err[0])}", hint)
    return bpf


# flags of the iterator programs' compiles (procs.c, vm.c)
ITER_CFLAGS = [f"-I{INCLUDE_DIR}", f"-I{EBPF_DIR}", "-Wno-macro-redefined"]


# ---------------------------------------------------------------- compiled modules

@dataclasses.dataclass
class _Module:
    """One compiled BPF module and its transport, reusable by successive backends."""
    bpf: object
    transport: str
    compile_s: float
    sink: list = dataclasses.field(default_factory=list)
    perf_lost: int = 0
    in_use: bool = False
    opened: bool = False


_MODULES: dict[tuple, _Module] = {}


class EbpfBackend(base.Backend):
    name = "ebpf"
    engine = "bcc"
    doctor_needs = ("root", "capabilities", "kprobes", "hook symbols", "kernel headers",
                    "tracefs", "bpf() and bpf_stats", "bcc (python3-bpfcc)", "lockdown (BPF)")
    engine_reason = ""      # why this engine (set by get_backend for engine=auto)
    probes = PROBES
    default_probe = "kprobe"
    warmup_note = "BCC compile: ~25 s under TCG"
    snapshot_needs_start = False    # procs.c, compiled on its own (procs_module())
    layout_reader = "toolkit.backends.ebpf_vm:read_layout"  # ebpf/vm.c's iterators
    probes = PROBES
    quotas_impl = "toolkit.backends.ebpf_quota:EbpfQuotas"  # ebpf/quota.c

    def __init__(self, uid: int | None = None, probe: str | None = None,
                 transport: str | None = None, buffer_pages: int | None = None,
                 wakeup: str | None = None, **options):
        super().__init__(uid=uid, probe=probe, transport=transport,
                         buffer_pages=buffer_pages, wakeup=wakeup, **options)
        self.opts = resolve_options(probe, transport, buffer_pages, **options)
        # the ring buffer's wakeup policy; the perf buffer wakes per record
        self.wakeup = check_wakeup(wakeup, "ebpf backend")
        self._mod: _Module | None = None
        self._attached: list[tuple[str, str, str]] = []
        self._prog_fds: dict[str, int] = {}
        self._bpf_stats = BpfStatsSwitch()
        self._base_counters: dict[int, int] = {}
        self._base_progs: dict[str, dict[str, int]] = {}
        self._base_perf_lost = 0
        self._read_lost = 0
        self._kills = None          # quota_pins.PinnedKills: pinned quotas' kill records
        self._kills_base = 0
        self._started = False

    def describe(self, short: bool = False) -> str:
        probe = "" if self.opts.probe == "kprobe" else f"+{self.opts.probe}"
        if short:
            return f"ebpf{probe}"
        why = f": {self.engine_reason}" if self.engine_reason else ""
        return f"ebpf (engine bcc{why}; probe {self.opts.probe})"

    # ---- start / stop ------------------------------------------------

    def _preflight(self):
        preflight()
        base.ensure_tracefs("ebpf --engine bcc")   # BCC attaches tracepoints through it

    def _compile(self, fentry: bool) -> _Module:
        from bcc import BPF

        class NoAutoloadBPF(BPF):
            # BCC would load and attach every kfunc__* program while compiling;
            # we attach only the programs of the probe variant asked for
            def _trace_autoload(self):
                pass
        flags = cflags(self.opts, fentry)
        key = (self.opts.transport, self.opts.buffer_pages, fentry)
        cached = _MODULES.get(key)
        if cached and not cached.in_use:
            return cached
        t0 = time.monotonic()
        bpf = compile_source(SOURCE, flags, NoAutoloadBPF)
        mod = _Module(bpf=bpf, transport=self.opts.transport,
                      compile_s=time.monotonic() - t0)
        if cached is None:
            _MODULES[key] = mod
        return mod

    def _open_transport(self, mod: _Module):
        if mod.opened:
            return
        table = mod.bpf[b"tk_events"]
        sink = mod.sink

        if mod.transport == "ringbuf":
            def on_record(ctx, data, size):
                sink.append(ct.string_at(data, size))
                return 0
            table.open_ring_buffer(on_record)
        else:
            def on_sample(cpu, data, size):
                sink.append(ct.string_at(data, size))

            def on_lost(count):
                mod.perf_lost += count
            table.open_perf_buffer(on_sample, page_cnt=self.opts.buffer_pages,
                                   lost_cb=on_lost)
        mod.opened = True

    def _attach(self, mod: _Module):
        from bcc import BPF
        b = mod.bpf
        load_type = {"kprobe": BPF.KPROBE, "raw_tracepoint": BPF.RAW_TRACEPOINT,
                     "fentry": BPF.TRACING}
        for kind, target, fn in HOOKS[self.opts.probe]:
            with capture_stderr() as err:
                try:
                    prog = b.load_func(fn.encode(), load_type[kind])
                    if kind == "kprobe":
                        b.attach_kprobe(event=target.encode(), fn_name=fn.encode())
                    elif kind == "raw_tracepoint":
                        b.attach_raw_tracepoint(tp=target.encode(), fn_name=fn.encode())
                    else:
                        b.attach_kfunc(fn_name=fn.encode())
                except Exception as e:
                    failure = e
                else:
                    failure = None
            if failure is not None:
                log = log_tail(err[0])
                what = ("the verifier rejected it" if "Failed to load" in str(failure)
                        else "attach failed")
                raise base.BackendError(
                    f"ebpf backend: {kind} program {fn} on {target}: {what} ({failure})"
                    + (f"\n{log}" if log else ""), base.LAB_HINT)
            self._attached.append((kind, target, fn))
            self._prog_fds[f"{kind}:{target}"] = prog.fd

    def _detach(self):
        if not self._mod:
            return
        b = self._mod.bpf
        for kind, target, fn in reversed(self._attached):
            with contextlib.suppress(Exception):
                if kind == "kprobe":
                    b.detach_kprobe(event=target.encode(), fn_name=fn.encode())
                elif kind == "raw_tracepoint":
                    b.detach_raw_tracepoint(tp=target.encode())
                else:
                    b.detach_kfunc(fn_name=fn.encode())
        self._attached.clear()

    def start(self) -> None:
        if self._started:
            return
        self._preflight()
        from bcc import BPF
        with warnings.catch_warnings():   # bcc 0.26 passes a str to its own ksymname
            warnings.simplefilter("ignore", DeprecationWarning)
            fentry = BPF.support_kfunc()
        if self.opts.probe == "fentry" and not fentry:
            raise base.BackendError("ebpf backend: probe=fentry needs BPF trampolines and "
                                    "kernel BTF (/sys/kernel/btf/vmlinux); use probe=kprobe",
                                    base.LAB_HINT)
        mod = self._compile(fentry)
        mod.in_use = True
        self._mod = mod
        try:
            self._open_transport(mod)
            self._bpf_stats.enable()
            self._apply_filters()
            self._attach(mod)
            self._discard_stale()
            self.reset_stats()
            self._kills = quota_pins.PinnedKills()
        except BaseException:
            self.stop()
            raise
        self._started = True

    def stop(self) -> None:
        self._detach()
        if self._mod:
            # leave nothing for the next user of this compiled module
            with contextlib.suppress(Exception):
                self._discard_stale()
            self._mod.in_use = False
            self._mod = None
        if self._kills:
            self._kills.close()
            self._kills = None
        self._bpf_stats.restore()
        self._prog_fds.clear()
        self._started = False

    def _discard_stale(self):
        self._poll(0)
        self._mod.sink.clear()

    def _wakeup_every(self) -> int:
        if self.opts.transport != "ringbuf":
            return 0
        cap = ring_capacity("ringbuf", self.opts.buffer_pages, os.cpu_count() or 1)
        return wakeup_every(self.wakeup, cap, os.cpu_count() or 1)

    # ---- records --------------------------------------------------------

    def _poll(self, timeout: float):
        ms = max(0, int(timeout * 1000))
        if self._mod.transport == "ringbuf":
            self._mod.bpf.ring_buffer_poll(ms)
            # batched wakeups: what came without one is read on this timer
            self._mod.bpf.ring_buffer_consume()
        else:
            self._mod.bpf.perf_buffer_poll(ms)

    def read(self, timeout: float) -> list:
        if not self._started:
            raise base.BackendError("ebpf backend: read() before start()")
        self._poll(timeout)
        raw, self._mod.sink[:] = list(self._mod.sink), []
        out, short = decode(raw)
        self._read_lost += short
        if self._kills:
            out.extend(self._kills.read())      # kills of pinned quotas
        return out

    # ---- uid and parent filters ------------------------------------------

    def _apply_filters(self):
        table = self._mod.bpf[b"tk_config"]
        for slot, ident in (("uid", self.uid_filter), ("ppid", self.ppid_filter)):
            table[ct.c_int(schema.CONFIG_SLOTS[slot])] = ct.c_ulonglong(
                schema.filter_encode(ident))
        table[ct.c_int(schema.CONFIG_SLOTS["wakeup"])] = ct.c_ulonglong(self._wakeup_every())

    def set_ppid_filter(self, ppid: int | None) -> None:
        self.ppid_filter = check_ppid(ppid)
        if self._mod:
            self._apply_filters()

    def set_uid_filter(self, uid: int | None) -> None:
        super().set_uid_filter(check_uid(uid))
        if self._mod:
            self._apply_filters()

    # ---- stats ----------------------------------------------------------

    def _raw_counters(self) -> dict[int, int]:
        table = self._mod.bpf[b"tk_counters"]
        return {k: int(table.sum(ct.c_int(k)).value)
                for k in range(schema.NCOUNTERS)}

    def reset_stats(self) -> None:
        if not self._mod:
            return
        self._base_counters = self._raw_counters()
        self._base_progs = prog_stats(self._prog_fds)
        self._base_perf_lost = self._mod.perf_lost
        self._read_lost = 0
        self._kills_base = self._kills.delivered if self._kills else 0

    def stats(self) -> base.Stats:
        if not self._mod:
            raise base.BackendError("ebpf backend: stats() before start()")
        progs = prog_stats(self._prog_fds)
        events = quota_pins.count_kills(
            events_from_counters(self._raw_counters(), self._base_counters), self._kills,
            self._kills_base)
        hooks = hook_stats(progs, self._base_progs)
        ncpus = os.cpu_count() or 1
        return base.Stats(
            backend=self.name, events=events, hooks=hooks,
            ring_size=ring_capacity(self.opts.transport, self.opts.buffer_pages, ncpus),
            ring_fill=0,
            lost_in_transport=self._mod.perf_lost - self._base_perf_lost,
            read_lost=self._read_lost,
            extra={"engine": self.engine, "engine_reason": self.engine_reason,
                   "probe": self.opts.probe, "transport": self.opts.transport,
                   "wakeup": self.wakeup if self.opts.transport == "ringbuf" else "record",
                   "wakeup_every": self._wakeup_every(),
                   "uid_filter": self.uid_filter, "ppid_filter": self.ppid_filter,
                   "buffer_pages": self.opts.buffer_pages,
                   "compile_s": round(self._mod.compile_s, 2),
                   "bpf_stats_enabled": stats_enabled(),
                   "prog_ids": {n: i.get("prog_id") for n, i in progs.items()},
                   "ring_fill": "not available from BCC (0 reported)",
                   **quota_pins.kill_ring_stats(self._kills)})

    # ---- snapshot -------------------------------------------------------

    def snapshot(self) -> base.Snapshot:
        """The process table from the BPF task iterator (ebpf/procs.c) on kernels that
        have one (>= 5.8), else from /proc; `source` names which."""
        if not bpf_iter.supported("task"):
            snap = base.proc_snapshot()
            snap.source["processes"] += (f" (kernel {sysinfo.release()} has no BPF task "
                                         "iterator: needs >= 5.8)")
            return snap
        bpf = procs_module()
        with capture_stderr() as err:
            try:
                raw = bpf_iter.read(bpf, "task")
            except base.BackendError as e:
                failure = e
            else:
                failure = None
        if failure is not None:
            log = log_tail(err[0])
            raise base.BackendError(f"ebpf backend: the process table's task iterator: "
                                    f"{failure}" + (f"\n{log}" if log else ""), base.LAB_HINT)
        return iter_snapshot(raw, sysinfo.read_text("/proc/meminfo", ""))


def iter_snapshot(raw: bytes, meminfo_text: str) -> base.Snapshot:
    """A Snapshot from the iterator's rows (struct tk_proc_row) and /proc/meminfo."""
    rows = schema.unpack_proc_rows(raw)
    procs = [base.ProcInfo(pid=r["pid"], ppid=r["ppid"], uid=r["uid"], comm=r["comm"],
                           state=r["state"], rss_kib=r["rss_kib"],
                           hiwater_rss_kib=r["hiwater_rss_kib"],
                           total_vm_kib=r["total_vm_kib"], cpu_ns=r["cpu_ns"],
                           start_ns=r["start_ns"], threads=r["threads"]) for r in rows]
    source = dict(ITER_SNAPSHOT_SOURCE)
    partial = [r["pid"] for r in rows if r["flags"] & schema.PROC_FLAGS["CPU_PARTIAL"]]
    if partial:     # counted and named, never silent
        source["processes"] += (f"; CPU time of the first threads only for {len(partial)} "
                                f"process(es) with too many threads: {partial[:5]}")
    return base.Snapshot(processes=sorted(procs, key=lambda p: p.pid),
                         meminfo=base.meminfo_from_proc(meminfo_text), source=source)


_PROCS_BPF = None


def procs_module():
    """ebpf/procs.c compiled once per process (a BCC compile is ~40 s under TCG) and
    kept: every snapshot runs its iterator program again, a new walk each time."""
    global _PROCS_BPF
    if _PROCS_BPF is not None:
        return _PROCS_BPF
    preflight(PROCS_SOURCE)
    _PROCS_BPF = compile_source(PROCS_SOURCE, ITER_CFLAGS)
    return _PROCS_BPF
