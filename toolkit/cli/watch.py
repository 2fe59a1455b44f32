"""`toolkit watch` (live lifecycle events, then the drop counters) and `toolkit mem` (the
process table and system memory), on any backend."""
from __future__ import annotations

import dataclasses
import json
import signal
import time

import click

from .common import (backend_options, open_backend, options_for, rerun_in_lab,
                     snapshot_of, status_text)


WATCH_COLS = [("time_s", 10), ("event", 6), ("pid", 7), ("tgid", 7), ("ppid", 7), ("uid", 6),
              ("comm", 16), ("exit", 6), ("rss_kib", 9), ("peak_kib", 9), ("cpu_ms", 8)]


def _watch_row(rec, t0: int, provides=None) -> list:
    """One table row; a field the backend does not provide (Backend.provides) is "-"."""
    from .. import schema
    is_exit = rec.type == schema.EventType.EXIT

    def f(field, value, only_exit=False):
        if only_exit and not is_exit:
            return ""
        return "-" if provides is not None and field not in provides else value
    return [f"{(rec.ts_ns - t0) / 1e9:.3f}", rec.event, rec.pid, rec.tgid,
            f("ppid", rec.ppid), f("uid", rec.uid), f("comm", rec.comm),
            f("exit_code", status_text(rec.exit_code), True), f("rss_kib", rec.rss_kib, True),
            f("hiwater_rss_kib", rec.hiwater_rss_kib, True),
            f("cpu_ns", f"{rec.cpu_ns / 1e6:.1f}", True)]


def _json_record(rec, provides=None) -> dict:
    """The record as a dict; fields the backend does not provide are null."""
    from .. import schema
    d = schema.as_dict(rec)
    if provides is not None:
        d.update({k: None for k in schema.FIELD_NAMES if k not in provides})
    return d


@click.command()
@backend_options
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table",
              show_default=True, help="table for people, jsonl (one JSON object a line) for machines.")
@click.option("--duration", type=click.FloatRange(0, min_open=True),
              help="Stop after S seconds (default: until Ctrl-C).")
def watch(backend, probe, engine, uid, lab, fmt, duration):
    """Print live lifecycle events until Ctrl-C or --duration, then the drop counters."""
    opts = options_for(backend, probe, uid, engine)
    if lab:
        rerun_in_lab()
    b = open_backend(backend, **opts)
    t0 = time.monotonic_ns()
    click.echo(f"watch: {b.describe()} attached, " + (f"for {duration:g} s" if duration else
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
                    out.write(json.dumps(_json_record(rec, b.provides)) + "\n")
                else:
                    vals = _watch_row(rec, t0, b.provides)
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
def proc_dict(p, fields: frozenset[str] | None) -> dict:
    """One process-table row; a field the backend does not fill is None (null, "-")."""
    from ..backends.base import fills
    return {k: (v if fills(fields, k) else None) for k, v in dataclasses.asdict(p).items()}


@click.command()
@backend_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--sort", type=click.Choice(["rss", "pid", "cpu", "peak"]), default="rss",
              show_default=True)
@click.option("--top", type=click.IntRange(0), default=0, help="Only the first N rows (0: all).")
def mem(backend, probe, engine, uid, lab, fmt, sort, top):
    """Process table with RSS, peak RSS and CPU time, and the system memory summary."""
    opts = options_for(backend, probe, uid, engine)
    if lab:
        rerun_in_lab()
    from tabulate import tabulate

    from ..backends.base import registered_class
    snap = snapshot_of(backend, **opts)
    fields = registered_class(backend).snapshot_fields
    procs = [p for p in snap.processes if uid is None or p.uid == uid]
    key = {"rss": lambda p: -p.rss_kib, "pid": lambda p: p.pid, "cpu": lambda p: -p.cpu_ns,
           "peak": lambda p: -p.hiwater_rss_kib}[sort]
    procs.sort(key=key)
    if top:
        procs = procs[:top]
    rows = [proc_dict(p, fields) for p in procs]
    if fmt == "json":
        click.echo(json.dumps({"backend": backend, "source": snap.source,
                               "meminfo": dataclasses.asdict(snap.meminfo),
                               "processes": rows}, indent=1))
        return
    m = snap.meminfo
    click.echo(tabulate([[m.total_kib, m.used_kib, m.free_kib, m.buffers_kib, m.cached_kib,
                          m.available_kib]],
                        headers=["total_kib", "used_kib", "free_kib", "buffers_kib", "cached_kib",
                                 "available_kib"]))
    click.echo()
    click.echo(tabulate([[r["pid"], r["ppid"], r["uid"], r["state"], r["rss_kib"],
                          "-" if r["hiwater_rss_kib"] is None else r["hiwater_rss_kib"],
                          r["total_vm_kib"], f"{r['cpu_ns'] / 1e9:.2f}", r["threads"],
                          r["comm"]] for r in rows],
                        headers=["pid", "ppid", "uid", "state", "rss_kib", "peak_kib", "vm_kib",
                                 "cpu_s", "threads", "comm"]))
    click.echo("\nsource: " + "; ".join(f"{k} from {v}" for k, v in snap.source.items()))
