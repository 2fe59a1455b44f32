"""`toolkit quota ...`: per-process heap and open-file quotas, enforced by SIGKILL.

`run` starts a command already under its quotas (registered before its first
instruction); `set`, `list` and `clear` act on /proc/toolkit/quota (the module).
Errors are ToolkitErrors, printed by the CLI's one handler.
"""
from __future__ import annotations

import sys

import click

from .common import bcc_engine_option, lab_option, rerun_in_lab

QUOTA_BACKENDS = ("lkm", "ebpf")


def _limits(heap: str | None, files: str | None) -> tuple[int | None, int | None]:
    from .. import quota as q
    h = q.parse_size(heap) if heap is not None else None
    f = q.parse_count(files) if files is not None else None
    if h is None and f is None:
        raise q.QuotaError("no quota given", hint="--heap SIZE (e.g. 64M), --files N, or both")
    return h, f


def _quota_options(f):
    f = click.option("--files", metavar="N", default=None,
                     help="Open-descriptor quota: the (N+1)-th descriptor kills.")(f)
    f = click.option("--heap", metavar="SIZE", default=None,
                     help="Heap quota (mm->data_vm, as RLIMIT_DATA counts it): bytes "
                          "with K, M or G, e.g. 64M.")(f)
    return f


@click.group()
def quota():
    """Per-process heap and open-file quotas: SIGKILL from the kernel past them."""


@quota.command(context_settings={"ignore_unknown_options": True})
@_quota_options
@click.option("--backend", type=click.Choice(QUOTA_BACKENDS), default="lkm",
              show_default=True, help="Which kernel side enforces the quotas.")
@bcc_engine_option("quota run")
@lab_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(heap, files, backend, lab, command):
    """Run COMMAND under quotas: `toolkit quota run --heap 64M --files 100 -- CMD...`.

    Exits with COMMAND's status (128 + N if a signal N killed it)."""
    if lab:
        rerun_in_lab()
    import os

    from .. import quota as q
    h, f = _limits(heap, files)
    argv = list(command)
    if backend == "lkm":
        pid = q.spawn_registered(argv, lambda child: q.write(q.set_command(child, h, f)))
        _, status = os.waitpid(pid, 0)
        kills = []
    else:   # the BPF programs stay attached, and the quota held, while we wait
        from ..backends.ebpf_quota import EbpfQuotas
        click.echo("quota run: compiling and attaching ebpf/quota.c ...", err=True)
        enforcer = EbpfQuotas()
        try:
            pid = q.spawn_registered(argv, lambda child: enforcer.set(child, h, f))
            _, status = os.waitpid(pid, 0)
            kills = enforcer.kills(100)
            counts = enforcer.counts()
            if counts["dropped"]:
                click.echo(f"quota run: {counts['dropped']} kill records dropped "
                           "(ring buffer full)", err=True)
        finally:
            enforcer.close()
    click.echo(f"quota run: {argv[0]} (pid {pid}) {q.describe_status(status)}", err=True)
    for k in kills:
        click.echo(f"quota run: {q.describe_kill(k)}", err=True)
    sys.exit(q.exit_code(status))


@quota.command("set")
@_quota_options
@click.argument("pid", type=int)
def set_(heap, files, pid):
    """Give the running process PID quotas (keys not given keep their value)."""
    from .. import quota as q
    h, f = _limits(heap, files)
    q.set_quota(pid, h, f)
    click.echo(f"pid {pid}: " + q.set_command(pid, h, f).split(" ", 2)[2])


@quota.command("clear")
@click.argument("pid", type=int)
def clear(pid):
    """Remove the quotas of PID."""
    from .. import quota as q
    q.clear(pid)
    click.echo(f"pid {pid}: quotas cleared")


@quota.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per process.")
def list_(as_json):
    """The tracked processes, their heap and descriptors now, and their quotas."""
    import dataclasses
    import json

    from tabulate import tabulate

    from .. import quota as q
    rows, missed = q.read()
    if as_json:
        for r in rows:
            click.echo(json.dumps(dataclasses.asdict(r)))
        return
    table = [(r.pid, r.comm, r.heap, r.heap_quota or "-", r.files, r.files_quota or "-",
              r.state) for r in rows]
    click.echo(tabulate(table, headers=["pid", "comm", "heap B", "heap quota", "files",
                                        "file quota", "state"]))
    if missed:
        click.echo(f"probes missed {missed} hits (see docs/quota.md)", err=True)
