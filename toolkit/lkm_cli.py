"""`toolkit lkm ...`: build, load, unload and inspect the kprobe kernel module.

Registered in toolkit/cli.py with ``from .lkm_cli import lkm; main.add_command(lkm)``.
Errors print one line and a hint, and exit non-zero; never a traceback.
"""
from __future__ import annotations

import functools
import sys

import click

from .backends.base import BackendError


def _errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BackendError as e:
            msg = str(e).splitlines() or ["error"]
            click.echo(f"error: {msg[0]}", err=True)
            for line in msg[1:]:
                click.echo(f"  {line}", err=True)
            if e.hint:
                click.echo(f"hint: {e.hint}", err=True)
            sys.exit(1)
        except (OSError, ValueError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
    return wrapper


@click.group()
def lkm():
    """The kprobe kernel module (lkm/toolkit_lkm.ko) and /proc/toolkit."""


@lkm.command()
@click.option("--release", default=None, help="kernel release to build for (default: running)")
@click.option("--force", is_flag=True, help="rebuild even if the sources are unchanged")
@click.option("--for-lab", is_flag=True,
              help="build into results/.build/<release>/lkm, where the lab VM finds it "
                   "(saves minutes of compiling under TCG)")
@_errors
def build(release, force, for_lab):
    """Build toolkit_lkm.ko into the build directory."""
    from .backends import lkm as mod
    rel = release or mod.release()
    ko = mod.build(rel, force=force, into=mod.lab_build_dir(rel) if for_lab else None)
    click.echo(str(ko))


@lkm.command()
@click.option("--ring-size", type=int, default=None, help="ring capacity, records (16..1048576)")
@click.option("--proc-gid", type=int, default=None, help="group that may read /proc/toolkit")
@_errors
def load(ring_size, proc_gid):
    """Build if needed and insmod the module."""
    from .backends import lkm as mod
    ko = mod.load(ring_size=ring_size, proc_gid=proc_gid)
    click.echo(f"loaded {ko} {mod.loaded_params()}")


@lkm.command()
@_errors
def unload():
    """rmmod the module."""
    from .backends import lkm as mod
    click.echo("unloaded" if mod.unload() else f"{mod.MODULE} was not loaded")


@lkm.command()
@_errors
def status():
    """Is it loaded, with which parameters, and its counters."""
    from tabulate import tabulate

    from .backends import lkm as mod
    st = mod.status()
    rows = [("module", st["module"]), ("kernel", st["release"]),
            ("loaded", "yes" if st["loaded"] else "no"),
            ("params", " ".join(f"{k}={v}" for k, v in st["params"].items()) or "-"),
            ("built", st["ko"] or "no")]
    s = st.get("stats")
    if s is not None:
        rows += [("ring", f"{s.ring_fill}/{s.ring_size} queued"),
                 ("read_lost", s.read_lost), ("cleared", s.extra.get("cleared", 0)),
                 ("uid_filter", "off" if s.extra.get("uid_filter", -1) < 0
                  else s.extra["uid_filter"]),
                 ("events", ",".join(s.extra.get("events", [])) or "none")]
    if "error" in st:
        rows.append(("error", st["error"]))
    click.echo(tabulate(rows, tablefmt="plain"))
    if s is not None:
        click.echo()
        click.echo(tabulate([(n, c.seen, c.filtered, c.delivered, c.dropped)
                             for n, c in s.events.items()],
                            headers=["event", "seen", "filtered", "delivered", "dropped"]))
        click.echo()
        click.echo(tabulate([(h.name, h.count, h.total_ns,
                              f"{h.ns_per_call:.0f}" if h.ns_per_call else "-", h.missed)
                             for h in s.hooks],
                            headers=["hook", "count", "total_ns", "ns/call", "missed"]))
