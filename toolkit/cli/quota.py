"""`toolkit quota ...`: per-process heap and open-file quotas, enforced by SIGKILL.

`run` starts a command already under its quotas (registered before its first
instruction); `set`, `list`, `clear` and `reset` act on a backend whose quotas outlive
the command (the module's; eBPF's pinned in bpffs by the CO-RE engine). `run` and `set`
load what they need (the module, the programs) and say so. Every kernel side is a
backend's Quotas (toolkit/backends/quotas.py), asked for by capability. Errors are
ToolkitErrors, printed by the CLI's one handler.
"""
from __future__ import annotations

import sys

import click

from ..backends.base import backends_with, quotas_class_for
from ..errors import ToolkitError
from .common import engine_choices, lab_option, rerun_in_lab

QUOTA_BACKENDS = backends_with("quotas_impl")


def _persists(name: str) -> bool:
    try:
        quotas_class_for(name, None, persistent=True)
    except ToolkitError:
        return False
    return True


# set / list / clear / reset outlive the command: where the kernel side keeps the quotas
PERSISTENT = [n for n in QUOTA_BACKENDS if _persists(n)]


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


def _engine_option(f):
    return click.option("--engine", type=click.Choice(engine_choices()), default=None,
                        help="eBPF engine (ebpf backend only): bcc or core; auto: for run "
                             "the engine that runs here, for set/list/clear/reset core "
                             "(its links and maps can be pinned).")(f)


def _say(cmd: str, side, kinds=("heap", "files")) -> None:
    """What was loaded, and what each quota given is checked by on this side."""
    if side.load_note:
        click.echo(f"quota {cmd}: {side.load_note}", err=True)
    cov = side.coverage()
    for kind in kinds:
        if kind in cov:
            click.echo(f"quota {cmd}: {kind} checked by {cov[kind]}", err=True)


def _kinds(h, f) -> tuple[str, ...]:
    return tuple(k for k, v in (("heap", h), ("files", f)) if v)


@click.group()
def quota():
    """Per-process heap and open-file quotas: SIGKILL from the kernel past them."""


@quota.command(context_settings={"ignore_unknown_options": True})
@_quota_options
@click.option("--backend", type=click.Choice(QUOTA_BACKENDS), default="lkm",
              show_default=True, help="Which kernel side enforces the quotas.")
@_engine_option
@lab_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(heap, files, backend, engine, lab, command):
    """Run COMMAND under quotas: `toolkit quota run --heap 64M --files 100 -- CMD...`.

    Exits with COMMAND's status (128 + N if a signal N killed it)."""
    if lab:
        rerun_in_lab()
    import os

    from .. import quota as q
    h, f = _limits(heap, files)
    argv = list(command)
    cls = quotas_class_for(backend, engine)
    if cls.startup_note:
        click.echo(f"quota run: {cls.startup_note}", err=True)
    # a side whose quotas die with this object (ebpf) holds them while we wait
    with cls(load=True) as enforcer:
        _say("run", enforcer, _kinds(h, f))
        pid = q.spawn_registered(argv, lambda child: enforcer.set(child, h, f))
        _, status = os.waitpid(pid, 0)
        kills = enforcer.kills(100)
        dropped = enforcer.counts().get("dropped")
        if dropped:
            click.echo(f"quota run: {dropped} kill records dropped (ring buffer full)",
                       err=True)
    click.echo(f"quota run: {argv[0]} (pid {pid}) {q.describe_status(status)}", err=True)
    for k in kills:
        click.echo(f"quota run: {q.describe_kill(k)}", err=True)
    sys.exit(q.exit_code(status))


def _persistent_option(f):
    f = _engine_option(f)
    return click.option("--backend", type=click.Choice(PERSISTENT), default=PERSISTENT[0],
                        show_default=True,
                        help="Which kernel side (one whose quotas outlive the command).")(f)


def _side(backend: str, engine: str | None, load: bool = False):
    return quotas_class_for(backend, engine, persistent=True)(load=load)


@quota.command("set")
@_quota_options
@_persistent_option
@click.argument("pid", type=int)
def set_(heap, files, backend, engine, pid):
    """Give the running process PID quotas (keys not given keep their value); loads the
    module or the pinned eBPF programs if they are not loaded."""
    from .. import quota as q
    h, f = _limits(heap, files)
    q.check_target(pid)
    with _side(backend, engine, load=True) as side:
        _say("set", side, _kinds(h, f))
        side.set(pid, h, f)
    click.echo(f"pid {pid}: " + q.limits_text(h, f))


@quota.command("clear")
@_persistent_option
@click.argument("pid", type=int)
def clear(backend, engine, pid):
    """Remove the quotas of PID."""
    from .. import quota as q
    if pid <= 0:
        raise q.QuotaError(f"pid {pid} is not a process id")
    with _side(backend, engine) as side:
        side.clear(pid)
    click.echo(f"pid {pid}: quotas cleared")


@quota.command("reset")
@_persistent_option
def reset(backend, engine):
    """Drop every quota; eBPF: detach and unpin the programs and maps as well."""
    with _side(backend, engine) as side:
        side.reset()
        removed = getattr(side, "removed", None)
    if removed is not None:
        click.echo("quota reset: " + (f"unpinned {', '.join(removed)}" if removed
                                      else "nothing was pinned"))
    else:
        click.echo("quota reset: every quota dropped")


@quota.command("list")
@_persistent_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per process.")
def list_(backend, engine, as_json):
    """The tracked processes, their heap and descriptors now, and their quotas."""
    import dataclasses
    import json

    from tabulate import tabulate
    with _side(backend, engine) as side:
        rows = list(side.entries().values())
        counts = side.counts()
        hooks = side.hooks
    if as_json:
        for r in rows:
            click.echo(json.dumps(dataclasses.asdict(r)))
        return
    dash = (lambda v: "-" if v is None else v)
    table = [(r.pid, dash(r.comm), dash(r.heap), r.heap_quota or "-", dash(r.files),
              r.files_quota or "-", r.state) for r in rows]
    click.echo(tabulate(table, headers=["pid", "comm", "heap B", "heap quota", "files",
                                        "file quota", "state"]))
    if hooks is None:
        click.echo("quota list: nothing loaded (no quotas set)", err=True)
    if counts.get("probes_missed"):
        click.echo(f"probes missed {counts['probes_missed']} hits (see docs/quota.md)",
                   err=True)
    if counts.get("dropped"):
        click.echo(f"kill records dropped: {counts['dropped']} (kill ring full)", err=True)
