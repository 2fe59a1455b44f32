"""`toolkit export`: serve one collector's counters on /metrics for Prometheus."""
from __future__ import annotations

import json
import signal
import sys
import threading

import click

from .common import backend_options, open_backend, options_for


def _backend_option(text: str) -> tuple[str, object]:
    """-o KEY=VALUE -> (key, value): a whole number, true/false, or text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise click.BadParameter(f"{text!r} is not KEY=VALUE (e.g. rcvbuf=65536)",
                                 param_hint="--option")
    v: object = value.strip()
    if str(v).lstrip("-").isdigit():
        v = int(str(v))
    elif str(v).lower() in ("true", "false"):
        v = str(v).lower() == "true"
    return key.strip(), v


@click.command("export")
@backend_options
@click.option("--listen", default="127.0.0.1:9464", show_default=True,
              help="ADDR:PORT to serve /metrics on (port 0: any free one); loopback by "
                   "default, see docs/export.md before opening it to the network.")
@click.option("--ppid", type=click.IntRange(1), default=None,
              help="Only the children of this process (backends with a parent filter).")
@click.option("--interval", type=click.FloatRange(0, min_open=True), default=15.0,
              show_default=True,
              help="Seconds of a short-lived window: a process whose fork and exit fall "
                   "in one window counts as short-lived (set it to your scrape interval).")
@click.option("-o", "--option", "raw_options", multiple=True, metavar="KEY=VALUE",
              help="A backend option, e.g. -o rcvbuf=65536 (cnproc), -o ring_size=64 (lkm), "
                   "-o buffer_pages=1 (ebpf). Repeatable.")
@click.option("--linger", type=click.FloatRange(0), default=0.0, show_default=True,
              help="After SIGTERM or Ctrl-C, serve the final counters for S more seconds "
                   "(the backend already detached), so a last scrape sees them; a second "
                   "signal ends it at once.")
def export(backend, probe, uid, lab, engine, listen, ppid, interval, raw_options, linger):
    """Serve the backend's counters as Prometheus metrics on http://ADDR:PORT/metrics
    until SIGTERM or Ctrl-C, then print the final counters.

    Events by type, drops by type and reason, hook runs and time, ring capacity and
    fill, short-lived processes, quota kills, the exporter's own CPU and RSS, build
    info; labels: backend (engine, probe where set), never a pid. See docs/export.md."""
    from .. import export as ex
    if lab:
        raise click.UsageError("export serves on this machine; --lab is not supported "
                               "(run the exporter inside the VM instead)")
    host, port = ex.parse_listen(listen)
    opts = options_for(backend, probe, uid, engine)     # --engine: the eBPF engine
    opts.update(dict(_backend_option(o) for o in raw_options))
    labels = {"backend": backend, **({"engine": engine} if engine else {}),
              **({"probe": probe} if probe else {})}
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        _serve(ex, backend, opts, labels, (host, port), ppid, interval, stop, linger)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _serve(ex, name, opts, labels, addr, ppid, interval, stop, linger=0.0) -> None:
    """Bind, start the backend, read it and serve until `stop`; everything undone in
    every case. The port comes first: a taken port fails before any module loads."""
    registry = ex.new_registry()
    server, bound = ex.serve(*addr, registry)
    b, final = None, None
    try:
        b = open_backend(name, **opts)
        if ppid is not None:
            b.set_ppid_filter(ppid)
        b.reset_stats()
        labels = ex.labels_of(b, labels)
        reader = ex.Reader(b, ex.Tally(interval))
        ex.register(registry, reader, labels)
        reader.start()
        host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        click.echo(f"export: {', '.join(f'{k} {v}' for k, v in labels.items())}: serving "
                   f"http://{host}:{bound}/metrics (SIGTERM or Ctrl-C stops)", err=True)
        while not stop.wait(0.5) and reader.is_alive():
            pass
        if reader.error is None:
            final = reader.stop()
        if reader.error is not None:
            err = reader.error
            raise err if isinstance(err, ex.ToolkitError) else ex.ExportError(
                f"the collector failed: {err}")
        if final is None:
            raise ex.ExportError("the collector did not stop within 5 s")
        b.stop()
        b = None
        _final_report(final, reader.tally)
        if linger:
            stop.clear()
            stop.wait(linger)
    finally:
        server.shutdown()
        server.server_close()
        if b is not None:
            b.stop()


def _final_report(stats, tally) -> None:
    click.echo(f"export: stopped; delivered "
               f"{sum(c.delivered for c in stats.events.values())}, dropped {stats.dropped}, "
               f"hook missed {stats.missed}, lost on read {stats.read_lost}, short-lived "
               f"{tally.short_lived}", err=True)
    if not sys.stderr.isatty():     # the journal, a file: the counters for machines too
        click.echo(json.dumps({"final_stats": stats.as_dict(), "short_lived": tally.short_lived,
                               "quota_kills": tally.kills}, default=str), err=True)
