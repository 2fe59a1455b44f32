"""Quotas on the CO-RE engine (ebpf/core/quota.bpf.o, the logic of ebpf/tk_quota.h
shared with the BCC build), loaded through libbpf, in two lifetimes:

``CoreQuotas``    a private instance (`quota run`, the bench): the programs and the map
                  live as long as the object; close() detaches them.
``PinnedQuotas``  `quota set|list|clear|reset`: the links, the quota map, the kill ring,
                  the counters and a layout marker pinned under PIN_DIR in bpffs, so the
                  quotas hold after the command exits; any later command opens the pins.

Two hook sets (include/toolkit_quota.h), chosen at load by what the kernel has: the
module's kprobes/kretprobes where it has kprobes, else raw tracepoints (sys_exit: both
quotas recounted at every syscall return of a tracked process; sched_process_exit).
``coverage(hooks)`` says what each covers, for `quota` and `doctor`.

Identity: the map is keyed by tgid, each entry carries the leader's start time, read
from the kernel by the CO-RE task iterator (procs.bpf.o) when the quota is set, so an
entry never applies to a later process that reuses the pid; entries whose process is
gone are pruned at each set, list and clear (as the module prunes).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

from .. import schema
from ..errors import QuotaError
from ..quota import check_target
from . import base, libbpf
from .engines import CORE_BUILD_DIR
from .quotas import QuotaRow, Quotas, coverage

OBJ = CORE_BUILD_DIR / "quota.bpf.o"
FD_LIMIT = schema.FD_WORDS * 64
_VALUE = struct.Struct(schema.QUOTA_VALUE_FORMAT)
_KEY = struct.Struct("=I")


# ---------------------------------------------------------------- the hook sets

def programs(hooks: str) -> list[str]:
    """The entry points of hook set `hooks` (ebpf/tk_quota.h's names)."""
    if hooks == "kprobe":
        return [schema.quota_program(k, t, how) for k, t, how in schema.QUOTA_KPROBES]
    return [schema.quota_program(k, t, "raw_tp") for k, t, _ in schema.QUOTA_TRACEPOINTS]


def kernel_has_kprobes() -> bool:
    return Path("/sys/bus/event_source/devices/kprobe").exists()


def preflight() -> None:
    from .ebpf_core import preflight as core_preflight
    core_preflight(OBJ)


class _Loaded:
    """quota.bpf.o loaded with one hook set and attached; the links and the object are
    this process's until pinned."""

    def __init__(self, hook_sets=("kprobe", "tracepoint"), notes=()):
        self.obj: libbpf.Object | None = None
        self.links: list[libbpf.Link] = []
        self.hooks, self.notes = "", list(notes)
        for hooks in hook_sets:
            if hooks == "kprobe" and not kernel_has_kprobes():
                self.notes.append("kprobe hooks: no kprobes in this kernel")
                continue
            try:
                self._load(hooks)
            except libbpf.LibbpfError as e:
                self.notes.append(f"{hooks} hooks: {str(e).splitlines()[0]}")
                continue
            self.hooks = hooks
            return
        raise base.BackendError("ebpf quotas (core): no hook set loads here: "
                                + "; ".join(self.notes), base.LAB_HINT)

    def _load(self, hooks: str) -> None:
        names = programs(hooks)
        obj = libbpf.Object(str(OBJ))
        try:
            for prog in obj.programs():
                prog.set_autoload(prog.name in names)
            obj.load()
            for name in names:
                self.links.append(obj.program(name).attach())
        except BaseException:
            self.detach()
            obj.close()
            raise
        self.obj = obj

    def map_fd(self, name: str) -> int:
        return self.obj.map(name).fd

    def detach(self) -> None:
        for link in reversed(self.links):
            link.destroy()
        self.links.clear()

    def close(self) -> None:
        self.detach()
        if self.obj:
            self.obj.close()
            self.obj = None


# ---------------------------------------------------------------- the map

def live_processes() -> dict[int, tuple[int, str]]:
    """pid -> (leader start_ns, state letter) of every user-space process, from the
    kernel (the CO-RE task iterator): the start times the hooks compare with."""
    from .ebpf_core import procs_program
    rows = schema.unpack_proc_rows(procs_program().iterate())
    return {r["pid"]: (r["start_ns"], r["state"]) for r in rows}


def _state(killed: int) -> str:
    return f"killed-{schema.QUOTA_NAMES.get(killed, killed)}" if killed else "tracking"


def _live_values(pid: int) -> tuple[int | None, int | None, str | None]:
    """(VmData bytes, open descriptors, comm) of pid now, or Nones if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None, None, None
    kv = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    heap = int(kv["VmData"].split()[0]) * 1024 if "VmData" in kv else None
    return heap, fds, kv.get("Name", "").strip() or None


class _QuotaMap:
    """tk_quotas and tk_quota_counts by descriptor (a loaded object's or pinned)."""

    def __init__(self, quotas_fd: int, counts_fd: int, live: bool):
        self.quotas = libbpf.MapFd(quotas_fd, _KEY.size, _VALUE.size, "tk_quotas")
        self.counts = libbpf.MapFd(counts_fd, 4, 8, "tk_quota_counts")
        self.live = live        # entries() reads the live values from /proc

    def get(self, pid: int) -> dict | None:
        raw = self.quotas.lookup(_KEY.pack(pid))
        if raw is None:
            return None
        return dict(zip([n for n, _ in schema.QUOTA_VALUE_FIELDS], _VALUE.unpack(raw)))

    def put(self, pid: int, v: dict) -> None:
        try:
            self.quotas.update(_KEY.pack(pid), _VALUE.pack(
                *[v.get(n, 0) for n, _ in schema.QUOTA_VALUE_FIELDS]))
        except libbpf.LibbpfError as e:
            if "E2BIG" in str(e) or "errno 7" in str(e):
                raise QuotaError(f"pid {pid}: the eBPF quota map holds its maximum of "
                                 f"{schema.QUOTA_ENTRIES} processes",
                                 hint="clear some with `toolkit quota clear PID`") from None
            raise

    def prune(self, procs: dict) -> None:
        """Drop the entries whose process is gone (exited, or the pid reused)."""
        for key in self.quotas.keys():
            (pid,) = _KEY.unpack(key)
            v = self.get(pid)
            if v is None or not v["start_ns"]:
                continue
            start, state = procs.get(pid, (None, None))
            if start != v["start_ns"] or state in ("Z", "X"):
                self.quotas.delete(key)

    def set(self, pid: int, heap: int | None, files: int | None) -> None:
        if not heap and not files:
            raise QuotaError("nothing to set", hint="give --heap SIZE, --files N or both")
        if files and files >= FD_LIMIT:
            raise QuotaError(f"ebpf quotas count up to {FD_LIMIT - 1} descriptors; a file "
                             f"quota of {files} is past that", hint="use --backend lkm")
        check_target(pid)           # the module's refusals: pid 1, kernel threads, us
        procs = live_processes()
        self.prune(procs)
        if pid not in procs or procs[pid][1] in ("Z", "X"):
            raise QuotaError(f"pid {pid}: no such process")
        v = self.get(pid) or {}
        if v.get("start_ns") != procs[pid][0]:
            v = {"start_ns": procs[pid][0]}
        # the values now: the tracepoint hooks kill on a rise past the quota from here
        heap_now, files_now, _ = _live_values(pid)
        v["heap_seen"], v["files_seen"] = heap_now or 0, files_now or 0
        if heap:
            v["heap_quota"] = heap
        if files:
            v["files_quota"] = files
        self.put(pid, v)

    def clear(self, pid: int) -> None:
        self.prune(live_processes())
        if not self.quotas.delete(_KEY.pack(pid)):
            raise QuotaError(f"clear {pid}: no such process (or, to clear, no quota on it)")

    def entries(self, prune: bool = True) -> dict[int, QuotaRow]:
        if prune:
            self.prune(live_processes())
        out = {}
        for key in self.quotas.keys():
            (pid,) = _KEY.unpack(key)
            v = self.get(pid)
            if v is None:
                continue
            heap, files, comm = _live_values(pid) if self.live else (None, None, None)
            out[pid] = QuotaRow(pid=pid, start_ns=v["start_ns"], comm=comm, heap=heap,
                                heap_quota=v["heap_quota"], files=files,
                                files_quota=v["files_quota"], state=_state(v["killed"]))
        return dict(sorted(out.items()))

    def counters(self) -> dict[str, int]:
        out = {}
        for name, slot in schema.QUOTA_COUNTS.items():
            raw = self.counts.lookup(_KEY.pack(slot))
            out[name] = struct.unpack("=Q", raw)[0] if raw else 0
        return out

    def reset(self) -> None:
        for key in self.quotas.keys():
            self.quotas.delete(key)

    def close(self) -> None:
        self.quotas.close()
        self.counts.close()


# ---------------------------------------------------------------- a private instance

class CoreQuotas(Quotas):
    """The programs attached by this object (quota run, the bench); kill records from
    its own kill ring."""

    name = "ebpf"
    persistent = False
    files_limit = FD_LIMIT - 1

    def __init__(self, exclusive: bool = False, load: bool = True):
        super().__init__(exclusive)
        preflight()
        self._loaded = _Loaded()
        self.hooks = self._loaded.hooks
        self.load_note = (f"loaded {OBJ.name} ({self.hooks} hooks; "
                          + "; ".join(self._loaded.notes or ["CO-RE"]) + ")")
        try:
            self._map = _QuotaMap(os.dup(self._loaded.map_fd("tk_quotas")),
                                  os.dup(self._loaded.map_fd("tk_quota_counts")), live=True)
            self._sink: list[bytes] = []
            self._ring = libbpf.RingBuffer(self._loaded.map_fd("tk_kills"), self._sink)
        except BaseException:
            self._loaded.close()
            raise

    def coverage(self) -> dict[str, str]:
        return coverage(self.hooks)

    def set(self, pid, heap=None, files=None):
        self._map.set(pid, heap, files)

    def clear(self, pid):
        self._map.clear(pid)

    def entries(self):
        return self._map.entries()

    def counts(self):
        return self._map.counters()

    def kills(self, timeout_ms=0):
        self._ring.poll(timeout_ms)
        self._ring.consume()
        raw, self._sink[:] = list(self._sink), []
        return [schema.unpack(b) for b in raw if len(b) >= schema.RECORD_SIZE]

    def reset(self):
        self._map.reset()

    def close(self):
        self._ring.free()
        self._map.close()
        self._loaded.close()            # every quota goes with the map
