"""What the command modules share: option decorators, the one comma-list parser, --lab
plumbing and opening a backend. Command modules import this, never the package's
__init__ (which imports them)."""
from __future__ import annotations

import signal
import sys
from typing import Callable, Iterable

import click

from ..backends.base import KERNEL_BACKENDS, REGISTRY, doctor_subject
from ..errors import LabError, ToolkitError

BACKENDS = tuple(REGISTRY)


def probe_variants() -> tuple[str, ...]:
    """The eBPF backend's hook variants over both engines (BCC: kprobe, tracepoint,
    fentry; CO-RE: kprobe, fentry, tp_btf, raw_tp), from the backends."""
    from ..backends.ebpf import PROBES
    from ..backends.ebpf_core import PROBES as CORE_PROBES
    return tuple(dict.fromkeys(PROBES + CORE_PROBES))


def engine_choices() -> tuple[str, ...]:
    from ..backends.engines import CHOICES
    return CHOICES


def bcc_engine_option(what: str):
    """--engine on a command whose eBPF side exists on the BCC engine only so far:
    auto and bcc are accepted, core is a clear error (not a silent BCC run)."""
    def check(ctx, param, value):
        if value == "core":
            raise click.BadParameter(
                f"{what} on the CO-RE engine is not built yet: it is bcc only "
                "(docs/ebpf-core.md); use --engine bcc (in the lab where this kernel "
                "has no headers: --lab)", param_hint="--engine")
        return value
    return click.option("--engine", type=click.Choice(engine_choices()), default=None,
                        callback=check, expose_value=False,
                        help=f"eBPF engine of {what}: bcc only so far (core is refused).")


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


_CHECKS = None


def needs_lab(backends: Iterable[str], engines: Iterable[str] | None = None) -> str | None:
    """Why some of these kernel backends cannot run on this kernel (None: they can); for
    a backend with engines, with each of `engines` (None or auto: any of them)."""
    global _CHECKS
    from .. import doctor as d
    from .. import lab as L
    if L.in_lab():
        return None
    kernel = [b for b in backends if b in KERNEL_BACKENDS]
    if not kernel:
        return None
    items = _CHECKS = _CHECKS or d.checks(mount=False)
    engines = [e for e in engines or () if e != "auto"]
    for b in kernel:
        subjects = [doctor_subject(b, e) for e in engines] or [b]
        for sub in subjects:
            v, fixes = d.verdict(sub, items, lab_ok=True)
            if v != "native":
                return (f"{sub.replace(':', ' ')} cannot run on this kernel "
                        f"({fixes[0] if fixes else 'see toolkit doctor'})")
    return None


# ---------------------------------------------------------------- backends

def backend_options(f):
    """--backend, --probe, --uid and --lab, as every live command takes them."""
    f = click.option("--backend", type=click.Choice(BACKENDS), default="lkm",
                     show_default=True, help="Which collector to use.")(f)
    f = click.option("--probe", type=click.Choice(probe_variants()), default=None,
                     help="eBPF hook variant (ebpf backend only; bcc: kprobe (default), "
                          "tracepoint, fentry; core: kprobe, fentry, tp_btf, raw_tp, default "
                          "the first that attaches).")(f)
    f = click.option("--engine", type=click.Choice(engine_choices()), default=None,
                     help="eBPF engine (ebpf backend only): bcc (compiles against the "
                          "kernel's headers), core (CO-RE object relocated with the kernel's "
                          "BTF), auto (default: bcc where it can run, else core).")(f)
    f = click.option("--uid", type=click.IntRange(0), default=None,
                     help="Only this user's processes.")(f)
    return lab_option(f)


def options_for(backend: str, probe: str | None, uid: int | None,
                engine: str | None = None) -> dict:
    """Backend options from the common flags; --probe and --engine only where the backend
    has engines (the registry says which)."""
    from ..backends.base import ENGINE_BACKENDS
    opts = {"uid": uid}
    for flag, value in (("probe", probe), ("engine", engine)):
        if value:
            if backend not in ENGINE_BACKENDS:
                raise click.BadParameter(f"--{flag} applies to --backend "
                                         f"{', '.join(ENGINE_BACKENDS)} only",
                                         param_hint=f"--{flag}")
            opts[flag] = value
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
