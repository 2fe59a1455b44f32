"""`toolkit bench forkstorm` and `toolkit report`: the product's main job.

Heavy imports (the harness, tabulate, matplotlib) happen inside the commands.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import click

from ..errors import ToolkitError
from .common import (BACKENDS, engine_choices, needs_lab, parse_backends, parse_list,
                     probe_variants, rerun_in_lab)

DEFAULT_BACKENDS = "lkm,ebpf,cnproc,taskstats,acct,ps"
# Storm sizes by where the bench runs: natively a storm lasts seconds at the host's full
# rate, so tens of thousands of children give a tight overhead CI; under TCG (~250 forks/s)
# 300 children already take a second or more.
DEFAULTS = {"native": {"count": 20000, "repeat": 5}, "lab": {"count": 300, "repeat": 3}}


@click.group()
def bench():
    """Benchmarks: a workload with a ground truth, run under each backend."""


@bench.command()
@click.option("--backend", "backends", default=DEFAULT_BACKENDS, show_default=True,
              help=f"Comma-separated backends under test ({', '.join(BACKENDS)}).")
@click.option("--probe", default=None,
              help="eBPF hook variant(s), comma-separated, each its own column: bcc: kprobe, "
                   "tracepoint, fentry; core: kprobe, fentry, tp_btf, raw_tp (default: "
                   "kprobe for bcc, the first that attaches for core).")
@click.option("--engine", default="auto", show_default=True,
              help="eBPF engine(s), comma-separated, each its own column (ebpf, ebpf-core): "
                   "bcc, core; auto: every engine that runs where the bench runs.")
@click.option("--wakeup", type=click.Choice(["batch", "record"]), default=None,
              help="eBPF ring buffer reader wakeup policy (default batch).")
@click.option("--ps-interval", default="0.1,1", show_default=True,
              help="ps polling interval(s) in seconds, comma-separated; each is a column "
                   "(ps@0.1s, ps@1s).")
@click.option("--count", type=click.IntRange(1), default=None,
              help="Children per storm (default 20000 natively, 300 in the lab).")
@click.option("--rate", default="0", show_default=True,
              help="Forks per second (0: as fast as possible); a comma list of rates > 0 "
                   "sweeps (500,2000,8000) and draws capture-vs-rate.png.")
@click.option("--collector-cpu", type=float, default=None,
              help="Confine the collector's reader (the harness while it reads, and the ps "
                   "it runs) to this share of one CPU, in percent (0 < PCT <= 100), with "
                   "CFS bandwidth control (cgroup cpu.max): a starved collector.")
@click.option("--concurrency", type=click.IntRange(1, 4096), default=4, show_default=True,
              help="Children alive at once, at most.")
@click.option("--lifetime", default="0", show_default=True,
              help="Child lifetime in ms (0: exit at once); a comma list sweeps "
                   "(0,1,10,100,1000) and draws capture-vs-lifetime.png.")
@click.option("--exec", "exec_all", is_flag=True, help="Every child execs the helper tk-child.")
@click.option("--exec-every", type=click.IntRange(0), default=10, show_default=True,
              help="Every K-th child execs tk-child (0: none); --exec means 1.")
@click.option("--threads", type=click.IntRange(0, 256), default=0, show_default=True,
              help="Threads each child starts (and joins) before exiting.")
@click.option("--alloc-mib", type=click.IntRange(0, 4096), default=2, show_default=True,
              help="MiB each child allocates and touches (so RSS at exit means something).")
@click.option("--repeat", type=click.IntRange(1), default=None,
              help="Interleaved rounds (none, each backend) for the overhead CI (default 5 "
                   "natively, 3 in the lab).")
@click.option("--ring-size", type=click.IntRange(1), default=None,
              help="lkm ring size in records (small: provoke and count drops).")
@click.option("--buffer-pages", type=click.IntRange(1), default=None,
              help="ebpf ring/perf buffer pages, a power of two (small: provoke drops).")
@click.option("--rcvbuf", type=click.IntRange(1), default=None,
              help="cnproc and taskstats socket receive buffer in bytes (the kernel doubles "
                   "it; default: the system's net.core.rmem_default, what a consumer that "
                   "does not ask gets).")
@click.option("--transport", type=click.Choice(["auto", "ringbuf", "perf"]), default=None,
              help="ebpf transport (default auto).")
@click.option("--read-interval", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Seconds the harness sleeps between reads of a kernel backend: a slow "
                   "reader, to provoke (and count) drops with a small --ring-size/--buffer-pages.")
@click.option("--scope", type=click.Choice(["system", "children"]), default="system",
              show_default=True,
              help="What the kernel backends record during a storm: everything on the "
                   "machine, as deployed (drops may then include other processes' events), "
                   "or only the storm's children (a parent-pid filter in the kernel; other "
                   "events count as filtered), so misses and drops concern the ledger alone.")
@click.option("--out", default=None,
              help="Run directory: a name under results/ (default forkstorm-<timestamp>), "
                   "or a path.")
@click.option("--lab/--native", "where", default=None,
              help="Run in the lab VM / on this kernel. Default: natively when every "
                   "requested backend can run here, else in the lab (said on stderr).")
@click.option("--kernel", default=None,
              help="Run in the lab on this kernel: a release prefix (6.1, 6.12) or a vmlinuz "
                   "path (implies --lab; `toolkit lab info` lists them).")
def forkstorm(**cli):
    """Fork storm with a ground-truth ledger, under each backend, side by side.

    Each round runs the storm with nothing attached, then under each backend in turn;
    records are matched to the ledger by (pid, start time). Where some backends run on
    this kernel and others only in the lab VM, the bench runs in two parts: natively with
    the first, then in the lab with the rest (and every eBPF engine), each with its own
    table and run directory. Prints progress on stderr, then the table; writes ledger.csv,
    events-<backend>.csv, summary.json, report.md (and capture-vs-lifetime.png for a
    --lifetime sweep) to the run directory.
    """
    from .. import lab as L
    o = _options(cli)
    where, kernel, out = cli["where"], cli["kernel"], o.out
    if L.in_lab():
        return _run_part(o, "lab")
    if kernel and where is False:
        raise ToolkitError("--kernel picks a lab kernel: it cannot go with --native")
    if kernel:
        L.find_kernel(kernel)  # a clear error now, before anything starts
    if kernel or where is True:
        _check_out(out)
        rerun_in_lab(f" ({'--kernel ' + kernel if kernel else '--lab given'})", kernel=kernel)
    native, lab = split_parts(o.names, o.engines)
    if where is False and native and lab:     # --native: part 1 alone
        left = [b for b in lab["names"] if b not in native["names"]]
        click.echo(f"bench: --native: natively {', '.join(native['names'])}"
                   + (f"; left out (lab only): {', '.join(left)}" if left else ""), err=True)
        return _run_part(dataclasses.replace(o, **native), "native")
    if where is False or not lab:
        return _run_part(o, "native")
    _check_out(out)
    reason = needs_lab(lab["names"], engines=lab["engines"])
    if native:
        click.echo(f"bench: part 1 of 2, natively: {', '.join(native['names'])}"
                   f" (engines {','.join(native['engines']) or '-'}); part 2 in the lab: "
                   f"{', '.join(lab['names'])} ({reason})", err=True)
        _run_part(dataclasses.replace(o, **native, out=_part_out(out, "native")), "native")
    status = _lab_part(lab, out if not native else _part_out(out, "lab"), reason)
    sys.exit(status)


def _options(cli: dict):
    """The command line's options, checked, as one ForkstormOptions."""
    from ..bench.options import ForkstormOptions
    buffer_pages, collector_cpu = cli["buffer_pages"], cli["collector_cpu"]
    names = parse_backends(cli["backends"])
    engines = parse_list(cli["engine"], "--engine", allowed=engine_choices())
    probes = (parse_list(cli["probe"], "--probe", allowed=probe_variants())
              if cli["probe"] else None)
    if buffer_pages and buffer_pages & (buffer_pages - 1):
        raise click.BadParameter("must be a power of two", param_hint="--buffer-pages")
    if collector_cpu is not None and not 0 < collector_cpu <= 100:
        raise click.BadParameter(f"{collector_cpu:g}: must be a share of one CPU in percent, "
                                 "> 0 and <= 100", param_hint="--collector-cpu")
    rest = {k: v for k, v in cli.items()
            if k not in ("backends", "engine", "probe", "where", "kernel")}
    return ForkstormOptions(names=names, engines=engines,
                            probes=probes, **rest)


def split_parts(names: list[str], engines: list[str]) -> tuple[dict | None, dict | None]:
    """The backends (and eBPF engines) that run on this kernel, and those that need the
    lab. With --engine auto, eBPF runs natively on the engines that can, and goes to the
    lab only beside a backend that needs it there (the lab part then takes every engine,
    so that lkm, ebpf and ebpf-core stand in one lab table); named engines that cannot
    run here send eBPF to the lab."""
    from ..backends import engines as E
    from ..backends.base import ENGINE_BACKENDS
    auto = "auto" in engines
    want = list(E.ENGINES) if auto else engines
    native_engines = [e for e in want if _engine_native(e)]
    lab_only = [b for b in names if b not in ENGINE_BACKENDS and needs_lab([b]) is not None]
    engines_lab = not native_engines or (not auto and set(native_engines) != set(want)) \
        or bool(lab_only)
    lab_names = [b for b in names if b in lab_only or (b in ENGINE_BACKENDS and engines_lab)]
    native_names = [b for b in names if b not in lab_only
                    and (b not in ENGINE_BACKENDS or native_engines)]
    native = {"names": native_names, "engines": native_engines} if native_names else None
    lab = {"names": lab_names, "engines": want} if lab_names else None
    return native, lab


def _engine_native(engine: str) -> bool:
    from ..backends import engines as E
    from ..backends.base import ENGINE_BACKENDS
    return E.blocker(engine) is None \
        and needs_lab(ENGINE_BACKENDS, engines=[engine]) is None


def _part_out(out: str | None, part: str) -> str:
    import datetime as dt
    base = out or dt.datetime.now().strftime("forkstorm-%Y%m%d-%H%M%S")
    return f"{base}-{part}"


def _check_out(out: str | None) -> None:
    from .. import paths
    if out and "/" in out:
        p = os.path.abspath(out)
        if not p.startswith(str(paths.RESULTS_DIR) + "/"):
            raise ToolkitError(f"--out {out}: in the lab only results/ is shared with "
                               "this machine", "give --out a name (a directory under "
                               "results/) or a path inside results/")


def _lab_part(lab: dict, out: str, reason: str | None) -> int:
    """Part 2: the same command in the lab with the lab part's backends and engines."""
    from .. import lab as L
    argv, it = [], iter(sys.argv[1:])
    for a in it:
        if a in ("--backend", "--engine", "--out", "--kernel"):
            next(it, None)
        elif a not in ("--lab", "--native") and not a.startswith(
                ("--backend=", "--engine=", "--out=", "--kernel=")):
            argv.append(a)
    argv += ["--backend", ",".join(lab["names"]), "--engine", ",".join(lab["engines"]),
             "--out", out]
    click.echo(f"lab: running `toolkit {' '.join(argv)}` in the lab VM ({reason})", err=True)
    return L.run(["toolkit", *argv])


def _run_part(o, where: str) -> None:
    """One part of the bench, here: native or (inside the VM) lab defaults."""
    from .. import paths
    from ..bench import harness as H
    from ..bench.workload import StormParams
    d = DEFAULTS[where]
    count, repeat = o.count or d["count"], o.repeat or d["repeat"]
    engines, intervals, lifetimes, rates = _part_lists(o)
    params = o.parameters(where, engines=engines, intervals=intervals, lifetimes=lifetimes,
                          rates=rates, count=count, repeat=repeat)
    storm = StormParams(count=count, rate=rates[0], concurrency=o.concurrency,
                        exec_every=o.every, threads=o.threads, alloc_mib=o.alloc_mib)
    out_dir = H.default_out_dir(paths.RESULTS_DIR, o.out)
    try:
        specs = H.make_specs(o.names, o.probes, intervals, ring_size=o.ring_size,
                             buffer_pages=o.buffer_pages, transport=o.transport,
                             rcvbuf=o.rcvbuf, engines=engines, wakeup=o.wakeup)
        h = H.Harness(specs, storm, lifetimes, repeat, out_dir, params,
                      read_interval=o.read_interval, scope=o.scope, rates=rates,
                      collector_cpu=o.collector_cpu)
        summary = h.run()
    except OSError as e:
        raise ToolkitError(f"bench: {e}") from None
    _show(summary, out_dir)


def _part_lists(o) -> tuple[list[str], list[float], list[int], list[float]]:
    """This part's eBPF engines (auto: those that run here), ps intervals, lifetimes and
    rates, parsed from the options' comma lists."""
    from ..backends import engines as E
    from ..backends.base import ENGINE_BACKENDS
    engines = [e for e in E.ENGINES if _engine_native(e)] if "auto" in o.engines \
        else o.engines
    intervals = parse_list(o.ps_interval, "--ps-interval", convert=float,
                           check=lambda v: v > 0, must="> 0")
    lifetimes = parse_list(o.lifetime, "--lifetime", convert=int,
                           check=lambda v: v >= 0, must=">= 0")
    rates = parse_list(o.rate, "--rate", convert=float, check=lambda v: v >= 0,
                       must=">= 0")
    if len(rates) > 1 and 0 in rates:
        raise click.BadParameter("0 (as fast as possible) has no place in a rate sweep: "
                                 "give rates > 0", param_hint="--rate")
    if set(o.names) & set(ENGINE_BACKENDS) and not engines:
        raise ToolkitError("bench: no eBPF engine can run here (`toolkit doctor`)")
    return engines, intervals, lifetimes, rates


@bench.command()
@click.option("--backend", default="lkm", show_default=True,
              help="Which kernel backends sample each step: lkm, ebpf, or lkm,ebpf (one "
                   "memapp run, every step sampled through each).")
@click.option("--out", default=None,
              help="Run directory: a name under results/ (default memgrowth-<timestamp>), "
                   "or a path inside results/.")
@click.option("--lab/--native", "where", default=None,
              help="Run in the lab VM / on this kernel (default: the lab when the backend "
                   "cannot run here).")
def memgrowth(backend, out, where):
    """memapp's allocations step by step, each sampled through the backend and /proc:
    steps.csv, report.md and memgrowth.png in the run directory."""
    import datetime as dt

    from .. import lab as L
    from .. import paths
    backends = parse_list(backend, "--backend", allowed=("lkm", "ebpf"))
    if not L.in_lab():
        reason = "--lab given" if where is True else (needs_lab(backends) if where is None
                                                     else None)
        if reason:
            rerun_in_lab(f" ({reason})")
    from ..bench.memgrowth import memgrowth as run
    out_dir = (paths.RESULTS_DIR / (out or dt.datetime.now().strftime("memgrowth-%Y%m%d-%H%M%S"))
               if not out or "/" not in out else Path(out).resolve())
    summary = run(out_dir, backends, echo=lambda m: click.echo(m, err=True))
    f = summary["findings"]
    click.echo(f"heap grew {f['heap_growth_small']} B for {f['bytes_malloced_small']} B "
               f"malloc'd below the threshold; a 1 MiB malloc moved it {f['heap_move_1mib']} B")
    if "differences" in summary:
        d = summary["differences"]
        click.echo(f"{' and '.join(backends)}: "
                   + ("the same heap, stack VMA, VMA count and total_vm at every step"
                      if not d else f"{len(d)} differences (see report.md)"))
    click.echo(f"run directory: {out_dir}")


def _show(summary: dict, run_dir) -> None:
    from .. import report as R
    click.echo(R.headline(summary))
    click.echo()
    click.echo(R.table(summary))
    for sw in (R.sweep_table(summary), R.rate_table(summary)):
        if sw:
            click.echo()
            click.echo(sw)
    for f in R.flags(summary):
        click.echo(f"flag: {f}")
    click.echo(f"\nrun directory: {run_dir}")


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--markdown", is_flag=True, help="Print report.md instead of the table.")
def report(runs, markdown):
    """Re-render a saved bench run of any kind (forkstorm, memgrowth, quota: its table
    and report.md), or compare two runs of one kind: DIR1 DIR2."""
    from pathlib import Path

    from .. import report as R
    if len(runs) > 2:
        raise click.UsageError("give one run directory, or two to compare")
    loaded = [R.load(r) for r in runs]
    if len(loaded) == 2:
        click.echo(R.compare_any(loaded[0], loaded[1], Path(runs[0]).name,
                                 Path(runs[1]).name))
        return
    s, d = loaded[0], Path(runs[0])
    d = d if d.is_dir() else d.parent
    if s["kind"] != "forkstorm":
        return _report_other(s, d, markdown)
    if markdown:
        click.echo(R.markdown(s))
        return
    try:
        R.write_report(d, s)
        where = f"report.md re-rendered in {d}"
    except OSError as e:
        where = f"report.md not rewritten ({e.strerror})"
    _show(s, d)
    click.echo(where)


def _report_other(s: dict, d: Path, markdown: bool) -> None:
    """`toolkit report` of a memgrowth or quota run: its report, from its files."""
    from .. import report as R
    if markdown:
        click.echo(R.render_run(s, d, rewrite=False))
        return
    try:
        text, where = R.render_run(s, d), f"report.md re-rendered in {d}"
    except OSError as e:
        text, where = R.render_run(s, d, rewrite=False), \
            f"report.md not rewritten ({e.strerror})"
    click.echo(text)
    click.echo(f"run directory: {d}\n{where}")


@bench.command("quota")
@click.option("--mechanism", "mechanisms", default="lkm,ebpf,rlimit,cgroup", show_default=True,
              help="Comma list of lkm, ebpf (BCC), ebpf-core (CO-RE), rlimit (RLIMIT_DATA / "
                   "RLIMIT_NOFILE), cgroup (v2 memory.max, heap only; left out where the "
                   "kernel lacks it).")
@click.option("--trials", type=click.IntRange(1), default=5, show_default=True,
              help="Trials per mechanism and scenario (heap-brk, heap-mmap, files).")
@click.option("--rounds", type=click.IntRange(2), default=10, show_default=True,
              help="Interleaved tracked/untracked rounds of the cost measurement.")
@click.option("--calls", type=click.IntRange(1), default=2000, show_default=True,
              help="Calls of each kind per cost round.")
@click.option("--out", default=None, help="Run directory (default results/quota-<time>).")
@click.option("--lab", is_flag=True, help="Run inside the lab VM.")
def quota_bench(mechanisms, trials, rounds, calls, out, lab):
    """Quota enforcement (overshoot, time to death, cost per call): the module, eBPF and
    the kernel's own limits, on bench/quotaload.c."""
    from pathlib import Path

    from tabulate import tabulate

    from ..bench import quota as bq
    mechs = parse_list(mechanisms, "--mechanism", allowed=bq.MECHANISMS)
    if lab:
        rerun_in_lab()
    run_dir, summary = bq.run(mechs, trials, rounds, calls, Path(out) if out else None,
                              progress=lambda m: click.echo(f"bench quota: {m}", err=True))
    enf, enf_h, cost, cost_h = bq.tables(summary)
    click.echo(tabulate(enf, enf_h))
    click.echo()
    click.echo(tabulate(cost, cost_h))
    click.echo(f"\nrun directory: {run_dir}")
