"""What the command modules share: option decorators, the one comma-list parser, --lab
plumbing and opening a backend. Command modules import this, never the package's
__init__ (which imports them)."""
from __future__ import annotations

import signal
import sys
from typing import Callable, Iterable

import click

from ..backends.base import KERNEL_BACKENDS, REGISTRY, backends_with, registered_class
from ..errors import LabError, ToolkitError

BACKENDS = tuple(REGISTRY)


def probe_variants() -> tuple[str, ...]:
    """Every hook variant a backend's `probe` option takes (the eBPF backend's kprobe,
    tracepoint, fentry), asked of the backends."""
    out: list[str] = []
    for name in backends_with("probes"):
        out += [p for p in registered_class(name).probes if p not in out]
    return tuple(out)


# ---------------------------------------------------------------- the comma-list parser

def parse_list(text: str, what: str, *, allowed: Iterable[str] | None = None,
               convert: Callable[[str], object] = str,
               check: Callable[[object], bool] | None = None, must: str = "") -> list:
    """A comma-separated option value as a list without duplicates, in order.

    `allowed` restricts names; `convert` turns each item into a value (int, float);
    `check` validates each converted value (`must` says what it must be). A bad list is
    a usage error naming the option `what`."""
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    if not items:
        raise click.BadParameter(f"empty list {text!r}", param_hint=what)
    if allowed is not None:
        allowed = tuple(allowed)
        bad = [x for x in items if x not in allowed]
        if bad:
            raise click.BadParameter(f"unknown {', '.join(bad)}; choose from "
                                     f"{', '.join(allowed)}", param_hint=what)
    try:
        vals = [convert(x) for x in items]
    except ValueError:
        kind = {int: "whole numbers", float: "numbers"}.get(convert, "values")
        raise click.BadParameter(f"expected comma-separated {kind}, got {text!r}",
                                 param_hint=what) from None
    if check is not None:
        bad = [x for x, v in zip(items, vals) if not check(v)]
        if bad:
            raise click.BadParameter(f"{', '.join(bad)}: must be {must}", param_hint=what)
    return list(dict.fromkeys(vals))


def parse_backends(text: str, allowed: Iterable[str] = BACKENDS) -> list[str]:
    return parse_list(text, "--backend", allowed=allowed)


# ---------------------------------------------------------------- --lab plumbing

def lab_option(f):
    return click.option("--lab", is_flag=True,
                        help="Run this command inside the lab VM (stock kernel under QEMU).")(f)


def rerun_in_lab(extra_note: str = "", kernel: str | None = None) -> None:
    """Re-run the current toolkit command line (minus --lab and --kernel K) inside the lab,
    on `kernel` (a release prefix or path; None: the default lab kernel); exit with its
    status."""
    from .. import lab
    argv, args = [], iter(sys.argv[1:])
    for a in args:
        if a == "--kernel":
            next(args, None)
        elif a != "--lab" and not a.startswith("--kernel="):
            argv.append(a)
    click.echo(f"lab: running `toolkit {' '.join(argv)}` in the lab VM{extra_note}", err=True)
    status = lab.run(["toolkit", *argv], kernel=kernel)
    sys.exit(status)


def needs_lab(backends: Iterable[str]) -> str | None:
    """Why some of these kernel backends cannot run on this kernel (None: they can)."""
    from .. import doctor as d
    from .. import lab as L
    if L.in_lab():
        return None
    kernel = [b for b in backends if b in KERNEL_BACKENDS]
    if not kernel:
        return None
    items = d.checks(mount=False)
    for b in kernel:
        v, fixes = d.verdict(b, items, lab_ok=True)
        if v != "native":
            return f"{b} cannot run on this kernel ({fixes[0] if fixes else 'see toolkit doctor'})"
    return None


# ---------------------------------------------------------------- backends

def backend_options(f):
    """--backend, --probe, --uid and --lab, as every live command takes them."""
    f = click.option("--backend", type=click.Choice(BACKENDS), default="lkm",
                     show_default=True, help="Which collector to use.")(f)
    f = click.option("--probe", type=click.Choice(probe_variants()), default=None,
                     help="eBPF hook variant (ebpf backend only; default kprobe).")(f)
    f = click.option("--uid", type=click.IntRange(0), default=None,
                     help="Only this user's processes.")(f)
    return lab_option(f)


def options_for(backend: str, probe: str | None, uid: int | None) -> dict:
    opts = {"uid": uid}
    if probe:
        if not registered_class(backend).probes:
            raise click.BadParameter("--probe applies to --backend "
                                     f"{' or '.join(backends_with('probes'))} only",
                                     param_hint="--probe")
        opts["probe"] = probe
    return opts


def open_backend(name: str, **options):
    """get_backend + start; a BackendError reaches the CLI's one handler."""
    from ..backends import get_backend
    b = get_backend(name, **options)
    b.start()
    return b


def snapshot_of(name: str, **options):
    """One process-table snapshot through backend `name`, started only if its snapshot
    needs it (Backend.snapshot_needs_start) and stopped again."""
    from ..backends import get_backend
    b = get_backend(name, **options)
    if not b.snapshot_needs_start:
        return b.snapshot()
    b.start()
    try:
        return b.snapshot()
    finally:
        b.stop()


def status_text(status: int) -> str:
    """wait(2) status as the shell shows it: the exit code, or SIGNAME for a signal death."""
    if status & 0x7F:
        try:
            return signal.Signals(status & 0x7F).name
        except ValueError:
            return f"sig{status & 0x7F}"
    return str((status >> 8) & 0xFF)


__all__ = ["BACKENDS", "ToolkitError", "LabError", "parse_list", "parse_backends",
           "lab_option", "rerun_in_lab", "needs_lab", "backend_options", "options_for",
           "open_backend", "snapshot_of", "status_text", "probe_variants"]
