"""The options of `toolkit bench forkstorm`, gathered in one dataclass.

The command line gives them (toolkit/cli/bench.py checks each); one part of the bench
(native, or lab inside the VM) turns them into the storm's parameters, the backends'
columns and summary.json's `environment.parameters`.
"""
from __future__ import annotations

import dataclasses
import sys


@dataclasses.dataclass(frozen=True)
class ForkstormOptions:
    names: list[str]                  # --backend, parsed
    engines: list[str]                # --engine, parsed (may hold "auto")
    probes: list[str] | None = None   # --probe, parsed
    wakeup: str | None = None
    ps_interval: str = "0.1,1"        # comma lists: each part parses them (--ps-interval,
    lifetime: str = "0"               # --lifetime, --rate)
    rate: str = "0"
    count: int | None = None          # None: the part's default (native / lab)
    repeat: int | None = None
    collector_cpu: float | None = None
    concurrency: int = 4
    exec_all: bool = False
    exec_every: int = 10
    threads: int = 0
    alloc_mib: int = 2
    ring_size: int | None = None
    buffer_pages: int | None = None
    rcvbuf: int | None = None
    transport: str | None = None
    read_interval: float = 0.0
    scope: str = "system"
    out: str | None = None

    @property
    def every(self) -> int:
        """Every K-th child execs (--exec means 1)."""
        return 1 if self.exec_all else self.exec_every

    def parameters(self, where: str, *, engines: list[str], intervals: list[float],
                   lifetimes: list[int], rates: list[float], count: int,
                   repeat: int) -> dict:
        """summary.json's environment.parameters: every option of the run, and argv."""
        return {"backends": self.names, "engines": engines, "probes": self.probes,
                "wakeup": self.wakeup, "ps_intervals": intervals, "count": count,
                "rate": rates if len(rates) > 1 else rates[0],
                "collector_cpu": self.collector_cpu, "concurrency": self.concurrency,
                "lifetime_ms": lifetimes, "exec_every": self.every,
                "threads": self.threads, "alloc_mib": self.alloc_mib, "repeat": repeat,
                "ring_size": self.ring_size, "buffer_pages": self.buffer_pages,
                "rcvbuf": self.rcvbuf, "transport": self.transport,
                "read_interval": self.read_interval, "scope": self.scope, "part": where,
                "argv": sys.argv[1:]}
