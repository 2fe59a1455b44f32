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
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from .. import schema
from ..backends import get_backend
from ..backends.base import ENGINE_BACKENDS, NATIVE_INTERFACE_BACKENDS, PEER_BACKENDS
from ..errors import BackendError, BenchError, WorkloadError
from . import SCHEMA_VERSION, metrics
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
                                      ("transport", transport if engine == "bcc" else None))
                    if v}
            tag = "" if probe in (None, cls.default_probe) else f":{probe}"
            specs.append(BackendSpec(E.label(engine) + tag, name, opts))
    return specs


def make_specs(backends: list[str], probes: list[str] | None, ps_intervals: list[float],
               ring_size: int | None = None, buffer_pages: int | None = None,
               transport: str | None = None, rcvbuf: int | None = None,
               engines: list[str] | None = None, wakeup: str | None = None
               ) -> list[BackendSpec]:
    specs = []
    for b in backends:
        if b == "lkm":
            specs.append(BackendSpec("lkm", "lkm", {"ring_size": ring_size} if ring_size else {}))
        elif b in ENGINE_BACKENDS:
            specs += engine_specs(b, engines or ["bcc"], probes, buffer_pages, transport,
                                  wakeup)
        elif b in NATIVE_INTERFACE_BACKENDS:
            opts = {"rcvbuf": rcvbuf} if rcvbuf and b in ("cnproc", "taskstats") else {}
            specs.append(BackendSpec(b, b, opts))
        elif b in PEER_BACKENDS:
            specs.append(BackendSpec(b, b, {}))
        elif b == "ps":
            for iv in ps_intervals:
                specs.append(BackendSpec(fmt_interval(iv), "ps", {"interval": iv}, iv))
        else:
            raise BenchError(f"unknown backend {b!r}")
    return specs


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
        rate = self.storm.rate if rate is None else rate
        params = dataclasses.replace(self.storm, lifetime_ms=lifetime_ms, rate=rate)
        label = spec.label if spec else NONE
        ledger = self.work / f"ledger-{label}-{lifetime_ms}-{rate:g}-{rnd}.csv"
        confined = False
        b = self._backend(spec) if spec else None
        events: list = []
        stats = None
        cpu = 0.0
        period = None
        wall_s, start_s = self._time_ps() if spec and spec.poll else (0.0, 0.0)
        scoped = b is not None and not spec.poll and self.scope == "children"
        if b is not None:
            b.start()
        # The storm starts held (--wait-start): it prints its pid and forks nothing until
        # told, so a backend can be scoped to its children and its counters zeroed first.
        try:
            proc = subprocess.Popen(params.argv(bins, ledger) + ["--wait-start"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        except OSError as e:
            if b is not None:
                b.stop()
            raise WorkloadError(f"cannot run forkstorm: {e}") from None
        try:
            ready = proc.stdout.readline().split()
            if len(ready) != 2 or ready[0] != "ready":
                proc.kill()
                raise WorkloadError(f"forkstorm did not start: {proc.stderr.read()[-500:]}")
            if scoped:
                b.set_ppid_filter(int(ready[1]))
            if b is not None:
                b.reset_stats()
            if b is not None and self.limit:
                # the storm is already forked: only the collector is confined: the reader
                # (this process, and the ps it runs) and the processes it started (a peer)
                self.limit.confine(b.spawned_pids())
                confined = self.limit.throttled()
            t_start = time.monotonic()
            cpu0 = _cpu_self()
            proc.stdin.write("go\n")
            proc.stdin.flush()     # communicate() closes it
            if b is None:
                out, err = proc.communicate()
            else:
                while proc.poll() is None:
                    got = b.read(0.05)
                    now = time.monotonic_ns()
                    events.extend((now, r) for r in got)
                    if self.read_interval and not spec.poll:
                        time.sleep(self.read_interval)
                self._drain(b, spec, events)
                out, err = proc.communicate()
                cpu = _cpu_self() - cpu0
                st = b.stats()
                stats = st.as_dict()
                cpu += float((st.extra or {}).get("own_cpu_s") or 0.0)   # a peer's processes
                if spec.poll:
                    extra = st.extra or {}
                    cpu += float(extra.get("ps_cpu_s", 0.0))
                    polls = int(extra.get("polls", 0))
                    dur = time.monotonic() - t_start
                    period = max(spec.interval, dur / polls) if polls else spec.interval
                    # a poll's records arrive when its ps is done: receipt - ts is its
                    # wall time (fork, exec, startup, listing, reading)
                    spans = [(rc - r.ts_ns) / 1e9 for rc, r in events]
                    if spans:
                        wall_s = max(wall_s, metrics.median(spans))
        finally:
            if confined is not False:
                self.limit.release()
                after = self.limit.throttled()
                confined = {k: v - confined.get(k, 0) for k, v in after.items()}
            if b is not None:
                if scoped:
                    try:
                        b.set_ppid_filter(None)
                    except BackendError:
                        pass
                b.stop()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            raise WorkloadError(f"forkstorm exited with status {proc.returncode}: "
                                f"{err.strip()[-500:]}")
        summary = parse_summary(out)
        rows = read_ledger(ledger)
        return StormRun(label, lifetime_ms, rnd, summary, rows, events, stats, cpu, period,
                        max(0.0, wall_s - start_s), wall_s, rate,
                        confined if isinstance(confined, dict) else None)

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
        specs = {s.label: s for s in self.specs}
        recon = {}
        for i, r in enumerate(self.runs):
            if r.label != NONE:
                recon[i] = self._reconcile(r, specs[r.label])
        self._recon = recon
        base = {(r.lifetime_ms, r.rate, r.round): r.summary["forks_per_s"]
                for r in self.runs if r.label == NONE}

        def caps_of(label, lifetime=None, rate=None):
            return [metrics.Capture(recon[i], poll=specs[label].poll, stats=r.stats,
                                    cpu_s=r.cpu_s, records=len(r.events), period_s=r.period_s,
                                    scan_s=r.scan_s, wall_s=r.wall_s)
                    for i, r in enumerate(self.runs)
                    if r.label == label and (lifetime is None or r.lifetime_ms == lifetime)
                    and (rate is None or r.rate == rate)]

        def fields(spec):
            return {"provides": spec.provides, "receipt_timed": spec.receipt_timed,
                    "event_types": spec.event_types}

        backends = {}
        for spec in self.specs:
            mine = [r for r in self.runs if r.label == spec.label]
            att = {(r.lifetime_ms, r.rate, r.round): r.summary["forks_per_s"] for r in mine}
            m = metrics.backend_metrics(caps_of(spec.label), metrics.slowdowns(base, att),
                                        [r.summary["forks_per_s"] for r in mine],
                                        **fields(spec))
            backends[spec.label] = {"backend": spec.name, "options": spec.options, **m}
        sweep = []
        for lt in self.lifetimes:
            entry = {"lifetime_ms": lt, "backends": {}}
            for spec in self.specs:
                m = metrics.backend_metrics(caps_of(spec.label, lt), **fields(spec))
                e = {"capture": m["capture"], "dropped": m["dropped"]}
                if spec.poll:
                    pm = m["ps_model"]
                    e["predicted_fork_capture"] = pm["predicted_fork_capture"]
                    e["predicted_low"], e["predicted_high"] = (pm["predicted_low"],
                                                               pm["predicted_high"])
                entry["backends"][spec.label] = e
            sweep.append(entry)
        rate_sweep = []
        for rate in (self.rates if len(self.rates) > 1 else []):
            mine = [r for r in self.runs if r.rate == rate]
            entry = {"rate": rate, "forks_per_s": metrics.median(
                [r.summary["forks_per_s"] for r in mine if r.label == NONE]),
                     "backends": {}}
            for spec in self.specs:
                m = metrics.backend_metrics(caps_of(spec.label, rate=rate), **fields(spec))
                entry["backends"][spec.label] = {
                    k: m[k] for k in ("capture", "missed", "dropped", "dropped_by_type",
                                      "never_seen", "forks_per_s")}
            rate_sweep.append(entry)
        truth = metrics_truth(self.runs)
        none_tput = [r.summary["forks_per_s"] for r in self.runs if r.label == NONE]
        return {
            "schema_version": SCHEMA_VERSION,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(self.parameters),
            "truth": truth,
            "baseline": {"forks_per_s": metrics.median(none_tput), "storms": len(none_tput)},
            "backends": backends,
            "sweep": sweep,
            "rate_sweep": rate_sweep,
            "collector_cpu": self.limit.describe() if self.limit else None,
            "runs": [self._run_entry(i, r) for i, r in enumerate(self.runs)],
            "children": sum(len(r.rows) for r in self.runs),
        }

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
            ledgers.append(led.assign(schema_version=SCHEMA_VERSION, backend=r.label,
                                      lifetime_ms=r.lifetime_ms, round=r.round,
                                      storm_pid=r.summary["pid"]))
        cols = ["schema_version", "backend", "lifetime_ms", "round", "storm_pid",
                *LEDGER_FIELDS, *(f"seen_{t}" for t in TYPES)]
        pd.concat(ledgers, ignore_index=True)[cols].to_csv(d / "ledger.csv", index=False)
        for spec in self.specs:
            frames = [events_frame(r.events).assign(
                          record_version=schema.RECORD_VERSION, lifetime_ms=r.lifetime_ms,
                          round=r.round, storm_pid=r.summary["pid"])
                      for r in self.runs if r.label == spec.label]
            ev = pd.concat(frames, ignore_index=True) if frames else events_frame([])
            ev = ev.reindex(columns=["record_version", "lifetime_ms", "round", "storm_pid",
                                     *EVENT_FIELDS])
            ev.to_csv(d / f"events-{spec.label}.csv", index=False)
        (d / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
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
