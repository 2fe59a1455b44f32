"""Build the fork-storm workload (bench/*.c) on first use and run it.

The checkout is read-only in the lab, so binaries go to a writable build directory:
$TOOLKIT_BUILD_DIR, else /var/tmp/toolkit/bench, in a subdirectory named by a hash of
the sources and flags (a changed source rebuilds; concurrent builds do not collide).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import WorkloadError
from ..paths import BENCH_DIR

CFLAGS = ["-O2", "-g", "-Wall", "-Wextra", "-pthread"]
SOURCES = {"forkstorm": ["forkstorm.c"], "tk-child": ["child.c"], "memapp": ["memapp.c"]}
HEADERS = ["storm_child.h"]


def build_dir() -> Path:
    return Path(os.environ.get("TOOLKIT_BUILD_DIR") or "/var/tmp/toolkit/bench")


def _digest() -> str:
    h = hashlib.sha256(" ".join(CFLAGS).encode())
    for name in sorted({s for v in SOURCES.values() for s in v} | set(HEADERS)):
        h.update(name.encode() + b"\0" + (BENCH_DIR / name).read_bytes())
    return h.hexdigest()[:16]


@dataclasses.dataclass
class Binaries:
    forkstorm: Path
    child: Path
    memapp: Path        # bench/memapp.c, the allocation script of `bench memgrowth`


def build(quiet: bool = True) -> Binaries:
    """Compile forkstorm and tk-child if needed; warnings are errors (-Werror is not
    passed so a newer gcc cannot break a run, but any warning is reported)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise WorkloadError("no C compiler (gcc) to build the bench workload",
                            "apt-get install build-essential (or run bin/setup)")
    try:
        out = build_dir() / _digest()
    except OSError as e:
        raise WorkloadError(f"cannot read the bench sources in {BENCH_DIR}: {e}") from None
    bins = Binaries(out / "forkstorm", out / "tk-child", out / "memapp")
    if all(p.exists() for p in dataclasses.astuple(bins)):
        return bins
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WorkloadError(f"cannot create the build directory {out}: {e}",
                            "set TOOLKIT_BUILD_DIR to a writable directory") from None
    for name, srcs in SOURCES.items():
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out)
        os.close(fd)
        cmd = [cc, *CFLAGS, "-I", str(BENCH_DIR), "-o", tmp, *(str(BENCH_DIR / s) for s in srcs)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            os.unlink(tmp)
            raise WorkloadError(f"building {name} failed:\n{p.stderr.strip()}")
        if p.stderr.strip() and not quiet:
            print(f"bench: warnings building {name}:\n{p.stderr.strip()}")
        os.replace(tmp, out / name)
    return bins


@dataclasses.dataclass
class StormParams:
    count: int = 300
    rate: float = 0.0             # forks/s, 0 = as fast as possible
    concurrency: int = 4
    lifetime_ms: int = 0
    exec_every: int = 0           # every K-th child execs tk-child (1 = all, 0 = none)
    threads: int = 0
    alloc_mib: int = 0

    def argv(self, bins: Binaries, ledger: Path) -> list[str]:
        a = [str(bins.forkstorm), "--count", str(self.count), "--rate", str(self.rate),
             "--concurrency", str(self.concurrency), "--lifetime", str(self.lifetime_ms),
             "--threads", str(self.threads), "--alloc-mib", str(self.alloc_mib),
             "--ledger", str(ledger)]
        if self.exec_every:
            a += ["--exec-every", str(self.exec_every), "--helper", str(bins.child)]
        return a


def parse_summary(stdout: str) -> dict:
    """The one JSON line forkstorm prints at the end."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise WorkloadError(f"forkstorm printed no summary line: {stdout[-300:]!r}")
