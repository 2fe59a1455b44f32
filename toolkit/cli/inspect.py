"""`toolkit inspect PID`: a process's memory layout and top-level page table from the
kernel's own structures, optionally checked against /proc."""
from __future__ import annotations

import json

import click

from ..backends.base import backends_with
from .common import engine_choices, lab_option, rerun_in_lab


@click.command()
@click.argument("pid")
@click.option("--backend", type=click.Choice(backends_with("layout_reader")), default="lkm",
              show_default=True, help="Which kernel backend reads the layout.")
@click.option("--vmas", is_flag=True, help="List every VMA.")
@click.option("--pgd", is_flag=True, help="List the present top-level page-table entries.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--check", is_flag=True,
              help="Compare with /proc/PID/{maps,status,stat}; exit 1 if a field differs.")
@click.option("--engine", type=click.Choice(engine_choices()), default=None,
              help="eBPF engine (--backend ebpf): bcc, core (CO-RE, libbpf and the "
                   "kernel's BTF), auto: bcc where BCC can run, else core.")
@lab_option
def inspect(pid, backend, vmas, pgd, fmt, check, engine, lab):
    """Memory layout of PID (a number, or `self` for this command's own process):
    regions, counters, --vmas, --pgd (root only)."""
    from ..inspect import check as chk
    from ..inspect import render
    from ..inspect.source import parse_pid, read_layout
    pid = parse_pid(pid)     # a non-number fails here, before any lab boots
    if lab:
        rerun_in_lab()
    if check:
        lay, rows = chk.inspect_and_check(pid, backend, engine)
    else:
        lay, rows = read_layout(pid, backend, engine), None
    if fmt == "json":
        click.echo(json.dumps(render.to_json(lay, rows, vmas, pgd), indent=1))
    else:
        click.echo(render.to_text(lay, rows, vmas, pgd))
    if rows is not None and not all(r.agree for r in rows):
        raise SystemExit(1)
