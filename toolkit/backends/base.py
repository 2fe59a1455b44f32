"""The one Backend interface every collector implements (lkm, ebpf, ps).

Like psutil, the backend is chosen in one place (``get_backend``) and every backend
returns the same typed objects: ``schema.Record`` for events, ``Snapshot`` for the
process table and system memory, ``Stats`` for counters. A contract test holds the
kernel backends to this.
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
from typing import ClassVar

from .. import schema, sysinfo
from ..errors import BackendError


LAB_HINT = ("run `toolkit doctor` to see what this kernel lacks, or add `--lab` to run "
            "the command in the lab VM (a stock Debian kernel under QEMU)")


ProcInfo = sysinfo.ProcInfo     # one row of the process table, the same for every backend


@dataclasses.dataclass
class MemInfo:
    """System memory, KiB."""
    total_kib: int
    free_kib: int
    used_kib: int
    buffers_kib: int
    cached_kib: int
    available_kib: int


@dataclasses.dataclass
class Snapshot:
    processes: list[ProcInfo]
    meminfo: MemInfo
    # where the numbers come from, e.g. {"processes": "kernel", "meminfo": "kernel"};
    # a backend that reads something from user space (e.g. /proc/meminfo) says so here
    source: dict[str, str] = dataclasses.field(default_factory=dict)


# The counters of one event type: one int field per kind of the header's
# TK_COUNTER_KINDS (seen, filtered, delivered, dropped), so both kernel sides and Python
# count the same things under the same names; seen == filtered + delivered + dropped.
EventCounters = dataclasses.make_dataclass(
    "EventCounters", [(k, int, dataclasses.field(default=0)) for k in schema.COUNTER_KINDS])
EventCounters.__doc__ = "Counters of one event type; kinds as TK_COUNTER_KINDS."


@dataclasses.dataclass
class HookStats:
    """Per kernel hook (kprobe / BPF program)."""
    name: str
    count: int = 0       # times the handler ran
    total_ns: int = 0    # time spent in it
    missed: int = 0      # kprobe nmissed (the handler did not run at all)

    @property
    def ns_per_call(self) -> float | None:
        return self.total_ns / self.count if self.count else None


@dataclasses.dataclass
class Stats:
    backend: str
    events: dict[str, EventCounters]            # by event name ("fork", ...)
    hooks: list[HookStats] = dataclasses.field(default_factory=list)
    ring_size: int = 0                          # records the ring/buffer holds (0: n/a)
    ring_fill: int = 0                          # records waiting now
    lost_in_transport: int = 0                  # perf lost samples etc, already in dropped
    read_lost: int = 0                          # records taken from the kernel but lost in user space
    extra: dict = dataclasses.field(default_factory=dict)
    # what the `dropped` kind counts here: "ring_full" (the kernel's ring or buffer had
    # no room), "socket_drops" (a netlink socket's sk_drops), "seq_gaps" (netlink
    # sequence gaps, where sk_drops cannot be read); `toolkit export`'s drop reason
    drop_reason: str = "ring_full"

    @property
    def dropped(self) -> int:
        return sum(c.dropped for c in self.events.values())

    @property
    def missed(self) -> int:
        return sum(h.missed for h in self.hooks)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["dropped"], d["missed"] = self.dropped, self.missed
        return d


@dataclasses.dataclass
class LayoutText:
    """One process's memory layout as a backend read it (`toolkit inspect`), in the
    module's text format (documented at the top of lkm/vm.c), which toolkit/inspect
    parses, checks and renders whatever the backend."""
    text: str
    # what this backend read differently from the module, or could not read
    notes: list[str] = dataclasses.field(default_factory=list)
    # start addresses of VMAs not named as /proc/PID/maps names them (--check then
    # compares base names)
    inexact_names: set[int] = dataclasses.field(default_factory=set)


class Backend(abc.ABC):
    """start() -> read() ... -> stats() -> stop(); also a context manager."""

    name: ClassVar[str]
    # Record fields this backend fills with data; None: all of them. A field left out
    # is unavailable (0 in the record, "-" in the report, never a zero that looks
    # like data).
    provides: ClassVar[frozenset[str] | None] = None
    # Where ts_ns comes from: "kernel" (the event's own time) or "receipt" (the
    # interface carries no event time: ts_ns is when the backend received the record,
    # so it may come after the parent reaped the child).
    event_time: ClassVar[str] = "kernel"
    # Event types (schema names) the interface reports at all; None: all of them.
    event_types: ClassVar[frozenset[str] | None] = None
    # Whether snapshot() needs start() first (the module loaded, ...). False where the
    # table has its own source (the ebpf backend's task iterator): `toolkit mem` then
    # does not compile and attach the event programs it never reads.
    snapshot_needs_start: ClassVar[bool] = True
    # How far the records' ts_ns may stray from the event (a coarse clock, times
    # printed to the millisecond): the bench widens its matching windows by this much.
    time_slack_ns: ClassVar[int] = 0
    # ProcInfo fields the process table (snapshot) fills with data; None: all of them. A
    # field left out shows as "-" in tables (null in JSON, empty in CSV), never as a
    # zero that looks like data.
    snapshot_fields: ClassVar[frozenset[str] | None] = None
    # Polling (True): the backend samples the process table every `interval` seconds
    # (an option it takes), so it sees no process living between two polls and its
    # records are the differences of two polls, ts_ns a poll time. Streaming (False):
    # kernel events as they happen.
    polling: ClassVar[bool] = False
    # The hook variants the `probe` option selects (--probe); () if it takes none.
    probes: ClassVar[tuple[str, ...]] = ()
    # The quotas capability (`toolkit quota`, `toolkit bench quota`): "module:Class" of
    # a quotas.Quotas implementation, imported when asked; None: not supported.
    quotas_impl: ClassVar[str | None] = None
    # Where the quotas of quotas_impl die with the command: "module:Class" of the
    # implementation whose quotas outlive it (`quota set|list|clear|reset`), or None.
    pinned_quotas_impl: ClassVar[str | None] = None
    # The `layout(pid)` capability (`toolkit inspect`): "module:function" reading one
    # process's memory layout as LayoutText, imported only when asked (as REGISTRY is,
    # so that no backend module imports its reader at load time); None: not supported.
    layout_reader: ClassVar[str | None] = None
    # The `toolkit doctor` checks (toolkit/doctor.py, by name) this backend needs from the
    # kernel: any of them MISSING keeps it from running natively here. A backend with
    # engines declares them per engine class.
    doctor_needs: ClassVar[tuple[str, ...]] = ()
    # Whether the lab VM is the way out when this kernel lacks something (doctor's "lab"
    # verdict); False where the missing piece is not about this kernel's build (the CO-RE
    # engine: BTF or libbpf missing here is "unavailable", it needs no lab to run).
    doctor_lab_fallback: ClassVar[bool] = True

    def __init__(self, uid: int | None = None, **options):
        self.uid_filter = uid
        self.ppid_filter: int | None = None
        self.options = options

    @abc.abstractmethod
    def start(self) -> None:
        """Attach to the kernel; raise BackendError with a clear message if it cannot."""

    @abc.abstractmethod
    def read(self, timeout: float) -> list:
        """Wait up to timeout seconds for records; return those available (maybe [])."""

    def drain(self, timeout: float = 0.5) -> list:
        """Read until the kernel side has nothing more for `timeout` seconds."""
        out = []
        while True:
            got = self.read(timeout)
            if not got:
                return out
            out.extend(got)

    @abc.abstractmethod
    def snapshot(self) -> Snapshot:
        """Process table (user-space processes only) and system memory."""

    @abc.abstractmethod
    def stats(self) -> Stats:
        ...

    def describe(self, short: bool = False) -> str:
        """What is collecting, for people: the name, plus engine and hook where a backend
        has them (short: one word for a title bar)."""
        return self.name

    def set_uid_filter(self, uid: int | None) -> None:
        self.uid_filter = uid

    def set_ppid_filter(self, ppid: int | None) -> None:
        """Deliver only records of processes whose parent is `ppid` (the children of one
        workload), filtered in the kernel: everything else counts as filtered, so drops
        and misses concern that workload alone. None turns the filter off."""
        raise BackendError(f"the {self.name} backend has no parent-pid filter")

    def reset_stats(self) -> None:
        raise NotImplementedError

    def spawned_pids(self) -> list[int]:
        """The live processes this collector started and reads from (a peer tool), which
        are the collector as much as the reader is: the bench confines them with it
        (--collector-cpu). Ours run in the kernel and the reader: none."""
        return []

    @abc.abstractmethod
    def stop(self) -> None:
        ...

    @classmethod
    def layout(cls, pid: int) -> LayoutText:
        """One process's memory layout, read from the kernel's own structures
        (task_struct -> mm_struct); no start() needed. BackendError where the backend
        cannot, InspectError for a pid that cannot be inspected."""
        if cls.layout_reader is None:
            raise BackendError(f"the {cls.name} backend cannot read a process's memory "
                               "layout", hint="use --backend "
                               + " or ".join(backends_with("layout_reader")))
        module, func = cls.layout_reader.split(":")
        return getattr(importlib.import_module(module), func)(pid)

    @classmethod
    def quotas_class(cls, persistent: bool = False):
        """The class enforcing this backend's quotas (quotas.Quotas); persistent: one
        whose quotas outlive the command. BackendError where there is none."""
        impl = (cls.pinned_quotas_impl if persistent else None) or cls.quotas_impl
        if impl is None:
            raise BackendError(f"the {cls.name} backend enforces no quotas",
                               hint="use --backend " + " or ".join(backends_with("quotas_impl")))
        module, name = impl.split(":")
        k = getattr(importlib.import_module(module), name)
        if persistent and not k.persistent:
            engine = getattr(cls, "engine", "")
            raise BackendError(f"{cls.name}{f' --engine {engine}' if engine else ''}: quotas "
                               f"cannot outlive the command ({k.not_persistent_why})",
                               hint="use `toolkit quota run` there, or another engine")
        return k

    @classmethod
    def quotas(cls, exclusive: bool = False, load: bool = False, persistent: bool = False):
        """This backend's quotas, attached (quotas.Quotas; close() when done)."""
        return cls.quotas_class(persistent)(exclusive=exclusive, load=load)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def deliver_children(rec, counters: EventCounters, ppid: int | None,
                     children: set[int]) -> bool:
    """A parent-pid filter in user space, for an interface with none in the kernel: count
    `rec` as seen, then as delivered if there is no filter (ppid None) or it is a record
    of one of ppid's children, else as filtered. The children are followed from their
    fork (an exec or exit record names no parent, or no longer the same one): `children`
    grows as their forks arrive. -> delivered?"""
    counters.seen += 1
    if ppid is not None:
        if rec.type in (schema.EventType.FORK, schema.EventType.CLONE) and rec.ppid == ppid:
            children.add(rec.tgid)
        if rec.tgid not in children:
            counters.filtered += 1
            return False
    counters.delivered += 1
    return True


def ensure_tracefs(who: str) -> None:
    """Mount tracefs where it is missing (sysinfo.mount_tracefs), for a backend that
    attaches tracepoints through it; BackendError if it cannot be."""
    err = sysinfo.mount_tracefs()
    if err:
        raise BackendError(f"{who} needs tracefs, which is not mounted and could not be "
                           f"({err})", f"mount -t tracefs nodev {sysinfo.TRACEFS}")


# name -> "module:Class"; imported lazily so `import bcc` happens only for ebpf
REGISTRY = {
    "lkm": "toolkit.backends.lkm:LkmBackend",
    "ebpf": "toolkit.backends.ebpf:EbpfBackend",
    "ps": "toolkit.backends.ps:PsBackend",
    "cnproc": "toolkit.backends.cnproc:CnprocBackend",
    "taskstats": "toolkit.backends.taskstats:TaskstatsBackend",
    "acct": "toolkit.backends.acct:AcctBackend",
    # the tools users run instead (docs/peers.md)
    "auditd": "toolkit.backends.peers.auditd:AuditdBackend",
    "bpftrace": "toolkit.backends.peers.bpftrace:BpftraceBackend",
    "forkstat": "toolkit.backends.peers.forkstat:ForkstatBackend",
    "execsnoop": "toolkit.backends.peers.bccsnoop:ExecsnoopBackend",
    "exitsnoop": "toolkit.backends.peers.bccsnoop:ExitsnoopBackend",
}
# The kernel's own process-event interfaces: no module, no BPF, no headers.
NATIVE_INTERFACE_BACKENDS = ("cnproc", "taskstats", "acct")
# Drops whose event type cannot be known (a proc connector sequence gap): counted under
# this key of Stats.events beside the typed ones, and added to the bench's drops.
UNTYPED = "untyped"
# The peers: other tools run as collectors (toolkit/backends/peers/).
PEER_BACKENDS = ("auditd", "bpftrace", "forkstat", "execsnoop", "exitsnoop")
KERNEL_BACKENDS = ("lkm", "ebpf", "cnproc", "taskstats", "acct", *PEER_BACKENDS)  # doctor decides


# Backends with more than one engine (engines.py): name -> engine -> "module:Class"
ENGINE_BACKENDS = ("ebpf",)


def _target(name: str, options: dict) -> tuple[str, str, str]:
    """("module:Class", engine, reason) for backend `name`; pops options["engine"]."""
    engine = options.pop("engine", None)
    if name not in REGISTRY:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(REGISTRY)}")
    if name not in ENGINE_BACKENDS:
        if engine not in (None, "auto"):
            raise BackendError(f"--engine applies to --backend {', '.join(ENGINE_BACKENDS)} "
                               f"only, not {name}")
        return REGISTRY[name], "", ""
    from . import engines
    engine, reason = engines.resolve(engine)
    return engines.TARGETS[engine], engine, reason


def get_backend(name: str, **options) -> Backend:
    """The backend `name` with its options; `engine` (bcc|core|auto) picks the eBPF
    engine, and the instance's engine_reason says why."""
    target, engine, reason = _target(name, options)
    module, cls = target.split(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise BackendError(f"the {name} backend cannot be loaded: {e}", LAB_HINT) from None
    try:
        b = getattr(mod, cls)(**options)
    except TypeError as e:  # an option this backend does not take
        raise BackendError(f"{name} backend: {e}") from None
    if engine:
        b.engine_reason = reason
    return b


def event_counters(untyped: bool = False) -> dict[str, EventCounters]:
    out = {name: EventCounters() for name in schema.EVENT_BY_NAME}
    if untyped:
        out[UNTYPED] = EventCounters()
    return out


def backend_class(name: str, engine: str | None = None):
    """The class behind backend `name`; for a backend with engines, that engine's, or
    without one the first engine's (BCC: the one with every capability so far), so that
    what a name can do does not depend on the host asking."""
    if name in ENGINE_BACKENDS and engine in (None, "auto"):
        from .engines import ENGINES
        engine = ENGINES[0]
    module, cls = _target(name, {"engine": engine})[0].split(":")
    return getattr(importlib.import_module(module), cls)


def quotas_class_for(name: str, engine: str | None = None, persistent: bool = False):
    """The Quotas class of backend `name`: for a backend with engines and no --engine,
    the engine auto picks (run), or the first engine whose quotas outlive the command
    (persistent: set, list, clear, reset)."""
    if name in ENGINE_BACKENDS and engine in (None, "auto"):
        from . import engines
        if persistent:
            for e in engines.ENGINES:
                cls = backend_class(name, e)
                if cls.quotas_impl and (cls.pinned_quotas_impl or
                                        cls.quotas_class().persistent):
                    return cls.quotas_class(True)
        engine = engines.resolve(engine)[0]
    return backend_class(name, engine).quotas_class(persistent)


def quota_sides() -> dict[str, tuple[str, str | None]]:
    """The bench's quota mechanisms that are kernel sides: column label -> (backend,
    engine), one per engine of a backend with engines (ebpf: BCC, ebpf-core: CO-RE, as
    engines.label names them), in registry order."""
    from . import engines
    out = {}
    for name in backends_with("quotas_impl"):
        if name in ENGINE_BACKENDS:
            for e in engines.ENGINES:
                if backend_class(name, e).quotas_impl:
                    out[engines.label(e)] = (name, e)
        else:
            out[name] = (name, None)
    return out


def doctor_subject(name: str, engine: str | None = None) -> str:
    """What doctor gives a verdict on: a backend ("lkm"), or one engine of a backend
    with engines ("ebpf:core")."""
    return f"{name}:{engine}" if engine not in (None, "auto") and name in ENGINE_BACKENDS \
        else name


def engine_subjects(name: str) -> list[str]:
    """The doctor subjects of each engine of backend `name` ([] if it has none)."""
    if name not in ENGINE_BACKENDS:
        return []
    from .engines import ENGINES
    return [doctor_subject(name, e) for e in ENGINES]


def subject_class(subject: str):
    """The class whose declarations (doctor_needs, ...) decide doctor's verdict on
    `subject` (doctor_subject's form)."""
    name, _, engine = subject.partition(":")
    return backend_class(name, engine or None) if engine else registered_class(name)


def doctor_subjects() -> list[str]:
    """Every subject doctor checks needs for: each kernel backend, or each of its engines."""
    return [s for n in KERNEL_BACKENDS for s in (engine_subjects(n) or [n])]


def registered_class(name: str):
    """The class REGISTRY names for @name (whatever engine a run may pick): what the
    CLI's choices and checks are built from."""
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def backends_with(capability: str) -> list[str]:
    """The registered backends whose class declares @capability (a true attribute:
    layout_reader, quotas_impl, probes, polling ...), in registry order."""
    return [n for n in REGISTRY if getattr(registered_class(n), capability)]


def fills(fields: frozenset[str] | None, name: str) -> bool:
    """Does a backend whose `provides` / `snapshot_fields` is @fields fill field @name?"""
    return fields is None or name in fields


def provided_fields(name: str) -> list[str]:
    """The record fields the registered backend `name` fills (all, if it does not say)."""
    module, cls = REGISTRY[name].split(":")
    try:
        p = getattr(importlib.import_module(module), cls).provides
    except ImportError:
        p = None
    return list(schema.FIELD_NAMES) if p is None else [f for f in schema.FIELD_NAMES if f in p]


# ---------------------------------------------------------------- the user-space view
# Backends whose kernel side has no process table of its own (eBPF on kernels without a
# task iterator, the native baselines) read /proc from user space, and say so.

PROC_SNAPSHOT_SOURCE = {
    "processes": "user space: /proc/<pid>/stat and /proc/<pid>/status "
                 "(cpu_ns and start_ns at clock-tick resolution)",
    "meminfo": "user space: /proc/meminfo"}


def meminfo_from_proc(text: str) -> MemInfo:
    """/proc/meminfo -> MemInfo with the module's conventions (used = total - free -
    buffers - cached; cached = Cached, which already excludes swap cache and buffers)."""
    kv = sysinfo.parse_meminfo(text)
    total, free = kv.get("MemTotal", 0), kv.get("MemFree", 0)
    buffers, cached = kv.get("Buffers", 0), kv.get("Cached", 0)
    return MemInfo(total_kib=total, free_kib=free,
                   used_kib=max(0, total - free - buffers - cached),
                   buffers_kib=buffers, cached_kib=cached,
                   available_kib=kv.get("MemAvailable", free))


def proc_snapshot() -> Snapshot:
    """The process table and system memory as /proc shows them to user space."""
    return Snapshot(processes=sysinfo.proc_table(),
                    meminfo=meminfo_from_proc(sysinfo.read_text("/proc/meminfo", "")),
                    source=dict(PROC_SNAPSHOT_SOURCE))
