"""--collector-cpu: confine the collector's user-space reader to a share of one CPU.

The reader is the harness process itself (it calls Backend.read); the storm is already
forked when the reader is confined, so the workload runs unconfined. The limit is the
kernel's CFS bandwidth control: cgroup v2 `cpu.max` ("quota period") where the cpu
controller is on the unified hierarchy, else its cgroup v1 twin `cpu.cfs_quota_us` /
`cpu.cfs_period_us` (a hybrid host such as this project's machine, where systemd left the
cpu controller on v1): the same throttling, so the same experiment. Processes the reader
starts while confined (ps) inherit the cgroup: they are the collector too, as are the
processes a peer backend started before (bpftrace, forkstat, a BCC tool's python, a
private auditd: `Backend.spawned_pids`), moved in beside it. A kernel thread (kauditd)
and a daemon the toolkit did not start (the system's auditd) are not moved.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import BenchError

PERIOD_US = 100_000
MIN_QUOTA_US = 1_000      # the kernel refuses a smaller quota


def check_pct(pct: float) -> float:
    if not (0 < pct <= 100):
        raise BenchError(f"--collector-cpu {pct:g}: must be a share of one CPU in percent, "
                         "> 0 and <= 100", "e.g. --collector-cpu 5")
    return float(pct)


def quota_period(pct: float) -> tuple[int, int]:
    """The CFS (quota, period) in microseconds for `pct` % of one CPU."""
    period = PERIOD_US if pct * PERIOD_US / 100 >= MIN_QUOTA_US else 1_000_000
    return max(MIN_QUOTA_US, round(pct * period / 100)), period


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of the cgroup mounts."""
    out = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        pre, _, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            out.append((fields[4], tail[0], tail[2]))
    return out


def _own_cgroup(v2: bool) -> str:
    """This process's cgroup path in the v2 hierarchy, or in the v1 cpu hierarchy."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, ctrls, path = line.split(":", 2)
        if (v2 and hid == "0") or (not v2 and "cpu" in ctrls.split(",")):
            return path
    return "/"


class CpuLimit:
    def __init__(self, pct: float):
        self.pct = check_pct(pct)
        self.quota, self.period = quota_period(self.pct)
        self.dir: Path | None = None
        self.root: Path | None = None
        self.v2 = False
        self.home: Path | None = None

    def describe(self) -> str:
        kind = "cgroup v2 cpu.max" if self.v2 else "cgroup v1 cpu.cfs_quota_us"
        return (f"{self.pct:g}% of one CPU ({kind}: {self.quota} us per {self.period} us)"
                if self.root else f"{self.pct:g}% of one CPU")

    def _setup(self) -> None:
        if os.geteuid() != 0:
            raise BenchError("--collector-cpu needs root (it creates a cgroup)", "run as root")
        mounts = _mounts()
        for mnt, fstype, _ in mounts:
            ctrl = Path(mnt, "cgroup.controllers")
            if fstype == "cgroup2" and ctrl.exists() and "cpu" in ctrl.read_text().split():
                self.v2, self.root = True, Path(mnt)
                break
        else:
            for mnt, fstype, opts in mounts:
                if fstype == "cgroup" and "cpu" in opts.split(",") and \
                        Path(mnt, "cpu.cfs_quota_us").exists():
                    self.root = Path(mnt)
                    break
        if self.root is None:
            raise BenchError("--collector-cpu: no cgroup with CPU bandwidth control here "
                             "(neither cgroup v2 cpu.max nor v1 cpu.cfs_quota_us)",
                             "a kernel with CONFIG_CFS_BANDWIDTH and a cpu controller mounted")
        d = self.root / f"toolkit-collector-{os.getpid()}"
        try:
            if self.v2:
                sub = self.root / "cgroup.subtree_control"
                if "cpu" not in sub.read_text().split():
                    sub.write_text("+cpu")
            d.mkdir(exist_ok=True)
            if self.v2:
                (d / "cpu.max").write_text(f"{self.quota} {self.period}")
            else:
                (d / "cpu.cfs_period_us").write_text(str(self.period))
                (d / "cpu.cfs_quota_us").write_text(str(self.quota))
        except OSError as e:
            raise BenchError(f"--collector-cpu: cannot set up the cgroup {d}: {e}") from None
        self.dir = d
        self.home = self.root / _own_cgroup(self.v2).lstrip("/")

    def confine(self, spawned: list[int] | tuple = ()) -> None:
        """Move the reader (this process) into the limited cgroup, with the processes the
        collector started itself (`spawned`: a peer tool such as bpftrace or a private
        auditd, which sat in this process's cgroup since it was started here). A process
        the collector did not start (a system auditd, kauditd) is left where it is: moving
        it would change the user's system, and a crash would leave it here."""
        if self.dir is None:
            self._setup()
        self.home = self.root / _own_cgroup(self.v2).lstrip("/")
        self.spawned = []
        for pid in (os.getpid(), *spawned):
            if self._move(self.dir, pid):
                self.spawned.append(pid)

    def release(self) -> None:
        if self.dir is not None and self.home is not None:
            for pid in getattr(self, "spawned", [os.getpid()]):
                self._move(self.home, pid)
            self.spawned = []

    @staticmethod
    def _move(cgroup: Path, pid: int) -> bool:
        """Write pid into cgroup; False if the process has gone (ESRCH) meanwhile."""
        try:
            (cgroup / "cgroup.procs").write_text(str(pid))
        except ProcessLookupError:
            if pid == os.getpid():
                raise
            return False
        return True

    def throttled(self) -> dict:
        """cpu.stat of the cgroup (nr_throttled, throttled time): proof the limit bit."""
        if self.dir is None:
            return {}
        out = {}
        for line in (self.dir / "cpu.stat").read_text().splitlines():
            k, _, v = line.partition(" ")
            if v.strip().isdigit():
                out[k] = int(v)
        return out

    def remove(self) -> None:
        if self.dir is not None:
            try:
                self.release()
                self.dir.rmdir()
            except OSError:
                pass
            self.dir = None
