"""Pinned eBPF quotas (the CO-RE engine's quota.bpf.o): `toolkit quota set --backend
ebpf` loads the programs once and pins their links and maps (layout and checks:
quota_pins.py), so the quotas outlive the command, as a loaded module's do; `list`,
`clear` and `reset` open the pins from any later command.
"""
from __future__ import annotations

import os
from pathlib import Path

from .. import schema
from ..errors import QuotaError
from . import libbpf
from .core_quota import _Loaded, _QuotaMap, kernel_has_kprobes, preflight
from .quota_pins import (BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, HOOK_SET_NAMES,
                         HOOK_SETS, MAPS, MARKS, NEW_PREFIX, PIN_DIR, PIN_PARENT, _mkdir,
                         _pinned_map, bpffs_empty, bpffs_mounted, is_pinned, mount_bpffs,
                         read_marks, remove_pins, remove_stale, umount_bpffs)
from .quotas import Quotas, coverage


def _pin_all(loaded: _Loaded, tmp: Path, mounted: bool) -> None:
    """Write the marker, pin the maps and the links into `tmp`."""
    marks = loaded.obj.map("tk_quota_marks")
    for name, value in (("magic", schema.QUOTA_MAGIC), ("layout", schema.QUOTA_LAYOUT),
                        ("value_size", schema.QUOTA_VALUE_SIZE),
                        ("hooks", HOOK_SETS[loaded.hooks]), ("mounted", int(mounted))):
        marks.update_u64(MARKS[name], value)
    for name in MAPS:
        libbpf.pin(loaded.map_fd(name), str(tmp / name))
    for link in loaded.links:
        libbpf.pin(link.fd, str(tmp / f"link_{link.what}"))


def _pinned_set(tmp: Path, mounted: bool, hook_sets=("kprobe", "tracepoint"),
                notes=()) -> _Loaded:
    """One hook set loaded, attached and pinned into `tmp`; closed again on failure."""
    loaded = _Loaded(hook_sets, notes)
    try:
        _pin_all(loaded, tmp, mounted)
    except BaseException:
        loaded.close()
        for name in os.listdir(tmp):
            (tmp / name).unlink()
        raise
    return loaded


def _load_pinned(tmp: Path, mounted: bool) -> _Loaded:
    """The kprobe set where it loads and its links can be pinned, else the tracepoint
    set, pinned into `tmp`."""
    try:
        return _pinned_set(tmp, mounted)
    except libbpf.LibbpfError as e:
        if not kernel_has_kprobes():
            raise
        why = f"kprobe hooks: not pinnable here ({str(e).splitlines()[0]})"
    return _pinned_set(tmp, mounted, ("tracepoint",), [why])


def load_and_pin() -> str:
    """Load quota.bpf.o, attach one hook set, pin it all under PIN_DIR; what was done,
    in words. On any failure everything pinned so far is unpinned."""
    preflight()
    mounted = False
    if not bpffs_mounted():
        mount_bpffs()
        mounted = True
    made_parent = _mkdir(PIN_PARENT)
    remove_stale()
    tmp = PIN_PARENT / f"{NEW_PREFIX}{os.getpid()}"
    loaded = None
    try:
        _mkdir(tmp)
        loaded = _load_pinned(tmp, mounted)
        try:
            os.rename(tmp, PIN_DIR)
        except OSError:
            if not PIN_DIR.is_dir():
                raise
            remove_pins(tmp)        # another set pinned first: use its pins
            return "quota programs already pinned (by a concurrent set)"
    except BaseException:
        remove_pins(tmp)
        if made_parent and not os.listdir(PIN_PARENT):
            PIN_PARENT.rmdir()
        if mounted and bpffs_empty():
            umount_bpffs()
        raise
    finally:
        if loaded:
            loaded.close()          # the pins hold the links and the maps
    return (("mounted bpffs at /sys/fs/bpf; " if mounted else "")
            + f"loaded quota.bpf.o ({loaded.hooks} hooks"
            + "".join(f"; {n}" for n in loaded.notes) + f") and pinned it under {PIN_DIR}")


def unpin_everything() -> list[str]:
    """`reset`: unpin our directory, whatever its layout; unmount bpffs if we mounted
    it and nothing else is pinned there. The names removed."""
    if not bpffs_mounted():
        return []
    mounted = 0
    try:
        mounted = read_marks().get("mounted", 0) if PIN_DIR.is_dir() else 0
    except (QuotaError, libbpf.LibbpfError):
        pass
    remove_stale()
    names = remove_pins(PIN_DIR)
    if PIN_PARENT.is_dir() and not os.listdir(PIN_PARENT):
        PIN_PARENT.rmdir()
    if mounted and bpffs_empty():
        umount_bpffs()
        names.append("(bpffs unmounted: the toolkit had mounted it)")
    return names


# ---------------------------------------------------------------- the Quotas

class PinnedQuotas(Quotas):
    """Quotas that outlive the command: the pinned map, opened by every command;
    `load=True` (set) loads and pins the programs if they are not pinned yet."""

    name = "ebpf"
    persistent = True
    files_limit = schema.FD_WORDS * 64 - 1

    def __init__(self, exclusive: bool = False, load: bool = False):
        super().__init__(exclusive)
        self._map: _QuotaMap | None = None
        self._error: QuotaError | None = None       # pins of another layout
        self.hooks = None
        if os.geteuid() != 0:
            raise QuotaError("pinned eBPF quotas are root-only", hint="run as root")
        if not is_pinned():
            if not load:
                return
            self.load_note = load_and_pin()
        try:
            self._open()
        except QuotaError as e:
            if load:
                raise
            self._error = e         # said by every command but reset, which removes them

    def _open(self) -> None:
        marks = read_marks()
        self.hooks = HOOK_SET_NAMES.get(marks["hooks"], "unknown")
        qfd = _pinned_map("tk_quotas", BPF_MAP_TYPE_HASH, 4, schema.QUOTA_VALUE_SIZE)
        try:
            cfd = _pinned_map("tk_quota_counts", BPF_MAP_TYPE_ARRAY, 4, 8)
        except BaseException:
            os.close(qfd)
            raise
        self._map = _QuotaMap(qfd, cfd, live=True)

    def coverage(self) -> dict[str, str]:
        return coverage(self.hooks) if self.hooks in HOOK_SETS else {}

    def _need(self, what: str) -> _QuotaMap:
        if self._error:
            raise self._error
        if self._map is None:
            raise QuotaError(f"{what}: no eBPF quotas are pinned (nothing under {PIN_DIR})",
                             hint="`toolkit quota set --backend ebpf ... PID` pins them")
        return self._map

    def set(self, pid, heap=None, files=None):
        self._need(f"set {pid}").set(pid, heap, files)

    def clear(self, pid):
        self._need(f"clear {pid}").clear(pid)

    def entries(self):
        if self._error:
            raise self._error
        return self._map.entries() if self._map else {}

    def counts(self):
        if self._error:
            raise self._error
        return self._map.counters() if self._map else {}

    def kills(self, timeout_ms=0):
        return []           # the pinned kill ring is `toolkit watch --backend ebpf`'s

    def reset(self):
        if self._map:
            self._map.close()
            self._map = None
        self.removed = unpin_everything()

    def close(self):
        if self._map:
            self._map.close()
            self._map = None



