"""`toolkit lkm ...`: build, load, unload and inspect the kprobe kernel module.

Errors are BackendErrors, printed by the CLI's one handler (toolkit/cli/__init__.py).
"""
from __future__ import annotations

import click


@click.group()
def lkm():
    """The kprobe kernel module (lkm/toolkit_lkm.ko) and /proc/toolkit."""


@lkm.command()
@click.option("--release", default=None, help="kernel release to build for (default: running)")
@click.option("--force", is_flag=True, help="rebuild even if the sources are unchanged")
@click.option("--for-lab", is_flag=True,
              help="build into results/.build/<release>/lkm, where the lab VM finds it "
                   "(saves minutes of compiling under TCG)")
def build(release, force, for_lab):
    """Build toolkit_lkm.ko into the build directory."""
    from ..backends import lkm as mod
    rel = release or mod.release()
    ko = mod.build(rel, force=force, into=mod.lab_build_dir(rel) if for_lab else None)
    click.echo(str(ko))


@lkm.command()
@click.option("--ring-size", type=int, default=None, help="ring capacity, records (16..1048576)")
@click.option("--proc-gid", type=int, default=None, help="group that may read /proc/toolkit")
def load(ring_size, proc_gid):
    """Build if needed and insmod the module."""
    from ..backends import lkm as mod
    ko = mod.load(ring_size=ring_size, proc_gid=proc_gid)
    click.echo(f"loaded {ko} {mod.loaded_params()}")


@lkm.command()
def unload():
    """rmmod the module."""
    from ..backends import lkm as mod
    click.echo("unloaded" if mod.unload() else f"{mod.MODULE} was not loaded")


@lkm.command()
def status():
    """Is it loaded, with which parameters, and its counters."""
    from tabulate import tabulate

    from ..backends import lkm as mod
    st = mod.status()
    rows = [("module", st["module"]), ("kernel", st["release"]),
            ("loaded", "yes" if st["loaded"] else "no"),
            ("params", " ".join(f"{k}={v}" for k, v in st["params"].items()) or "-"),
            ("built", st["ko"] or "no")]
    s = st.get("stats")
    if s is not None:
        rows += [("ring", f"{s.ring_fill}/{s.ring_size} queued"),
                 ("read_lost", s.read_lost), ("cleared", s.extra.get("cleared", 0)),
                 *((f, "off" if s.extra.get(f) is None else s.extra[f])
                   for f in ("uid_filter", "ppid_filter")),
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
