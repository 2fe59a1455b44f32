"""`toolkit bench quota`: quota enforcement by the module, by eBPF and by the kernel's own
limits, on bench/quotaload.c.

Per mechanism and scenario (heap grown by brk, by mmap, descriptors of five kinds), each
trial starts quotaload stopped at "ready", puts it under the limit, lets it grow until it
is stopped, and records:
  overshoot  how far past the limit the process got, in the limit's own measure: data_vm
             bytes (lkm, ebpf, RLIMIT_DATA), charged bytes (cgroup memory.peak - memory.max),
             open descriptors (lkm, ebpf, RLIMIT_NOFILE); <= 0 when the call was refused
  outcome    killed (SIGKILL) or refused (the call failed: ENOMEM, EMFILE)
  death_ms   from the start of the crossing call (quotaload's clock, in a shared file) to
             waitpid() returning in the harness; none when refused
and, for lkm and ebpf, the cost added to brk, mmap, munmap, openat and close: `quotaload
cost` runs tracked (huge quotas, so nothing is killed) and untracked with the enforcer
loaded, interleaved in a random order per round; added ns per call = median of the
paired (on - off) differences, with a bootstrap 95% CI.
"""
from __future__ import annotations

import dataclasses
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from .. import schema
from ..backends.base import quota_sides, quotas_class_for
from ..errors import BenchError, WorkloadError
from ..paths import BENCH_DIR, RESULTS_DIR
from . import results
from .metrics import bootstrap_median_ci, median

# the kernel sides: lkm, ebpf (BCC), ebpf-core (CO-RE) -> (backend, engine)
QUOTA_SIDES = quota_sides()
MECHANISMS = (*QUOTA_SIDES, "rlimit", "cgroup")
SCENARIOS = ("heap-brk", "heap-mmap", "files")
COST_OPS = ("brk", "mmap", "munmap", "openat", "close")
STEP_KIB = 1024
HEAP_MARGIN = 16 * STEP_KIB * 1024 + STEP_KIB * 512   # quota = start + 16.5 steps
FILES_MARGIN = 20
CGROUP_ROOT = Path("/sys/fs/cgroup")
_STATE = struct.Struct("=6Q")


def build_workload() -> Path:
    """Compile bench/quotaload.c (once per content) into a writable build directory."""
    import hashlib
    src = BENCH_DIR / "quotaload.c"
    out = Path(os.environ.get("TOOLKIT_BUILD_DIR") or "/var/tmp/toolkit/bench")
    digest = hashlib.sha256(src.read_bytes() + (BENCH_DIR / "quota_self.h").read_bytes())
    exe = out / f"quotaload-{digest.hexdigest()[:12]}"
    if exe.exists():
        return exe
    out.mkdir(parents=True, exist_ok=True)
    cp = subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-o", f"{exe}.tmp", str(src)],
                        capture_output=True, text=True)
    if cp.returncode:
        raise WorkloadError(f"cannot build {src.name}: {cp.stderr.strip()}")
    os.replace(f"{exe}.tmp", exe)
    return exe


def cgroup_available() -> str | None:
    """Why cgroup v2 memory.max cannot be used here (None: it can)."""
    ctl = CGROUP_ROOT / "cgroup.controllers"
    if not ctl.exists():
        return "no cgroup v2 hierarchy at /sys/fs/cgroup"
    if "memory" not in ctl.read_text().split():
        return "the memory controller is not enabled"
    if not os.access(CGROUP_ROOT, os.W_OK):
        return "/sys/fs/cgroup is not writable"
    return None


@dataclasses.dataclass
class Trial:
    mechanism: str
    scenario: str
    trial: int
    limit: int
    outcome: str            # killed, refused, survived, other
    overshoot: int
    death_ms: float | None
    kill_value: int | None  # the kill record's value (lkm, ebpf)


class Enforcers:
    """The mechanisms: how each puts a waiting quotaload under a limit. The kernel
    sides are the backends' Quotas (exclusive: the bench owns their quotas and kill
    records while it runs); rlimit and cgroup are the kernel's own limits."""

    def __init__(self, mechanisms):
        self.mechanisms = mechanisms
        self.quotas = {}                    # mechanism -> quotas.Quotas
        self.cgroup: Path | None = None
        try:
            for mech in mechanisms:
                if mech in QUOTA_SIDES:
                    backend, engine = QUOTA_SIDES[mech]
                    self.quotas[mech] = quotas_class_for(backend, engine)(exclusive=True,
                                                                          load=True)
            if "cgroup" in mechanisms:
                self._make_cgroup()
        except BaseException:
            self.close()
            raise

    def _make_cgroup(self):
        self.cgroup = CGROUP_ROOT / f"toolkit-bench-quota-{os.getpid()}"
        with open(CGROUP_ROOT / "cgroup.subtree_control", "w") as f:
            f.write("+memory")
        self.cgroup.mkdir()
        (self.cgroup / "cgroup.subtree_control").write_text("+memory")

    def close(self):
        for side in self.quotas.values():
            side.close()
        if self.cgroup and self.cgroup.exists():
            self.cgroup.rmdir()

    def kill_values(self, mech: str) -> dict[int, int]:
        return {r.tgid: r.quota_value for r in self.quotas[mech].kills(100)}


def _spawn(argv, preexec=None):
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         preexec_fn=preexec)
    line = p.stdout.readline().split()
    if not line or line[0] != "ready":
        p.kill()
        p.wait()
        raise WorkloadError(f"quotaload did not start: {line}")
    return p, int(line[1]), int(line[2])


def run_trial(enf: Enforcers, exe: Path, mech: str, scenario: str, i: int,
              state_file: Path) -> Trial:
    heap = scenario.startswith("heap")
    argv = ([str(exe), "heap", scenario.split("-")[1], str(STEP_KIB), str(state_file)]
            if heap else [str(exe), "files", str(state_file)])
    preexec = None
    if mech == "rlimit":
        # the limit must be known before the start: measure an untracked start first
        p, vm, fds = _spawn(argv)
        p.kill()
        p.wait()
        lim = vm + HEAP_MARGIN if heap else fds + FILES_MARGIN
        res = resource.RLIMIT_DATA if heap else resource.RLIMIT_NOFILE

        def preexec():
            resource.setrlimit(res, (lim, lim))
    p, vm, fds = _spawn(argv, preexec)
    limit = vm + HEAP_MARGIN if heap else fds + FILES_MARGIN
    if mech in enf.quotas:
        enf.quotas[mech].set(p.pid, limit if heap else None, None if heap else limit)
    elif mech == "cgroup":
        if not heap:
            raise BenchError("cgroup: no descriptor limit")
        cg = enf.cgroup / f"trial-{scenario}-{i}"     # fresh: memory.peak is per cgroup
        cg.mkdir()
        (cg / "cgroup.procs").write_text(str(p.pid))
        current = int((cg / "memory.current").read_text())
        limit = (current + HEAP_MARGIN) // 4096 * 4096
        (cg / "memory.max").write_text(str(limit))
    p.stdin.write("go\n")
    p.stdin.flush()
    _, status = os.waitpid(p.pid, 0)
    t_dead = time.monotonic_ns()
    p.returncode = (-os.WTERMSIG(status) if os.WIFSIGNALED(status)
                    else os.WEXITSTATUS(status))
    p.stdout.close()
    p.stdin.close()
    call_ns, before, _, step, err, _ = _STATE.unpack(state_file.read_bytes()[:_STATE.size])
    kill_value = None
    if p.returncode == -signal.SIGKILL:
        outcome = "killed"
        reached = before + step
        death_ms = (t_dead - call_ns) / 1e6
    elif p.returncode == 3 and err:
        outcome, reached, death_ms = "refused", before, None
    else:
        outcome, reached, death_ms = ("survived" if p.returncode == 0 else "other",
                                      before, None)
    if mech in enf.quotas and outcome == "killed":
        # the kill record says where the crossing call took it; the workload's own
        # state says how far it got (a later call, had the signal come late): the larger
        kill_value = enf.kill_values(mech).get(p.pid)
        if kill_value is not None:
            reached = max(reached, kill_value)
    if mech == "cgroup":
        peak = cg / "memory.peak"
        reached = int(peak.read_text()) if peak.exists() else limit
        cg.rmdir()
    return Trial(mech, scenario, i, limit, outcome, reached - limit, death_ms, kill_value)


def run_cost(enf: Enforcers, exe: Path, mech: str, rounds: int, n: int, rng) -> list[dict]:
    """Interleaved tracked / untracked runs of `quotaload cost n`: one row per run."""
    rows = []
    for r in range(rounds):
        for state in rng.sample(["off", "on"], 2):
            p, _, _ = _spawn([str(exe), "cost", str(n)])
            if state == "on":       # quotas nothing reaches (within what the side counts)
                side = enf.quotas[mech]
                side.set(p.pid, 1 << 50, min(1000000, side.files_limit or 1000000))
            out, _ = p.communicate("go\n", timeout=600)
            parts = out.split()
            vals = dict(zip(parts[1::2], map(float, parts[2::2])))
            rows.append({"mechanism": mech, "round": r, "state": state,
                         **{op: vals[op] for op in COST_OPS}})
    return rows


def summarize(trials: list[Trial], cost_rows: list[dict]) -> dict:
    out: dict = {"kind": "quota", "schema_version": results.SCHEMA_VERSION,
                 "record_version": schema.RECORD_VERSION, "enforcement": [], "cost": []}
    keys = sorted({(t.mechanism, t.scenario) for t in trials},
                  key=lambda k: (MECHANISMS.index(k[0]), SCENARIOS.index(k[1])))
    for mech, scen in keys:
        ts = [t for t in trials if (t.mechanism, t.scenario) == (mech, scen)]
        deaths = [t.death_ms for t in ts if t.death_ms is not None]
        outcomes = sorted({t.outcome for t in ts})
        out["enforcement"].append({
            "mechanism": mech, "scenario": scen, "trials": len(ts),
            "outcome": ",".join(outcomes),
            "overshoot_median": median([t.overshoot for t in ts]),
            "overshoot_max": max(t.overshoot for t in ts),
            "unit": "descriptors" if scen == "files" else "bytes",
            "death_ms_median": median(deaths),
            "death_ms_ci": list(bootstrap_median_ci(deaths)) if deaths else None})
    for mech in sorted({r["mechanism"] for r in cost_rows}, key=MECHANISMS.index):
        rs = [r for r in cost_rows if r["mechanism"] == mech]
        for op in COST_OPS:
            on = {r["round"]: r[op] for r in rs if r["state"] == "on"}
            off = {r["round"]: r[op] for r in rs if r["state"] == "off"}
            diffs = [on[k] - off[k] for k in on if k in off]
            lo, hi = bootstrap_median_ci(diffs)
            out["cost"].append({"mechanism": mech, "op": op, "rounds": len(diffs),
                                "off_ns": median(off.values()), "on_ns": median(on.values()),
                                "added_ns": median(diffs), "ci_low": lo, "ci_high": hi})
    return out


def _fmt(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def tables(summary: dict) -> tuple[list, list, list, list]:
    enf = [(e["mechanism"], e["scenario"], e["trials"], e["outcome"],
            _fmt(e["overshoot_median"]), _fmt(e["overshoot_max"]), e["unit"],
            _fmt(e["death_ms_median"], 2),
            "-" if not e["death_ms_ci"] else
            f"{e['death_ms_ci'][0]:.2f}..{e['death_ms_ci'][1]:.2f}")
           for e in summary["enforcement"]]
    enf_h = ["mechanism", "scenario", "trials", "outcome", "overshoot median",
             "overshoot max", "unit", "death ms median", "95% CI"]
    cost = [(c["mechanism"], c["op"], c["rounds"], _fmt(c["off_ns"]), _fmt(c["on_ns"]),
             _fmt(c["added_ns"]), f"{_fmt(c['ci_low'])}..{_fmt(c['ci_high'])}")
            for c in summary["cost"]]
    cost_h = ["mechanism", "call", "rounds", "untracked ns", "tracked ns", "added ns",
              "95% CI"]
    return enf, enf_h, cost, cost_h


def plot(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.5))
    mechs = sorted({c["mechanism"] for c in summary["cost"]})
    width = 0.8 / max(1, len(mechs))
    for i, m in enumerate(mechs):
        cs = [c for c in summary["cost"] if c["mechanism"] == m]
        xs = [j + i * width for j in range(len(cs))]
        ys = [c["added_ns"] or 0 for c in cs]
        err = [[y - (c["ci_low"] or y) for y, c in zip(ys, cs)],
               [(c["ci_high"] or y) - y for y, c in zip(ys, cs)]]
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=m)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(COST_OPS))], COST_OPS)
    ax.set_ylabel("ns added per call (median, 95% CI)")
    ax.set_title("Cost of being tracked by a quota")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(mechanisms, trials: int, rounds: int, cost_n: int, out_dir: Path | None,
        progress=print) -> tuple[Path, dict]:
    if os.geteuid() != 0:
        raise BenchError("bench quota needs root (kernel module, BPF, cgroups, limits)")
    mechanisms = list(mechanisms)
    if "cgroup" in mechanisms and (why := cgroup_available()):
        progress(f"cgroup left out: {why}")
        mechanisms.remove("cgroup")
    exe = build_workload()
    out_dir = out_dir or RESULTS_DIR / time.strftime("quota-%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(12)
    enf = Enforcers(mechanisms)
    all_trials: list[Trial] = []
    cost_rows: list[dict] = []
    state_dir = Path(tempfile.mkdtemp(prefix="tk-quota-"))
    try:
        for mech in mechanisms:
            for scen in SCENARIOS:
                if mech == "cgroup" and scen == "files":
                    continue
                for i in range(trials):
                    progress(f"{mech} {scen} trial {i + 1}/{trials}")
                    all_trials.append(run_trial(enf, exe, mech, scen, i,
                                                state_dir / "state"))
            if mech in enf.quotas:
                progress(f"{mech} cost: {rounds} interleaved rounds of {cost_n} calls each")
                cost_rows += run_cost(enf, exe, mech, rounds, cost_n, rng)
        # every kernel side's own counters (the BPF side's: kill records its ring
        # dropped, signals retried; the module's: probes missed)
        counts = {mech: side.counts() for mech, side in enf.quotas.items()}
    finally:
        enf.close()
        shutil.rmtree(state_dir, ignore_errors=True)
    summary = summarize(all_trials, cost_rows)
    summary["counts"] = counts
    summary["params"] = {"mechanisms": mechanisms, "trials": trials, "rounds": rounds,
                         "cost_calls": cost_n, "step_kib": STEP_KIB,
                         "heap_margin": HEAP_MARGIN, "files_margin": FILES_MARGIN,
                         "kernel": os.uname().release}
    _write_files(out_dir, summary, all_trials, cost_rows)
    if summary["cost"]:
        plot(summary, out_dir / "cost.png")
    (out_dir / "report.md").write_text(report_md(summary))
    return out_dir, summary


def _write_files(out_dir: Path, summary: dict, trials: list[Trial],
                 cost_rows: list[dict]) -> None:
    """trials.csv, cost.csv and summary.json, in the one results format."""
    import pandas as pd
    rows = pd.DataFrame([dataclasses.asdict(t) for t in trials],
                        columns=[f.name for f in dataclasses.fields(Trial)])
    # an int or nothing (not a float): the kill record's value where there was one
    results.write_csv(rows.astype({"kill_value": "Int64"}), out_dir / "trials.csv", "quota")
    results.write_csv(pd.DataFrame(cost_rows,
                                   columns=["mechanism", "round", "state", *COST_OPS]),
                      out_dir / "cost.csv", "quota")
    results.write_summary(out_dir, "quota", summary, indent=2)


def report_md(summary: dict) -> str:
    from tabulate import tabulate
    enf, enf_h, cost, cost_h = tables(summary)
    p = summary.get("params", {})
    return (f"# bench quota\n\nKernel {p.get('kernel')}; {p.get('trials')} trials per "
            f"mechanism and scenario; heap step {p.get('step_kib')} KiB, limit = start + "
            f"16.5 steps; files limit = start + {p.get('files_margin')}. Overshoot is in "
            "the limit's own measure (data_vm bytes; cgroup: memory.peak - memory.max; "
            "descriptors); death is from the crossing call's start to waitpid() returning."
            "\n\n## Enforcement\n\n" + tabulate(enf, enf_h, tablefmt="github") +
            f"\n\n## Cost per call (interleaved tracked/untracked, {p.get('rounds')} rounds "
            f"of {p.get('cost_calls')} calls)\n\n" + tabulate(cost, cost_h, tablefmt="github") +
            "\n\n![cost](cost.png)\n")
