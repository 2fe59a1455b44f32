"""`toolkit doctor`: what each backend needs from this kernel, and whether it is there."""
from __future__ import annotations

import json
import os
import sys

import click

from .. import sysinfo
from ..backends.base import KERNEL_BACKENDS
from ..errors import EXIT_LAB_ONLY, EXIT_OK, EXIT_UNAVAILABLE
from .common import parse_backends


@click.command()
@click.option("--backend", "backends", show_default=True,
              default=",".join(KERNEL_BACKENDS),
              help="Comma-separated backends whose needs decide the exit status.")
@click.option("--no-lab", is_flag=True, help="Skip the lab check (it boots QEMU briefly).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(backends, no_lab, as_json):
    """What each backend needs from this kernel, and whether it is there.

    Exit status: 0 if every requested backend runs natively here, 3 if some run only in
    the lab VM (`--lab`), 1 if some cannot run at all.
    """
    from tabulate import tabulate

    from .. import doctor as d
    from ..backends.base import engine_subjects, subject_class
    wanted = parse_backends(backends)
    items = d.checks()
    labc = None if no_lab else d.lab_check()
    lab_ok = bool(labc and labc.status == d.OK)
    verdicts = {}
    for b in wanted:
        verdicts[b] = d.verdict(b, items, lab_ok)
        for sub in engine_subjects(b):
            verdicts[sub] = d.verdict(sub, items, lab_ok)
    if as_json:
        click.echo(json.dumps({
            "kernel": sysinfo.release(),
            "checks": [c.__dict__ for c in items + ([labc] if labc else [])],
            "verdicts": {b: {"verdict": v, "fixes": f} for b, (v, f) in verdicts.items()},
        }, indent=2, default=list))
    else:
        rows = [(c.name, c.status, c.detail, ",".join(c.needed_by) or "-")
                for c in items + ([labc] if labc else [])]
        click.echo(f"kernel {sysinfo.release()} ({os.uname().machine})\n")
        click.echo(tabulate(rows, headers=["check", "status", "detail", "needed by"],
                               maxcolwidths=[None, None, 72, None]))
        click.echo()
        for b in wanted:
            v, fixes = verdicts[b]
            for sub in engine_subjects(b):              # each engine's own verdict first
                sv, sfixes = verdicts[sub]
                _verdict_line(sub.replace(":", " "), sv, sfixes,
                              not subject_class(sub).doctor_lab_fallback)
            _verdict_line(b, v, [] if engine_subjects(b) else fixes, False)
    states = {v for b, (v, _) in verdicts.items() if b in wanted}
    sys.exit(EXIT_UNAVAILABLE if "unavailable" in states else
             EXIT_LAB_ONLY if "lab" in states else EXIT_OK)


def _verdict_line(name: str, v: str, fixes: list[str], native_only: bool) -> None:
    how = {"native": "runs natively on this kernel",
           "lab": "cannot run natively here; runs in the lab VM (add --lab)",
           "unavailable": "cannot run on this kernel" if native_only else
                          "cannot run here, and the lab is not set up"}[v]
    click.echo(f"{name:9} {v.upper():12} {how}")
    for fx in fixes:
        click.echo(f"{'':22}fix {fx}")
