"""The eBPF backend's CO-RE engine: one compiled object (ebpf/core/lifecycle.bpf.o) that
libbpf relocates with the running kernel's BTF, loaded from Python through
``libbpf.py``. No kernel headers and no compiler where it runs; the logic is the BCC
engine's (ebpf/tk_lifecycle.h), so the records, counters and filters are the same.

Options (keyword arguments, as for the BCC engine):

``probe``        kprobe | fentry | tp_btf | raw_tp, or None: the first of them this
                 kernel loads and attaches (kprobe only where the kernel has kprobes),
                 reported as ``probe`` in stats with the reasons the others failed.
``buffer_pages`` ring buffer pages, a power of two (default 256).
``wakeup``       batch (default) | record: the reader's wakeup policy (see
                 tk_lifecycle.h and docs/ebpf-core.md for the measurement).
``transport``    auto | ringbuf: the CO-RE engine has the ring buffer only.

Exit: tp_btf and raw_tp use sched_process_exit where it fires before exit_mm() (its
prototype has group_dead: the kernel's BTF says so), else do_exit's kprobe where the
kernel has kprobes, else sched_process_exit without RSS (said in ``exit_hook``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .. import schema
from . import base, libbpf, quota_pins
from .engines import BTF, CORE_BUILD_DIR, CORE_BUILD_HINT, CORE_LIFECYCLE_OBJ
from .ebpf import (BpfStatsSwitch, check_ppid, check_uid, check_wakeup, decode,
                   events_from_counters, hook_stats, prog_stats, ring_capacity,
                   stats_enabled, wakeup_every)

BUILD_DIR, LIFECYCLE_OBJ, BUILD_HINT = CORE_BUILD_DIR, CORE_LIFECYCLE_OBJ, CORE_BUILD_HINT
PROCS_OBJ = BUILD_DIR / "procs.bpf.o"
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe")
PROBES = ("kprobe", "fentry", "tp_btf", "raw_tp")
DEFAULT_PAGES = 256
PAGE = 4096
# per variant: the program of each event (ebpf/core/lifecycle.bpf.c)
PROGRAMS = {
    "kprobe": {"fork": "kp_wake_up_new_task", "exec": "kp_setup_new_exec", "exit": "kp_do_exit"},
    "fentry": {"fork": "fe_wake_up_new_task", "exec": "fe_setup_new_exec", "exit": "fe_do_exit"},
    "tp_btf": {"fork": "tb_sched_process_fork", "exec": "tb_sched_process_exec",
               "exit": "tb_sched_process_exit"},
    "raw_tp": {"fork": "rt_sched_process_fork", "exec": "rt_sched_process_exec",
               "exit": "rt_sched_process_exit"},
}
KINDS = {"kp": "kprobe", "fe": "fentry", "tb": "tp_btf", "rt": "raw_tp"}


def hook_name(program: str) -> str:
    """'tb_sched_process_fork' -> 'tp_btf:sched_process_fork' (kind:target, as BCC's)."""
    kind, _, target = program.partition("_")
    return f"{KINDS[kind]}:{target}"


def has_kprobes() -> bool:
    return KPROBE_PMU.exists()


def exit_before_exit_mm() -> bool:
    """Whether sched_process_exit fires while the mm is attached: kernels that moved it
    before exit_mm() also gave it a group_dead argument (6.18 has it, 6.1 not)."""
    n = libbpf.tracepoint_arity("sched_process_exit")
    return n is not None and n >= 2


def exit_hook(probe: str) -> tuple[str, str]:
    """(program, note) for the exit event of variant `probe`."""
    if probe in ("kprobe", "fentry"):
        return PROGRAMS[probe]["exit"], "do_exit entry: RSS read from the attached mm"
    if exit_before_exit_mm():
        return PROGRAMS[probe]["exit"], "sched_process_exit before exit_mm(): RSS read there"
    if has_kprobes():
        return PROGRAMS["kprobe"]["exit"], ("do_exit kprobe: this kernel's sched_process_exit "
                                            "fires after exit_mm(), when RSS is gone")
    return PROGRAMS[probe]["exit"], ("sched_process_exit after exit_mm() and no kprobes: "
                                     "exit records carry no RSS (flags without has_mm)")


def preflight(obj: Path = LIFECYCLE_OBJ) -> None:
    """Root, the kernel's BTF, libbpf, the built object: what every CO-RE load needs."""
    if os.geteuid() != 0:
        raise base.BackendError("ebpf backend (core): loading BPF programs needs root "
                                f"(euid is {os.geteuid()})")
    if not BTF.exists():
        raise base.BackendError(f"ebpf backend (core): this kernel has no BTF ({BTF}); "
                                "CO-RE needs CONFIG_DEBUG_INFO_BTF (use --engine bcc)",
                                base.LAB_HINT)
    libbpf.lib()
    if not obj.exists():
        raise base.BackendError(f"ebpf backend (core): {obj} is not built", BUILD_HINT)


class EbpfCoreBackend(base.Backend):
    name = "ebpf"
    engine = "core"
    doctor_needs = ("root", "capabilities", "BTF", "bpf() and bpf_stats", "lockdown (BPF)",
                    "libbpf", "CO-RE objects", "attach kinds (CO-RE)")
    # BTF or libbpf missing here: no lab needed to run it where they are (doctor says
    # "unavailable", not "lab")
    doctor_lab_fallback = False
    engine_reason = ""
    probes = PROBES
    default_probe = None        # the first that loads and attaches here
    warmup_note = ""
    snapshot_needs_start = False    # procs.bpf.o, loaded on its own
    layout_reader = "toolkit.backends.ebpf_vm:read_layout_core"    # core/vm.bpf.o
    quotas_impl = "toolkit.backends.core_quota:CoreQuotas"          # ebpf/core/quota.bpf.c
    pinned_quotas_impl = "toolkit.backends.core_pins:PinnedQuotas"  # the same, pinned

    def __init__(self, uid: int | None = None, probe: str | None = None,
                 buffer_pages: int | None = None, wakeup: str | None = None,
                 transport: str | None = None, **options):
        if options:
            raise base.BackendError(f"ebpf backend (core): unknown option(s) "
                                    f"{', '.join(sorted(options))}; known: probe, "
                                    "buffer_pages, wakeup, transport, uid")
        super().__init__(uid=uid, probe=probe, buffer_pages=buffer_pages, wakeup=wakeup)
        if probe is not None and probe not in PROBES:
            raise base.BackendError(f"ebpf backend (core): probe must be one of "
                                    f"{', '.join(PROBES)}, not {probe!r}")
        if transport not in (None, "auto", "ringbuf"):
            raise base.BackendError("ebpf backend (core): the CO-RE engine uses the BPF ring "
                                    f"buffer only, not transport={transport!r}")
        pages = DEFAULT_PAGES if buffer_pages is None else int(buffer_pages)
        if pages < 1 or pages & (pages - 1):
            raise base.BackendError(f"ebpf backend (core): buffer_pages must be a power of "
                                    f"two >= 1, not {pages}")
        self.probe_asked, self.pages = probe, pages
        self.wakeup = check_wakeup(wakeup, "ebpf backend (core)")
        self.probe: str | None = None
        self.probe_notes: dict[str, str] = {}
        self.exit_note = ""
        self._obj: libbpf.Object | None = None
        self._links: list[libbpf.Link] = []
        self._prog_fds: dict[str, int] = {}
        self._ring: libbpf.RingBuffer | None = None
        self._sink: list[bytes] = []
        self._bpf_stats = BpfStatsSwitch()
        self._ncpus = 1
        self._base_counters: dict[int, int] = {}
        self._base_progs: dict = {}
        self._read_lost = 0
        self._kills = None          # quota_pins.PinnedKills: pinned quotas' kill records
        self._kills_base = 0
        self.load_s = 0.0

    def describe(self, short: bool = False) -> str:
        probe = self.probe or self.probe_asked
        if short:
            return "ebpf-core" + (f"+{probe}" if probe else "")
        why = f": {self.engine_reason}" if self.engine_reason else ""
        notes = "; ".join(f"{p} not used: {n}" for p, n in self.probe_notes.items())
        return (f"ebpf (engine core{why}; probe {probe or 'not chosen yet'}"
                + (f" ({notes})" if notes else "") + (f"; exit: {self.exit_note}"
                                                      if self.exit_note else "") + ")")

    # ---- start / stop ------------------------------------------------

    def _candidates(self) -> list[str]:
        if self.probe_asked:
            return [self.probe_asked]
        out = []
        for p in PROBES:
            if p == "kprobe" and not has_kprobes():
                self.probe_notes[p] = "no kprobes in this kernel (CONFIG_KPROBES)"
                continue
            out.append(p)
        return out

    def _load(self, probe: str) -> None:
        """Open the object, keep only the variant's programs, size the ring, load (CO-RE
        relocation and the verifier) and attach; the object stays closed on failure."""
        exit_prog, self.exit_note = exit_hook(probe)
        names = [PROGRAMS[probe]["fork"], PROGRAMS[probe]["exec"], exit_prog]
        obj = libbpf.Object(str(LIFECYCLE_OBJ))
        try:
            for prog in obj.programs():
                prog.set_autoload(prog.name in names)
            obj.map("tk_events").set_max_entries(self.pages * PAGE)
            t0 = time.monotonic()
            obj.load()
            self.load_s = time.monotonic() - t0
            self._obj = obj
            self._ncpus = libbpf.possible_cpus()
            self._apply_config()
            for name in names:
                prog = obj.program(name)
                self._links.append(prog.attach())
                self._prog_fds[hook_name(name)] = prog.fd
        except BaseException:
            self._detach()
            obj.close()
            self._obj = None
            raise

    def start(self) -> None:
        if self._obj:
            return
        preflight()
        errors = []
        for probe in self._candidates():
            try:
                self._load(probe)
            except libbpf.LibbpfError as e:
                self.probe_notes[probe] = str(e).splitlines()[0]
                errors.append(f"{probe}: {e}")
                continue
            self.probe = probe
            break
        else:
            raise base.BackendError("ebpf backend (core): no attach kind loads here:\n"
                                    + "\n".join(errors or ["(none to try)"]), base.LAB_HINT)
        try:
            self._ring = libbpf.RingBuffer(self._obj.map("tk_events").fd, self._sink)
            self._kills = quota_pins.PinnedKills()
            self._bpf_stats.enable()
            self.reset_stats()
        except BaseException:
            self.stop()
            raise

    def _detach(self) -> None:
        for link in reversed(self._links):    # attached last, detached first
            link.destroy()
        self._links.clear()

    def stop(self) -> None:
        self._detach()
        if self._ring:
            self._ring.free()
            self._ring = None
        if self._kills:
            self._kills.close()
            self._kills = None
        if self._obj:
            self._obj.close()
            self._obj = None
        self._bpf_stats.restore()
        self._prog_fds.clear()
        self._sink.clear()

    # ---- configuration ------------------------------------------------

    def capacity(self) -> int:
        return ring_capacity("ringbuf", self.pages, 1)

    def _apply_config(self) -> None:
        cfg = self._obj.map("tk_config")
        cfg.update_u64(schema.CONFIG_SLOTS["uid"], schema.filter_encode(self.uid_filter))
        cfg.update_u64(schema.CONFIG_SLOTS["ppid"], schema.filter_encode(self.ppid_filter))
        cfg.update_u64(schema.CONFIG_SLOTS["wakeup"],
                       wakeup_every(self.wakeup, self.capacity(), os.cpu_count() or 1))

    def set_uid_filter(self, uid: int | None) -> None:
        super().set_uid_filter(check_uid(uid))
        if self._obj:
            self._apply_config()

    def set_ppid_filter(self, ppid: int | None) -> None:
        self.ppid_filter = check_ppid(ppid)
        if self._obj:
            self._apply_config()

    # ---- records --------------------------------------------------------

    def read(self, timeout: float) -> list:
        if not self._ring:
            raise base.BackendError("ebpf backend (core): read() before start()")
        self._ring.poll(max(0, int(timeout * 1000)))
        self._ring.consume()    # what came without a wakeup (batched policy)
        raw, self._sink[:] = list(self._sink), []
        out, short = decode(raw)
        self._read_lost += short
        if self._kills:
            out.extend(self._kills.read())      # kills of pinned quotas
        return out

    # ---- stats ----------------------------------------------------------

    def _raw_counters(self) -> dict[int, int]:
        m = self._obj.map("tk_counters")
        return {k: sum(m.percpu_u64(k, self._ncpus)) for k in range(schema.NCOUNTERS)}

    def reset_stats(self) -> None:
        if not self._obj:
            return
        self._base_counters = self._raw_counters()
        self._base_progs = prog_stats(self._prog_fds)
        self._read_lost = 0
        self._kills_base = self._kills.delivered if self._kills else 0

    def stats(self) -> base.Stats:
        if not self._obj:
            raise base.BackendError("ebpf backend (core): stats() before start()")
        progs = prog_stats(self._prog_fds)
        return base.Stats(
            backend=self.name,
            events=quota_pins.count_kills(
                events_from_counters(self._raw_counters(), self._base_counters),
                self._kills, self._kills_base),
            hooks=hook_stats(progs, self._base_progs),
            ring_size=self.capacity(), ring_fill=0, lost_in_transport=0,
            read_lost=self._read_lost,
            extra={"engine": self.engine, "engine_reason": self.engine_reason,
                   "probe": self.probe, "probe_notes": dict(self.probe_notes),
                   "exit_hook": self.exit_note, "transport": "ringbuf",
                   "wakeup": self.wakeup,
                   "wakeup_every": wakeup_every(self.wakeup, self.capacity(),
                                                os.cpu_count() or 1),
                   "uid_filter": self.uid_filter, "ppid_filter": self.ppid_filter,
                   "buffer_pages": self.pages, "compile_s": round(self.load_s, 3),
                   "load_s": round(self.load_s, 3),
                   "bpf_stats_enabled": stats_enabled(),
                   "prog_ids": {n: i.get("prog_id") for n, i in progs.items()},
                   **quota_pins.kill_ring_stats(self._kills),
                   "ring_fill": "not read (0 reported)"})

    # ---- snapshot -------------------------------------------------------

    def snapshot(self) -> base.Snapshot:
        """The process table from the CO-RE task iterator (ebpf/core/procs.bpf.c)."""
        from .ebpf import iter_snapshot
        from .. import sysinfo
        raw = procs_program().iterate()
        snap = iter_snapshot(raw, sysinfo.read_text("/proc/meminfo", ""))
        snap.source["processes"] = "kernel: BPF task iterator, CO-RE (ebpf/core/procs.bpf.c)"
        return snap


_PROCS = None


def procs_program() -> libbpf.Program:
    """procs.bpf.o loaded once per process; each iterate() is a new walk."""
    global _PROCS
    if _PROCS is None:
        preflight(PROCS_OBJ)
        obj = libbpf.Object(str(PROCS_OBJ))
        try:
            obj.load()
        except libbpf.LibbpfError as e:
            obj.close()
            raise base.BackendError(f"ebpf backend (core): the task iterator: {e}") from None
        _PROCS = (obj, obj.program("tk_iter_task"))
    return _PROCS[1]
