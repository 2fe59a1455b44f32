"""Where pinned eBPF quotas live in bpffs, and how they are checked and opened: the layout
shared by `toolkit quota` (core_pins.py loads and pins) and `toolkit watch --backend
ebpf` (PinnedKills reads the kill ring), with no dependency on either engine.

Pinned eBPF quotas: ebpf/core/quota.bpf.o's links and maps pinned in bpffs, so that
the quotas outlive `toolkit quota set --backend ebpf` (what a loaded module does).

Layout, one root-only directory (0700) of ours:

    /sys/fs/bpf/toolkit/quota/
        link_<program>    one per attached program of the hook set (a bpf_link: the
                          program stays attached while the pin exists)
        tk_quotas         the quotas (hash map: tgid -> struct tk_quota_value)
        tk_kills          the kill ring (`toolkit watch --backend ebpf` reads it)
        tk_quota_counts   TK_QUOTA_COUNTS
        tk_quota_marks    the layout marker (TK_QUOTA_MARKS: magic, layout version,
                          value size, hook set, whether we mounted bpffs)

`set` pins into a fresh `quota-new-<pid>` beside it (bpffs refuses names with a dot) and renames that into place as the
last step, so a set that fails or is interrupted unpins what it pinned (each step
undone in reverse) and a set killed outright leaves only a `quota-new-<pid>` whose pid is
dead, which the next set or reset removes. Opening checks the marker and the maps'
shapes: a layout that is not this toolkit's is refused, never written.
"""
from __future__ import annotations

import ctypes as ct
import ctypes.util
import os
import time
from pathlib import Path

from .. import schema
from ..errors import QuotaError
from . import libbpf

BPFFS = Path("/sys/fs/bpf")
PIN_PARENT = BPFFS / "toolkit"
PIN_DIR = PIN_PARENT / "quota"
MAPS = ("tk_quotas", "tk_kills", "tk_quota_counts", "tk_quota_marks")
HOOK_SETS = {"kprobe": 1, "tracepoint": 2}          # TK_QUOTA_MARKS' hooks slot
HOOK_SET_NAMES = {v: k for k, v in HOOK_SETS.items()}
BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_RINGBUF = 1, 2, 27
RESET_HINT = "`toolkit quota reset --backend ebpf` removes them (and every quota they hold)"
MARKS = schema.QUOTA_MARKS
BPF_FS_TYPE = "bpf"
PRELOADED = ("maps.debug", "progs.debug")   # bpf_preload's, in every bpffs mount
NEW_PREFIX = "quota-new-"     # a set's pins before they are renamed into place


def bpffs_mounted() -> bool:
    """Is bpffs mounted at /sys/fs/bpf?"""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    return any(p[1] == str(BPFFS) and p[2] == BPF_FS_TYPE
               for p in (ln.split() for ln in lines) if len(p) > 2)


def bpffs_empty() -> bool:
    """Nothing pinned in bpffs but the kernel's own preloaded iterators."""
    return not [n for n in os.listdir(BPFFS) if n not in PRELOADED]


def _libc():
    return ct.CDLL(ctypes.util.find_library("c"), use_errno=True)


def mount_bpffs() -> None:
    if _libc().mount(b"bpf", str(BPFFS).encode(), b"bpf", 0, b"mode=0700"):
        err = ct.get_errno()
        raise QuotaError(f"cannot mount bpffs at {BPFFS}: {os.strerror(err)}")


def umount_bpffs() -> None:
    _libc().umount(str(BPFFS).encode())


def _mkdir(path: Path) -> bool:
    """Make a root-only directory; False if it was there."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        return False
    os.chmod(path, 0o700)
    return True


def remove_pins(path: Path) -> list[str]:
    """Unpin everything under `path` (links first: they detach), then the directory."""
    if not path.is_dir():
        return []
    names = sorted(os.listdir(path), key=lambda n: (not n.startswith("link_"), n))
    for n in names:
        (path / n).unlink()
    path.rmdir()
    return names


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def remove_stale() -> None:
    """The `quota-new-<pid>` of a set that was killed before it finished."""
    if not PIN_PARENT.is_dir():
        return
    for n in os.listdir(PIN_PARENT):
        pid = n[len(NEW_PREFIX):]
        if n.startswith(NEW_PREFIX) and pid.isdigit() and not _pid_alive(int(pid)):
            remove_pins(PIN_PARENT / n)


# ---------------------------------------------------------------- open and check

def _pinned_map(name: str, mtype: int, key: int, value: int) -> int:
    path = PIN_DIR / name
    try:
        fd = libbpf.get_pinned(str(path))
    except libbpf.LibbpfError as e:
        raise QuotaError(f"the pins under {PIN_DIR} are not this toolkit's layout "
                         f"({name}: {str(e).splitlines()[0]})", hint=RESET_HINT) from None
    info = libbpf.map_info(fd)
    want = {"type": mtype, "key_size": key, "value_size": value}
    got = {k: info[k] for k in want}
    if got != want:
        os.close(fd)
        raise QuotaError(f"the map pinned at {path} is not this toolkit's layout "
                         f"(type, key and value size {tuple(got.values())}, this toolkit's "
                         f"{tuple(want.values())})", hint=RESET_HINT)
    return fd


def read_marks() -> dict[str, int]:
    """The pinned marker, checked: a marker of another layout is refused."""
    fd = _pinned_map("tk_quota_marks", BPF_MAP_TYPE_ARRAY, 4, 8)
    m = libbpf.MapFd(fd, 4, 8, "tk_quota_marks")
    try:
        marks = {n: int.from_bytes(m.lookup(i.to_bytes(4, "little")) or b"\0" * 8, "little")
                 for n, i in MARKS.items()}
    finally:
        m.close()
    if marks["magic"] != schema.QUOTA_MAGIC or marks["layout"] != schema.QUOTA_LAYOUT \
            or marks["value_size"] != schema.QUOTA_VALUE_SIZE:
        raise QuotaError(f"the quotas pinned under {PIN_DIR} are of another layout "
                         f"(layout {marks['layout']}, value size {marks['value_size']}; this "
                         f"toolkit's: layout {schema.QUOTA_LAYOUT}, value size "
                         f"{schema.QUOTA_VALUE_SIZE}): pinned by another toolkit version",
                         hint=RESET_HINT)
    return marks


def is_pinned() -> bool:
    return bpffs_mounted() and PIN_DIR.is_dir()


def pinned_kill_ring() -> int | None:
    """A descriptor of the pinned kill ring, if quotas of our layout are pinned."""
    if not is_pinned():
        return None
    try:
        read_marks()
        return _pinned_map("tk_kills", BPF_MAP_TYPE_RINGBUF, 0, 0)
    except (QuotaError, libbpf.LibbpfError):
        return None


class PinnedKills:
    """The pinned kill ring, read by `toolkit watch --backend ebpf` (either engine) so
    that kills of pinned quotas are `kill` records in its one record stream. Opened at
    the first read() that finds quotas of our layout pinned (looked for at most once a
    second until then); read() never waits."""

    RECHECK_S = 1.0

    def __init__(self):
        self._fd: int | None = None
        self._ring: libbpf.RingBuffer | None = None
        self._sink: list[bytes] = []
        self._next_look = 0.0
        self.short = 0          # byte strings too short to be a record (reader losses)
        self.delivered = 0      # kill records read

    def _open(self) -> None:
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + self.RECHECK_S
        fd = pinned_kill_ring()
        if fd is None:
            return
        try:
            self._ring = libbpf.RingBuffer(fd, self._sink)
        except libbpf.LibbpfError:
            os.close(fd)
            return
        self._fd = fd

    @property
    def opened(self) -> bool:
        return self._ring is not None

    def read(self) -> list:
        if self._ring is None:
            self._open()
            if self._ring is None:
                return []
        self._ring.consume()
        raw, self._sink[:] = list(self._sink), []
        out = [schema.unpack(b) for b in raw if len(b) >= schema.RECORD_SIZE]
        self.short += len(raw) - len(out)
        self.delivered += len(out)
        return out

    def dropped(self) -> int | None:
        """Kill records the pinned programs could not queue (ring full), or None."""
        if not is_pinned():
            return None
        try:
            read_marks()
            fd = _pinned_map("tk_quota_counts", BPF_MAP_TYPE_ARRAY, 4, 8)
        except (QuotaError, libbpf.LibbpfError):
            return None
        m = libbpf.MapFd(fd, 4, 8, "tk_quota_counts")
        try:
            raw = m.lookup(schema.QUOTA_COUNTS["dropped"].to_bytes(4, "little"))
        finally:
            m.close()
        return int.from_bytes(raw, "little") if raw else 0

    def close(self) -> None:
        if self._ring:
            self._ring.free()
            self._ring = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def count_kills(events: dict, kills: PinnedKills | None, base: int) -> dict:
    """A backend's per-type counters with the kill records read from the pinned ring
    since the baseline `base` (kills.delivered then) counted as seen and delivered."""
    if kills is not None and "kill" in events:
        n = kills.delivered - base
        events["kill"].seen += n
        events["kill"].delivered += n
    return events


def kill_ring_stats(kills: PinnedKills | None) -> dict:
    """What a backend's stats say of the pinned kill ring: whether it is read, and the
    kill records its programs dropped (ring full) or that were too short."""
    if kills is None or not kills.opened:
        return {"kill_ring": "none pinned"}
    return {"kill_ring": "pinned quotas' kill ring read", "kill_records_dropped":
            kills.dropped(), "kill_records_short": kills.short}
