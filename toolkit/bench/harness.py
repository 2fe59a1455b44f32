"""The bench run: interleaved rounds (none, each backend, none, ...), reconciliation,
metrics and the run directory.

One round runs the storm once with nothing attached and once under each backend. A
backend is attached (start) just before its storm and detached (stop) right after, so
a storm with nothing attached really has nothing attached; the eBPF backend keeps its
compiled programs in this process, so only the first start compiles (a warm-up before
the first round). While the storm runs the harness reads records and stamps each batch
with time.monotonic_ns() when read() returns: the receipt time for latency.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from .. import schema
from ..backends import get_backend
from ..backends.base import ENGINE_BACKENDS
from ..errors import BackendError, BenchError, WorkloadError
from . import metrics, results
from .results import SCHEMA_VERSION
from .cpulimit import CpuLimit
from .environment import environment
from .ledger import (EVENT_FIELDS, LEDGER_FIELDS, events_frame, read_ledger,
                     truth_columns)
from .reconcile import TOL_NS, TYPES, reconcile
from .workload import StormParams, build, parse_summary

NONE = "none"
PS_START = ["ps", "--version"]   # ps startup only (ps -p 1 still reads every pid)


@dataclasses.dataclass
class BackendSpec:
    label: str                 # column name: lkm, ebpf, ebpf:tracepoint, ps@0.1s
    name: str                  # registry name
    options: dict
    interval: float | None = None

    @property
    def poll(self) -> bool:
        return self._attr("polling", False)       # Backend.polling: ps

    @property
    def provides(self) -> list[str]:
        from ..backends.base import provided_fields
        return provided_fields(self.name)

    def _attr(self, attr: str, default):
        from ..backends.base import backend_class
        try:
            return getattr(backend_class(self.name, self.options.get("engine")), attr,
                           default)
        except ImportError:
            return default

    @property
    def receipt_timed(self) -> bool:
        return self._attr("event_time", "kernel") == "receipt"

    @property
    def event_types(self) -> list[str] | None:
        t = self._attr("event_types", None)
        return None if t is None else sorted(t)


def fmt_interval(s: float) -> str:
    return f"ps@{s:g}s"


def engine_specs(name: str, engines: list[str], probes: list[str] | None,
                 buffer_pages: int | None, transport: str | None,
                 wakeup: str | None) -> list[BackendSpec]:
    """One column per (engine, probe): ebpf, ebpf:tracepoint (BCC), ebpf-core,
    ebpf-core:tp_btf (CO-RE). A probe another engine has is skipped for this one; the
    engine's default hook is named by the label alone."""
    from ..backends import engines as E
    from ..backends.base import backend_class
    specs = []
    for engine in engines:
        cls = backend_class(name, engine)
        mine = [p for p in probes or [None] if p is None or p in cls.probes]
        if not mine:
            raise BenchError(f"--probe {','.join(probes)}: none is a hook of the {engine} "
                             f"engine ({', '.join(cls.probes)})")
        for probe in mine:
            opts = {k: v for k, v in (("engine", engine), ("probe", probe),
                                      ("buffer_pages", buffer_pages), ("wakeup", wakeup),
                                      ("transport", transport if engine in E.TRANSPORT_ENGINES
                                                     else None))
                    if v}
            tag = "" if probe in (None, cls.default_probe) else f":{probe}"
            specs.append(BackendSpec(E.label(engine) + tag, name, opts))
    return specs


def make_specs(backends: list[str], probes: list[str] | None, ps_intervals: list[float],
               ring_size: int | None = None, buffer_pages: int | None = None,
               transport: str | None = None, rcvbuf: int | None = None,
               engines: list[str] | None = None, wakeup: str | None = None
               ) -> list[BackendSpec]:
    """One column per backend: per engine and probe for a backend with engines, per
    interval for a poller; the bench's own options (--ring-size, --rcvbuf) go to the
    backends that take them."""
    from ..backends.base import REGISTRY, registered_class
    specs = []
    for b in backends:
        if b not in REGISTRY:
            raise BenchError(f"unknown backend {b!r}")
        if b in ENGINE_BACKENDS:
            specs += engine_specs(b, engines or ["bcc"], probes, buffer_pages, transport,
                                  wakeup)
            continue
        cls = registered_class(b)
        if cls.polling:
            specs += [BackendSpec(fmt_interval(iv), b, {"interval": iv}, iv)
                      for iv in ps_intervals]
            continue
        opts = {k: v for k, v in (("ring_size", ring_size), ("rcvbuf", rcvbuf))
                if v and takes_option(cls, k)}
        specs.append(BackendSpec(b, b, opts))
    return specs


def takes_option(cls, option: str) -> bool:
    """Does the backend class's constructor name @option (ring_size: lkm; rcvbuf: the
    netlink backends)? A catch-all **options does not count."""
    import inspect
    p = inspect.signature(cls.__init__).parameters.get(option)
    return p is not None and p.kind is not inspect.Parameter.VAR_KEYWORD


@dataclasses.dataclass
class StormRun:
    label: str
    lifetime_ms: int
    round: int
    summary: dict                    # forkstorm's JSON line
    rows: object                     # the storm's ledger (DataFrame)
    events: list                     # (receipt_ns, Record)
    stats: dict | None = None
    cpu_s: float = 0.0
    period_s: float | None = None
    scan_s: float = 0.0              # ps: listing-to-read lag (wall - startup)
    wall_s: float = 0.0              # ps: wall time of one ps run
    rate: float = 0.0                # forks/s asked of the storm (0: as fast as it can)
    throttled: dict | None = None    # --collector-cpu: the cgroup's cpu.stat deltas


def _log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclasses.dataclass
class _Reading:
    """What the harness read during one attached storm."""
    events: list = dataclasses.field(default_factory=list)   # (receipt_ns, Record)
    stats: dict | None = None
    cpu_s: float = 0.0
    period_s: float | None = None
    wall_s: float = 0.0


class _Attachment:
    """One storm's backend attached, and everything undone after it: start() on entry;
    arm() once the held storm has said its pid (the parent filter, zeroed counters, the
    reader confined); on exit, in this order, the reader released (its throttling
    measured), the filter off, the backend stopped, and the storm killed if it still
    runs. With no backend it only looks after the storm."""

    def __init__(self, b, scoped: bool, limit: CpuLimit | None):
        self.b, self.scoped, self.limit = b, scoped, limit
        self.proc: subprocess.Popen | None = None
        self.confined: dict | bool = False
        self.throttled: dict | None = None    # the cgroup's cpu.stat deltas

    def __enter__(self) -> "_Attachment":
        if self.b is not None:
            self.b.start()
        return self

    def arm(self, storm_pid: int) -> None:
        if self.b is None:
            return
        if self.scoped:
            self.b.set_ppid_filter(storm_pid)
        self.b.reset_stats()
        if self.limit:
            # the storm is already forked: only the collector is confined: the reader
            # (this process, and the ps it runs) and the processes it started (a peer)
            self.limit.confine(self.b.spawned_pids())
            self.confined = self.limit.throttled()

    def __exit__(self, *exc) -> None:
        try:
            if self.confined is not False:
                self.limit.release()
                after = self.limit.throttled()
                self.throttled = {k: v - self.confined.get(k, 0) for k, v in after.items()}
            if self.b is not None:
                if self.scoped:
                    try:
                        self.b.set_ppid_filter(None)
                    except BackendError:
                        pass
                self.b.stop()
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def _spawn_storm(argv: list[str]) -> subprocess.Popen:
    try:
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise WorkloadError(f"cannot run forkstorm: {e}") from None


def _storm_ready(proc: subprocess.Popen) -> int:
    """The held storm's pid, from its "ready PID" line."""
    ready = proc.stdout.readline().split()
    if len(ready) != 2 or ready[0] != "ready":
        proc.kill()
        raise WorkloadError(f"forkstorm did not start: {proc.stderr.read()[-500:]}")
    return int(ready[1])


class Harness:
    def __init__(self, specs: list[BackendSpec], storm: StormParams, lifetimes: list[int],
                 repeat: int, out_dir: Path, parameters: dict, log=_log,
                 read_interval: float = 0.0, scope: str = "system",
                 rates: list[float] | None = None, collector_cpu: float | None = None):
        self.specs, self.storm, self.lifetimes = specs, storm, lifetimes
        self.rates = rates or [storm.rate]     # > 1: a rate sweep (capture-vs-rate.png)
        # the reader's CPU share (% of one CPU) while it reads a storm: a starved collector
        self.limit = CpuLimit(collector_cpu) if collector_cpu else None
        self.read_interval = read_interval   # > 0: a slow reader (drop experiments)
        self.scope = scope   # "system": record everything; "children": the storm's only
        self.repeat, self.out_dir, self.parameters, self.log = repeat, out_dir, parameters, log
        self.backends: dict[str, object] = {}
        self.runs: list[StormRun] = []
        self.work = out_dir / ".work"

    # ---------------------------------------------------------------- backends
    def _backend(self, spec: BackendSpec):
        if spec.poll:   # a fresh poller each round: its first poll is the baseline
            return get_backend(spec.name, **spec.options)
        b = self.backends.get(spec.label)
        if b is None:
            b = self.backends[spec.label] = get_backend(spec.name, **spec.options)
        return b

    def warm_up(self) -> None:
        """Start and stop each kernel backend once: builds and compiles happen here, not
        inside a measured round, and a backend that cannot run fails before any storm."""
        for spec in self.specs:
            if spec.poll:
                continue
            b = self._backend(spec)
            note = getattr(b, "warmup_note", "")
            self.log(f"{spec.label}: attaching once to build/compile"
                     + (f" ({note})" if note else ""))
            t0 = time.monotonic()
            b.start()
            b.stop()
            self.log(f"{spec.label}: {b.describe()} ready in {time.monotonic() - t0:.1f} s")

    # ---------------------------------------------------------------- one storm
    def storm_once(self, spec: BackendSpec | None, lifetime_ms: int, rnd: int,
                   bins, rate: float | None = None) -> StormRun:
        """One storm with `spec`'s backend attached (None: nothing attached): the storm
        starts held (--wait-start), printing its pid and forking nothing until told, so
        that the backend can be scoped to its children and its counters zeroed first."""
        rate = self.storm.rate if rate is None else rate
        params = dataclasses.replace(self.storm, lifetime_ms=lifetime_ms, rate=rate)
        label = spec.label if spec else NONE
        ledger = self.work / f"ledger-{label}-{lifetime_ms}-{rate:g}-{rnd}.csv"
        b = self._backend(spec) if spec else None
        wall_s, start_s = self._time_ps() if spec and spec.poll else (0.0, 0.0)
        got = _Reading(wall_s=wall_s)
        scoped = b is not None and not spec.poll and self.scope == "children"
        with _Attachment(b, scoped, self.limit if b is not None else None) as att:
            att.proc = _spawn_storm(params.argv(bins, ledger) + ["--wait-start"])
            att.arm(_storm_ready(att.proc))
            if b is None:
                att.proc.stdin.write("go\n")
                att.proc.stdin.flush()     # communicate() closes it
                out, err = att.proc.communicate()
            else:
                out, err = self._read_storm(b, spec, att.proc, got)
        if att.proc.returncode != 0:
            raise WorkloadError(f"forkstorm exited with status {att.proc.returncode}: "
                                f"{err.strip()[-500:]}")
        return StormRun(label, lifetime_ms, rnd, parse_summary(out), read_ledger(ledger),
                        got.events, got.stats, got.cpu_s, got.period_s,
                        max(0.0, got.wall_s - start_s), got.wall_s, rate, att.throttled)

    def _read_storm(self, b, spec: BackendSpec, proc, got: "_Reading") -> tuple[str, str]:
        """Let the held storm go and read the backend until it ends, then drain it;
        each batch is stamped with its receipt time. Fills `got`: the records, the
        backend's counters, the collector's CPU and, for a poller, its real period and
        ps's wall time. forkstorm's (stdout, stderr).

        The records of earlier storms are the harness's, not the collector's: they are
        frozen out of the garbage collector for the storm (gc.freeze), or every full
        collection during it would walk them all, a cost that grows with the round
        (measured natively: 6 us of reader CPU per record late in a run against 3.3 in
        a fresh process). The storm's own records are collected as usual."""
        t_start = time.monotonic()
        gc.freeze()
        try:
            cpu0 = _cpu_self()
            proc.stdin.write("go\n")
            proc.stdin.flush()     # communicate() closes it
            while proc.poll() is None:
                batch = b.read(0.05)
                now = time.monotonic_ns()
                got.events.extend((now, r) for r in batch)
                if self.read_interval and not spec.poll:
                    time.sleep(self.read_interval)
            self._drain(b, spec, got.events)
            out, err = proc.communicate()
            got.cpu_s = _cpu_self() - cpu0
        finally:
            gc.unfreeze()
        st = b.stats()
        got.stats = st.as_dict()
        extra = st.extra or {}
        got.cpu_s += float(extra.get("own_cpu_s") or 0.0)   # a peer's processes
        if spec.poll:
            got.cpu_s += float(extra.get("ps_cpu_s", 0.0))
            polls = int(extra.get("polls", 0))
            dur = time.monotonic() - t_start
            got.period_s = max(spec.interval, dur / polls) if polls else spec.interval
            # a poll's records arrive when its ps is done: receipt - ts is its wall time
            # (fork, exec, startup, listing, reading)
            spans = [(rc - r.ts_ns) / 1e9 for rc, r in got.events]
            if spans:
                got.wall_s = max(got.wall_s, metrics.median(spans))
        return out, err

    @staticmethod
    def _time_ps(n: int = 3) -> tuple[float, float]:
        """Median wall times of the ps backend's own ps command and of `ps --version`, which
        starts and exits without reading /proc (before the storm). Their difference is the
        lag between ps listing /proc and reading the last (newest) pids, which a child must
        outlive to be seen; the rest is fork, exec and startup, before the listing."""
        from ..backends.ps import PS_TABLE
        out = []
        for argv in (PS_TABLE, PS_START):
            times = []
            for _ in range(n):
                t0 = time.monotonic()
                subprocess.run(argv, capture_output=True)
                times.append(time.monotonic() - t0)
            out.append(metrics.median(times))
        return out[0], out[1]

    def _drain(self, b, spec: BackendSpec, events: list) -> None:
        """After the storm: ps needs one more poll to notice the last exits; a kernel
        backend is read until it has nothing more for 0.3 s (at most 10 s)."""
        if spec.poll:
            got = b.read(spec.interval + 0.5)
            now = time.monotonic_ns()
            events.extend((now, r) for r in got)
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = b.read(0.3)
            now = time.monotonic_ns()
            if not got:
                return
            events.extend((now, r) for r in got)

    # ---------------------------------------------------------------- the run
    def run(self) -> dict:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(exist_ok=True)
        self.log(f"run directory {self.out_dir}")
        bins = build()
        self.warm_up()
        order = [None] + self.specs
        total = len(self.rates) * len(self.lifetimes) * self.repeat * len(order)
        n = 0
        t_run = time.monotonic()
        if self.limit:
            self.log(f"collector reader confined to {self.limit.describe()}")
        try:
            for rate in self.rates:
                for lt in self.lifetimes:
                    for rnd in range(self.repeat):
                        for spec in order:
                            n += 1
                            r = self.storm_once(spec, lt, rnd, bins, rate)
                            self.runs.append(r)
                            self.log(self._progress(n, total, r))
        finally:
            if self.limit:
                self.limit.remove()
        self.log(f"{n} storms in {time.monotonic() - t_run:.0f} s; reconciling")
        summary = self.summarize()
        self.write(summary)
        return summary

    def _progress(self, n: int, total: int, r: StormRun) -> str:
        s = r.summary
        msg = (f"[{n}/{total}] "
               + (f"rate {r.rate:g}/s, " if len(self.rates) > 1 else "")
               + f"lifetime {r.lifetime_ms} ms, round {r.round + 1}: "
               f"{r.label:>9}  {s['count']} children in {s['elapsed_s']:.2f} s "
               f"({s['forks_per_s']:.0f} forks/s)")
        if r.label != NONE:
            msg += f", {len(r.events)} records"
            if r.stats and r.stats.get("dropped"):
                msg += f", {r.stats['dropped']} dropped"
            if r.throttled:   # cgroup v1 counts ns (throttled_time), v2 us
                t = r.throttled
                secs = t["throttled_usec"] / 1e6 if "throttled_usec" in t else \
                    t.get("throttled_time", 0) / 1e9
                msg += f", reader throttled {t.get('nr_throttled', 0)}x ({secs:.1f} s)"
        return msg

    def _reconcile(self, r: StormRun, spec: BackendSpec):
        # a receipt-timed exit may arrive long after the reap when the reader is slow; a
        # pid is not reused within one storm, so the storm's length bounds the window
        late = int((r.summary["elapsed_s"] + 30) * 1e9) if spec.receipt_timed else 0
        return reconcile(r.rows, r.events, poll=spec.poll, period_s=r.period_s or 1.0,
                         storm_pid=r.summary["pid"], exclude_pids={r.summary["pid"], os.getpid()},
                         receipt_late_ns=late,
                         tol_ns=max(TOL_NS, spec._attr("time_slack_ns", 0)))

    def summarize(self) -> dict:
        """summary.json: every storm reconciled, then each backend's metrics over all its
        storms, per lifetime (the sweep) and per rate (the rate sweep)."""
        specs = {s.label: s for s in self.specs}
        self._recon = {i: self._reconcile(r, specs[r.label])
                       for i, r in enumerate(self.runs) if r.label != NONE}
        none_tput = [r.summary["forks_per_s"] for r in self.runs if r.label == NONE]
        return {
            "kind": "forkstorm",
            "schema_version": SCHEMA_VERSION,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(self.parameters),
            "truth": metrics_truth(self.runs),
            "baseline": {"forks_per_s": metrics.median(none_tput), "storms": len(none_tput)},
            "backends": {spec.label: self._backend_entry(spec) for spec in self.specs},
            "sweep": [self._sweep_entry(lt) for lt in self.lifetimes],
            "rate_sweep": [self._rate_entry(rate)
                           for rate in (self.rates if len(self.rates) > 1 else [])],
            "collector_cpu": self.limit.describe() if self.limit else None,
            "runs": [self._run_entry(i, r) for i, r in enumerate(self.runs)],
            "children": sum(len(r.rows) for r in self.runs),
        }

    def _metrics(self, spec: BackendSpec, lifetime: int | None = None,
                 rate: float | None = None, **overhead) -> dict:
        """metrics.backend_metrics over `spec`'s storms (of one lifetime, one rate)."""
        caps = [metrics.Capture(self._recon[i], poll=spec.poll, stats=r.stats,
                                cpu_s=r.cpu_s, records=len(r.events), period_s=r.period_s,
                                scan_s=r.scan_s, wall_s=r.wall_s)
                for i, r in enumerate(self.runs)
                if r.label == spec.label and (lifetime is None or r.lifetime_ms == lifetime)
                and (rate is None or r.rate == rate)]
        return metrics.backend_metrics(caps, **overhead, provides=spec.provides,
                                       receipt_timed=spec.receipt_timed,
                                       event_types=spec.event_types)

    def _backend_entry(self, spec: BackendSpec) -> dict:
        """summary.json's backends.<label>: every storm of it, with its slowdown against
        each round's own `none` storm."""
        def key(r):
            return (r.lifetime_ms, r.rate, r.round)
        base = {key(r): r.summary["forks_per_s"] for r in self.runs if r.label == NONE}
        mine = [r for r in self.runs if r.label == spec.label]
        att = {key(r): r.summary["forks_per_s"] for r in mine}
        m = self._metrics(spec, slowdowns_pct=metrics.slowdowns(base, att),
                          forks_per_s=[r.summary["forks_per_s"] for r in mine])
        return {"backend": spec.name, "options": spec.options, **m}

    def _sweep_entry(self, lt: int) -> dict:
        """One lifetime of the sweep: capture and drops, and a poller's model."""
        entry = {"lifetime_ms": lt, "backends": {}}
        for spec in self.specs:
            m = self._metrics(spec, lifetime=lt)
            e = {"capture": m["capture"], "dropped": m["dropped"]}
            if spec.poll:
                pm = m["ps_model"]
                e["predicted_fork_capture"] = pm["predicted_fork_capture"]
                e["predicted_low"], e["predicted_high"] = (pm["predicted_low"],
                                                           pm["predicted_high"])
            entry["backends"][spec.label] = e
        return entry

    def _rate_entry(self, rate: float) -> dict:
        """One rate of the rate sweep: the achieved rate, capture, misses and drops."""
        tput = [r.summary["forks_per_s"] for r in self.runs
                if r.rate == rate and r.label == NONE]
        entry = {"rate": rate, "forks_per_s": metrics.median(tput), "backends": {}}
        for spec in self.specs:
            m = self._metrics(spec, rate=rate)
            entry["backends"][spec.label] = {
                k: m[k] for k in ("capture", "missed", "dropped", "dropped_by_type",
                                  "never_seen", "forks_per_s")}
        return entry

    def _run_entry(self, i: int, r: StormRun) -> dict:
        e = {"backend": r.label, "lifetime_ms": r.lifetime_ms, "rate": r.rate,
             "round": r.round,
             "storm_pid": r.summary["pid"], "children": len(r.rows),
             "forks_per_s": r.summary["forks_per_s"], "elapsed_s": r.summary["elapsed_s"],
             "kernel_forks": r.summary["kernel_forks_after"] - r.summary["kernel_forks_before"]}
        if r.label != NONE:
            rc = self._recon[i]
            e.update(records=len(r.events), cpu_s=round(r.cpu_s, 4),
                     captured={t: rc.captured(t) for t in TYPES}, truth=rc.truth,
                     dropped=(r.stats or {}).get("dropped", 0), period_s=r.period_s,
                     scan_s=r.scan_s if r.wall_s else None, throttled=r.throttled,
                     ps_wall_s=r.wall_s if r.wall_s else None)
            # the backend's own scalar counters (a peer's loss reports, its socket's drops)
            e["backend_extra"] = {k: v for k, v in ((r.stats or {}).get("extra") or {}).items()
                                  if isinstance(v, (int, float, str, bool)) and k != "argv"}
        return e

    # ---------------------------------------------------------------- files
    def write(self, summary: dict) -> None:
        """ledger.csv (every storm's ledger with what its backend saw), one events file per
        backend, summary.json and report.md; written through pandas."""
        d = self.out_dir
        ledgers = []
        for i, r in enumerate(self.runs):
            rc = self._recon.get(i)
            led = r.rows.copy()
            seen = rc.seen_columns() if rc else None
            for t in TYPES:
                led[f"seen_{t}"] = (led["idx"].map(dict(zip(rc.ledger["idx"],
                                                             seen[f"seen_{t}"])))
                                    .astype("Int64") if rc else pd.NA)
            ledgers.append(led.assign(backend=r.label, lifetime_ms=r.lifetime_ms,
                                      round=r.round, storm_pid=r.summary["pid"]))
        cols = ["backend", "lifetime_ms", "round", "storm_pid",
                *LEDGER_FIELDS, *(f"seen_{t}" for t in TYPES)]
        results.write_csv(pd.concat(ledgers, ignore_index=True)[cols], d / "ledger.csv",
                          "forkstorm")
        for spec in self.specs:
            frames = [events_frame(r.events).assign(
                          record_version=schema.RECORD_VERSION, lifetime_ms=r.lifetime_ms,
                          round=r.round, storm_pid=r.summary["pid"])
                      for r in self.runs if r.label == spec.label]
            ev = pd.concat(frames, ignore_index=True) if frames else events_frame([])
            ev = ev.reindex(columns=["record_version", "lifetime_ms", "round", "storm_pid",
                                     *EVENT_FIELDS])
            results.write_csv(ev, d / f"events-{spec.label}.csv", "forkstorm")
        results.write_summary(d, "forkstorm", summary)
        from .. import report
        report.write_report(d, summary)
        for f in self.work.glob("*"):
            f.unlink()
        self.work.rmdir()


def metrics_truth(runs: list[StormRun]) -> dict:
    led = truth_columns(pd.concat([r.rows for r in runs], ignore_index=True))
    return {"forks": int(led["forked"].sum()),
            "execs": int((led["forked"] & led["exec_ok"]).sum()),
            "exits": int(led["reaped"].sum()),
            "kernel_forks": sum(r.summary["kernel_forks_after"] - r.summary["kernel_forks_before"]
                                for r in runs),
            "kernel_forks_expected": int((1 + led.loc[led["forked"], "threads"]).sum()),
            "storms": len(runs)}


def default_out_dir(results: Path, out: str | None) -> Path:
    if out and ("/" in out or out in (".", "..")):
        return Path(out).resolve()
    name = out or dt.datetime.now().strftime("forkstorm-%Y%m%d-%H%M%S")
    return results / name


__all__ = ["Harness", "BackendSpec", "make_specs", "BenchError", "BackendError",
           "default_out_dir", "schema"]
