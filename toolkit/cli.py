"""toolkit command line. Heavy imports (bcc, pandas, matplotlib) happen inside commands."""
from __future__ import annotations

import json
import os
import signal
import sys
import time

import click

from . import __version__

BACKENDS = ("lkm", "ebpf", "ps")


class ToolkitError(click.ClickException):
    """A clear one-line error with an optional hint; exit status 2, never a traceback."""
    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def show(self, file=None):
        file = file or sys.stderr
        click.echo(f"error: {self.format_message()}", err=True)
        if self.hint:
            click.echo(f"hint: {self.hint}", err=True)


def fail_from(e: Exception):
    raise ToolkitError(str(e), getattr(e, "hint", None)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="toolkit")
def main():
    """Track process lifecycles (fork/exec/exit) and RSS with a kprobe kernel module (lkm)
    or BCC eBPF (ebpf), compare them with polling ps, and benchmark all three."""


# ---------------------------------------------------------------- --lab plumbing
def lab_option(f):
    return click.option("--lab", is_flag=True,
                        help="Run this command inside the lab VM (stock kernel under QEMU).")(f)


def rerun_in_lab(extra_note: str = "") -> None:
    """Re-run the current toolkit command line (minus --lab) inside the lab; exit with its status."""
    from . import lab
    argv = [a for a in sys.argv[1:] if a != "--lab"]
    click.echo(f"lab: running `toolkit {' '.join(argv)}` in the lab VM{extra_note}", err=True)
    try:
        status = lab.run(["toolkit", *argv])
    except lab.LabError as e:
        fail_from(e)
    sys.exit(status)


def open_backend(name: str, **options):
    from .backends import BackendError, get_backend
    try:
        b = get_backend(name, **options)
        b.start()
        return b
    except BackendError as e:
        fail_from(e)


# ---------------------------------------------------------------- doctor
@main.command()
@click.option("--backend", "backends", default="lkm,ebpf", show_default=True,
              help="Comma-separated backends whose needs decide the exit status.")
@click.option("--no-lab", is_flag=True, help="Skip the lab check (it boots QEMU briefly).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(backends, no_lab, as_json):
    """What each backend needs from this kernel, and whether it is there.

    Exit status: 0 if every requested backend runs natively here, 3 if some run only in
    the lab VM (`--lab`), 1 if some cannot run at all.
    """
    from tabulate import tabulate

    from . import doctor as d
    wanted = _parse_backends(backends, allowed=("lkm", "ebpf", "ps"))
    items = d.checks()
    labc = None if no_lab else d.lab_check()
    lab_ok = bool(labc and labc.status == d.OK)
    verdicts = {}
    for b in wanted:
        verdicts[b] = ("native", []) if b == "ps" else d.verdict(b, items, lab_ok)
    if as_json:
        click.echo(json.dumps({
            "kernel": os.uname().release,
            "checks": [c.__dict__ for c in items + ([labc] if labc else [])],
            "verdicts": {b: {"verdict": v, "fixes": f} for b, (v, f) in verdicts.items()},
        }, indent=2, default=list))
    else:
        rows = [(c.name, c.status, c.detail, ",".join(c.needed_by) or "-")
                for c in items + ([labc] if labc else [])]
        click.echo(f"kernel {os.uname().release} ({os.uname().machine})\n")
        click.echo(tabulate(rows, headers=["check", "status", "detail", "needed by"],
                               maxcolwidths=[None, None, 72, None]))
        click.echo()
        for b, (v, fixes) in verdicts.items():
            how = {"native": "runs natively on this kernel",
                   "lab": "cannot run natively here; runs in the lab VM (add --lab)",
                   "unavailable": "cannot run here, and the lab is not set up"}[v]
            click.echo(f"{b:5} {v.upper():12} {how}")
            for fx in fixes:
                click.echo(f"{'':18}fix {fx}")
    states = {v for v, _ in verdicts.values()}
    sys.exit(1 if "unavailable" in states else 3 if "lab" in states else 0)


def _parse_backends(text: str, allowed=BACKENDS) -> list[str]:
    names = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in names if b not in allowed]
    if bad or not names:
        raise click.BadParameter(f"unknown backend(s) {', '.join(bad) or '(none)'}; "
                                 f"choose from {', '.join(allowed)}", param_hint="--backend")
    return names


# ---------------------------------------------------------------- lab
@main.group()
def lab():
    """The lab VM: a stock distribution kernel under QEMU (virtme-ng) where both backends run."""


@lab.command("run", context_settings={"ignore_unknown_options": True})
@click.option("--kernel", help="Lab kernel image (default: newest /boot/vmlinuz-* with headers).")
@click.option("--cpus", type=click.IntRange(1, 64), help="Guest CPUs (default: min(2, host)).")
@click.option("--memory", default="4G", show_default=True, help="Guest memory.")
@click.option("--results", type=click.Path(file_okay=False),
              help="Directory shared read-write with the guest (default: results/).")
@click.option("--rwdir", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Another host directory the guest may write (repeatable).")
@click.option("--timeout", type=float, help="Kill the VM after this many seconds.")
@click.option("--no-prebuild", is_flag=True,
              help="Do not build the module for the lab kernel on the host first.")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def lab_run(kernel, cpus, memory, results, rwdir, timeout, no_prebuild, cmd):
    """Boot the lab, run CMD in it, stream its output, exit with its status.

    The host filesystem is visible read-only; the results directory is shared
    read-write, so files written there remain on the host. Example:

        toolkit lab run -- uname -r
    """
    from . import lab as L
    try:
        status = L.run(list(cmd), kernel=kernel, cpus=cpus, memory=memory, results=results,
                       rwdirs=list(rwdir), timeout=timeout, prebuild=not no_prebuild)
    except L.LabError as e:
        fail_from(e)
    sys.exit(status)


@lab.command("info")
def lab_info():
    """Show the lab kernel, accelerator (KVM or TCG) and tools that would be used."""
    from tabulate import tabulate

    from . import lab as L
    i = L.info()
    acc = i.get("accel") or {}
    rows = [("kernel", i.get("kernel", "-")), ("headers", i.get("headers", False)),
            ("accelerator", f"{acc.get('name', '?')}: {acc.get('reason', '')}"),
            ("virtme-ng", i.get("vng") or "missing"), ("qemu", i.get("qemu") or "missing")]
    if "error" in i:
        rows.append(("error", i["error"]))
    click.echo(tabulate(rows, tablefmt="plain"))
    sys.exit(0 if i.get("usable") else 1)


# ---------------------------------------------------------------- watch
WATCH_COLS = [("time_s", 10), ("event", 6), ("pid", 7), ("tgid", 7), ("ppid", 7), ("uid", 6),
              ("comm", 16), ("exit", 6), ("rss_kib", 9), ("peak_kib", 9), ("cpu_ms", 8)]


def _watch_row(rec, t0: int) -> list:
    from . import schema
    is_exit = rec.type == schema.EventType.EXIT
    return [f"{(rec.ts_ns - t0) / 1e9:.3f}", rec.event, rec.pid, rec.tgid, rec.ppid, rec.uid,
            rec.comm, _status_text(rec.exit_code) if is_exit else "",
            rec.rss_kib if is_exit else "", rec.hiwater_rss_kib if is_exit else "",
            f"{rec.cpu_ns / 1e6:.1f}" if is_exit else ""]


def _status_text(status: int) -> str:
    """wait(2) status as the shell shows it: the exit code, or SIGNAME for a signal death."""
    if status & 0x7F:
        try:
            return signal.Signals(status & 0x7F).name
        except ValueError:
            return f"sig{status & 0x7F}"
    return str((status >> 8) & 0xFF)


def backend_options(f):
    f = click.option("--backend", type=click.Choice(BACKENDS), default="lkm", show_default=True,
                     help="Which collector to use.")(f)
    f = click.option("--probe", type=click.Choice(["kprobe", "tracepoint", "fentry"]),
                     default=None, help="eBPF hook variant (ebpf backend only; default kprobe).")(f)
    f = click.option("--uid", type=click.IntRange(0), default=None,
                     help="Only this user's processes.")(f)
    return lab_option(f)


def _options_for(backend: str, probe: str | None, uid: int | None) -> dict:
    opts = {"uid": uid}
    if probe:
        if backend != "ebpf":
            raise click.BadParameter("--probe applies to --backend ebpf only", param_hint="--probe")
        opts["probe"] = probe
    return opts


@main.command()
@backend_options
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table",
              show_default=True, help="table for people, jsonl (one JSON object a line) for machines.")
@click.option("--duration", type=click.FloatRange(0, min_open=True),
              help="Stop after S seconds (default: until Ctrl-C).")
def watch(backend, probe, uid, lab, fmt, duration):
    """Print live lifecycle events until Ctrl-C or --duration, then the drop counters."""
    opts = _options_for(backend, probe, uid)
    if lab:
        rerun_in_lab()
    from . import schema
    b = open_backend(backend, **opts)
    t0 = time.monotonic_ns()
    click.echo(f"watch: {backend} attached, " + (f"for {duration:g} s" if duration else
               "Ctrl-C to stop"), err=True)
    out = click.get_text_stream("stdout")
    if fmt == "table":
        out.write(" ".join(f"{n:>{w}}" if n != "comm" else f"{n:<{w}}" for n, w in WATCH_COLS)
                  + "\n")
    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True
    old = signal.signal(signal.SIGTERM, _stop)
    end = None if duration is None else time.monotonic() + duration
    try:
        while not stopping and (end is None or time.monotonic() < end):
            left = 0.25 if end is None else max(0.0, min(0.25, end - time.monotonic()))
            for rec in b.read(left):
                if fmt == "jsonl":
                    out.write(json.dumps(schema.as_dict(rec)) + "\n")
                else:
                    vals = _watch_row(rec, t0)
                    out.write(" ".join(f"{str(v):>{w}}" if n != "comm" else f"{str(v):<{w}.{w}}"
                                       for (n, w), v in zip(WATCH_COLS, vals)) + "\n")
            out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        stats = b.stats()
        b.stop()
    _print_drops(stats, fmt)


def _print_drops(stats, fmt: str) -> None:
    if fmt == "jsonl":
        click.echo(json.dumps({"stats": stats.as_dict()}, default=str), err=True)
        return
    from tabulate import tabulate
    rows = [(n, c.seen, c.filtered, c.delivered, c.dropped) for n, c in stats.events.items()]
    click.echo("\n" + tabulate(rows, headers=["event", "seen", "filtered", "delivered",
                                               "dropped"]), err=True)
    click.echo(f"dropped {stats.dropped}, kprobe/program missed {stats.missed}, "
               f"lost in transport {stats.lost_in_transport}, lost on read {stats.read_lost}",
               err=True)


# ---------------------------------------------------------------- mem
@main.command()
@backend_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--sort", type=click.Choice(["rss", "pid", "cpu", "peak"]), default="rss",
              show_default=True)
@click.option("--top", type=click.IntRange(0), default=0, help="Only the first N rows (0: all).")
def mem(backend, probe, uid, lab, fmt, sort, top):
    """Process table with RSS, peak RSS and CPU time, and the system memory summary."""
    opts = _options_for(backend, probe, uid)
    if lab:
        rerun_in_lab()
    import dataclasses

    from tabulate import tabulate
    b = open_backend(backend, **opts)
    try:
        snap = b.snapshot()
    finally:
        b.stop()
    procs = [p for p in snap.processes if uid is None or p.uid == uid]
    key = {"rss": lambda p: -p.rss_kib, "pid": lambda p: p.pid, "cpu": lambda p: -p.cpu_ns,
           "peak": lambda p: -p.hiwater_rss_kib}[sort]
    procs.sort(key=key)
    if top:
        procs = procs[:top]
    if fmt == "json":
        click.echo(json.dumps({"backend": backend, "source": snap.source,
                               "meminfo": dataclasses.asdict(snap.meminfo),
                               "processes": [dataclasses.asdict(p) for p in procs]}, indent=1))
        return
    m = snap.meminfo
    click.echo(tabulate([[m.total_kib, m.used_kib, m.free_kib, m.buffers_kib, m.cached_kib,
                          m.available_kib]],
                        headers=["total_kib", "used_kib", "free_kib", "buffers_kib", "cached_kib",
                                 "available_kib"]))
    click.echo()
    click.echo(tabulate([[p.pid, p.ppid, p.uid, p.state, p.rss_kib, p.hiwater_rss_kib,
                          p.total_vm_kib, f"{p.cpu_ns / 1e9:.2f}", p.threads, p.comm]
                         for p in procs],
                        headers=["pid", "ppid", "uid", "state", "rss_kib", "peak_kib", "vm_kib",
                                 "cpu_s", "threads", "comm"]))
    click.echo("\nsource: " + "; ".join(f"{k} from {v}" for k, v in snap.source.items()))


def _register_subcommands():
    """Command groups that live in their own modules: toolkit/<name>_cli.py exporting
    COMMANDS (a list of click commands), or else a command called <name>.
    Import errors are real bugs and propagate."""
    import importlib
    from pathlib import Path
    for f in sorted(Path(__file__).parent.glob("*_cli.py")):
        mod = importlib.import_module(f".{f.stem}", __package__)
        for cmd in getattr(mod, "COMMANDS", None) or [getattr(mod, f.stem[:-len("_cli")])]:
            main.add_command(cmd)


_register_subcommands()

if __name__ == "__main__":
    main()
