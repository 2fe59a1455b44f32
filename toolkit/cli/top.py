"""`toolkit top`: the live process dashboard, full screen or in batch mode."""
from __future__ import annotations

import sys

import click

from .common import backend_options, open_backend, options_for, rerun_in_lab

SORTS = ("cpu", "rss", "peak", "pid", "age")


@click.command()
@backend_options
@click.option("--interval", type=click.FloatRange(0, min_open=True), default=2.0,
              show_default=True, help="Seconds between refreshes (> 0).")
@click.option("--sort", type=click.Choice(SORTS), default="cpu", show_default=True,
              help="Table order: CPU % over the last interval, RSS, peak RSS, pid, age.")
@click.option("--batch", "force_batch", is_flag=True,
              help="Batch mode even on a terminal (automatic when stdout is not one).")
@click.option("--iterations", type=click.IntRange(1), default=None,
              help="Batch mode: stop after N refreshes (default: until Ctrl-C).")
@click.option("--once", is_flag=True, help="Batch mode, one refresh (--iterations 1).")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "csv"]),
              default="table", show_default=True, help="Batch mode output.")
@click.option("--limit", type=click.IntRange(0), default=0,
              help="Batch mode: only the first N processes of each refresh (0: all).")
def top(backend, probe, engine, uid, lab, interval, sort, force_batch, iterations, once, fmt,
        limit):
    """Live process dashboard: memory, lifecycle counters, drop counters, the processes
    that lived less than one refresh, and the process table by CPU % over the interval.

    Keys: q quit; c, m, n, p, a sort by cpu, rss, peak, pid, age; u set or clear a uid
    filter; space pause. Batch mode (like top -b) when stdout is not a terminal, or with
    --batch, --once or --iterations."""
    opts = options_for(backend, probe, uid, engine)
    if lab:
        rerun_in_lab()
    if once:
        iterations = 1
    batch_mode = (force_batch or iterations is not None or not sys.stdout.isatty()
                  or not sys.stdin.isatty())
    from ..backends.base import registered_class
    if registered_class(backend).polling:
        opts["interval"] = interval     # one poll per refresh
    from ..top.session import Session
    b = open_backend(backend, **opts)
    label = b.describe(short=True)
    try:
        session = Session(b, interval, uid)
        if "user space" in session.source.get("processes", "") and not b.polling:
            label += " (table: /proc)"      # e.g. the eBPF backend's /proc fallback, named
        if batch_mode:
            from ..top import batch
            batch.run(session, click.get_text_stream("stdout"), fmt, iterations, sort, limit)
        else:
            from ..top import render
            render.run(session, sort, label)
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()
