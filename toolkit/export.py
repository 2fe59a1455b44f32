"""`toolkit export`: one collector's counters as Prometheus metrics (prometheus_client).

Two threads share one backend without a lock on it: the *reader* (``Reader``) is the
only thread that calls the backend (read, stats, stop); the HTTP server's thread asks
the reader for fresh counters at each scrape (``Reader.fresh_stats``: the reader takes
``stats()`` between two reads, within a second) and the custom collector
(``ToolkitCollector``) turns that snapshot into metric families. Nothing is counted
twice: the counters are the backend's own (``Stats``), the exporter adds only what
needs the records themselves (short-lived processes, quota kills by kind).

Cardinality is bounded by construction: labels are the backend's fixed set (backend,
engine, probe), event types (TK_EVENT_TYPES, plus `untyped`), drop reasons (the fixed
REASONS), hook names (TK_HOOKS / the backend's programs) and quota kinds
(TK_QUOTA_KINDS). No pid, comm, uid or path is ever a label.
"""
from __future__ import annotations

import copy
import errno
import socket
import threading

from . import __version__, schema, sysinfo
from .errors import ToolkitError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 9464
DEFAULT_WINDOW_S = 15.0          # Prometheus's default scrape_interval
READ_TIMEOUT_S = 0.1
STATS_WAIT_S = 1.0
# Why an event was lost (toolkit_events_dropped_total's `reason`): what the `dropped`
# kind of TK_COUNTER_KINDS means for this backend (Stats.drop_reason: ring_full,
# socket_drops, seq_gaps), a hook that did not run (hook_missed: kprobe nmissed, BPF
# recursion misses) and records lost in user space after the kernel handed them over.
REASONS = ("ring_full", "socket_drops", "seq_gaps", "hook_missed", "read_lost")
UNTYPED = "untyped"


class ExportError(ToolkitError):
    """The exporter cannot serve (bad --listen, port taken) or its collector failed."""


def parse_listen(text: str) -> tuple[str, int]:
    """'ADDR:PORT', '[v6]:PORT' or ':PORT' (loopback) -> (host, port); port 0 picks one."""
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ExportError(f"--listen {text!r} is not ADDR:PORT",
                          f"e.g. --listen {DEFAULT_HOST}:{DEFAULT_PORT}")
    host = host.strip("[]") or DEFAULT_HOST
    return host, int(port)


def serve(host: str, port: int, registry):
    """Start the /metrics HTTP server (a daemon thread) -> (server, bound port)."""
    from prometheus_client import start_http_server
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        why = "the port is taken (another exporter?)" if e.errno == errno.EADDRINUSE \
            else (e.strerror or str(e))
        raise ExportError(f"cannot listen on {host}:{port}: {why}",
                          "choose another with --listen ADDR:PORT") from None
    except socket.gaierror as e:
        raise ExportError(f"cannot listen on {host}:{port}: {e}",
                          "--listen takes an address of this machine") from None
    return server, server.server_address[1]


class Tally:
    """What the exporter counts from the records themselves.

    Short-lived processes, as `toolkit top` defines them: a fork and its exit (the same
    (pid, start) key) inside one interval. Intervals are consecutive windows of
    `window_s` on the records' own clock (ts_ns), so a process counts once, in the
    window of its exit; forks are kept for two windows only (bounded memory).
    Quota kills: kill records (TK_EVENT_KILL) by quota kind (TK_QUOTA_KINDS)."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S):
        self.window_ns = max(1, int(window_s * 1e9))
        self.short_lived = 0
        self.kills: dict[str, int] = {}
        self._forks: dict[tuple, int] = {}
        self._window = None

    def feed(self, records) -> None:
        for r in records:
            w = r.ts_ns // self.window_ns
            if self._window is None or w > self._window:
                self._window = w
                self._forks = {k: v for k, v in self._forks.items() if v >= w - 1}
            name = r.event
            if name == "fork":
                self._forks[r.key] = w
            elif name == "exit":
                if self._forks.pop(r.key, None) == w:
                    self.short_lived += 1
            elif name == "kill":
                kind = schema.QUOTA_NAMES.get(getattr(r, "quota_kind", 0), "unknown")
                self.kills[kind] = self.kills.get(kind, 0) + 1


class Reader(threading.Thread):
    """Reads the started backend until stop(); the one thread that touches it."""

    def __init__(self, backend, tally: Tally):
        super().__init__(name="toolkit-export-reader", daemon=True)
        self.backend, self.tally = backend, tally
        self.error: BaseException | None = None
        self.stats = copy.deepcopy(backend.stats())
        self.reads = 0
        self._stop_ev = threading.Event()
        self._want = threading.Event()
        self._ready = threading.Condition()
        self._generation = 0
        self.lock = threading.Lock()      # guards tally and stats for the collector

    def run(self) -> None:
        try:
            while not self._stop_ev.is_set():
                got = self.backend.read(READ_TIMEOUT_S)
                self.reads += 1
                with self.lock:
                    self.tally.feed(got)
                if self._want.is_set():
                    self._refresh()
        except BaseException as e:      # reported by the main thread, not a traceback
            self.error = e
        finally:
            with self._ready:
                self._ready.notify_all()

    def _refresh(self) -> None:
        self._want.clear()
        st = copy.deepcopy(self.backend.stats())
        with self.lock:
            self.stats = st
        with self._ready:
            self._generation += 1
            self._ready.notify_all()

    def fresh_stats(self, timeout: float = STATS_WAIT_S):
        """The backend's counters taken after this call (stale ones after `timeout`,
        or if the reader has stopped), with the tally, consistently."""
        if self.is_alive():
            with self._ready:
                gen = self._generation
                self._want.set()
                self._ready.wait_for(lambda: self._generation != gen or not self.is_alive(),
                                     timeout)
        with self.lock:
            return self.stats, self.tally.short_lived, dict(self.tally.kills)

    def stop(self, timeout: float = 5.0):
        """Stop reading; the final counters (None if the reader did not stop in time)."""
        self._stop_ev.set()
        self.join(timeout)
        if self.is_alive():
            return None
        st = copy.deepcopy(self.backend.stats())
        with self.lock:
            self.stats = st
        return st


def drops_by_reason(stats) -> list[tuple[str, str, int]]:
    """The backend's losses as (type, reason, count), a partition: each lost event in
    exactly one row (lost_in_transport is already inside `dropped`, see base.Stats)."""
    out = [(t, getattr(stats, "drop_reason", "ring_full"), c.dropped)
           for t, c in stats.events.items()]
    hook_event = {name: ev for name, _sym, ev in schema.HOOKS}
    missed: dict[str, int] = {}
    for h in stats.hooks:
        ev = hook_event.get(h.name, UNTYPED)
        missed[ev] = missed.get(ev, 0) + h.missed
    out += [(t, "hook_missed", n) for t, n in missed.items()]
    out.append((UNTYPED, "read_lost", stats.read_lost))
    return out


def labels_of(backend, labels: dict) -> dict:
    """The series' labels: `engine` is the engine the backend runs (an --engine auto, or
    none given, says which it picked), where the backend has engines."""
    engine = getattr(backend, "engine", None) or labels.get("engine")
    out = {"backend": labels["backend"], **({"engine": engine} if engine else {})}
    return {**out, **{k: v for k, v in labels.items() if k not in out}}


def build_info(labels: dict) -> dict:
    return {**labels, "version": __version__, "record_version": str(schema.RECORD_VERSION),
            "kernel": sysinfo.release()}


class ToolkitCollector:
    """prometheus_client custom collector: the metric families at scrape time."""

    def __init__(self, reader: Reader, labels: dict):
        self.reader = reader
        self.labels = dict(labels)
        # the types the interface reports at all (Backend.event_types): no series of a
        # type it cannot see (taskstats and acct: exits only), never a zero that looks
        # like data
        types = getattr(reader.backend, "event_types", None)
        self.types = None if types is None else set(types) | {UNTYPED}
        self.names, self.values = list(self.labels), list(self.labels.values())

    def _family(self, kind, name: str, doc: str, extra: tuple = ()):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        return cls(name, doc, labels=self.names + list(extra))

    def collect(self):
        stats, short_lived, kills = self.reader.fresh_stats()
        yield from self._events(stats)
        yield from self._hooks_and_ring(stats)
        fam = self._family("counter", "toolkit_short_lived_processes",
                           "Processes whose fork and exit fell in one window "
                           "(--interval), as toolkit top counts them.")
        fam.add_metric(self.values, short_lived)
        yield fam
        if kills or stats.events.get("kill") and stats.events["kill"].seen:
            fam = self._family("counter", "toolkit_quota_kills",
                               "Processes killed for going over a quota.", ("kind",))
            for kind in schema.QUOTA_KINDS:
                fam.add_metric(self.values + [kind], kills.get(kind, 0))
            yield fam
        up = self._family("gauge", "toolkit_collector_up",
                          "1 while the collector reads its backend (or stopped cleanly), "
                          "0 once it failed.")
        up.add_metric(self.values, 0 if self.reader.error is not None else 1)
        yield up
        from prometheus_client.core import InfoMetricFamily
        info = InfoMetricFamily("toolkit_build", "Toolkit version, record version "
                                "(TK_RECORD_VERSION) and kernel release.")
        info.add_metric([], build_info(self.labels))
        yield info

    def _events(self, stats):
        total = self._family("counter", "toolkit_events",
                             "Events delivered by the backend, by type.", ("type",))
        filtered = self._family("counter", "toolkit_events_filtered",
                                "Events left out by the uid/parent filter.", ("type",))
        for t, c in self._typed(stats):
            if t != UNTYPED:
                total.add_metric(self.values + [t], c.delivered)
                filtered.add_metric(self.values + [t], c.filtered)
        dropped = self._family("counter", "toolkit_events_dropped",
                               "Events lost, by type and reason (each loss once).",
                               ("type", "reason"))
        for t, reason, n in drops_by_reason(stats):
            if self.types is None or t in self.types:
                dropped.add_metric(self.values + [t, reason], n)
        transport = self._family(
            "counter", "toolkit_events_lost_in_transport",
            "Losses the transport itself reported (perf lost samples, netlink socket "
            "drops); already counted in toolkit_events_dropped_total.")
        transport.add_metric(self.values, stats.lost_in_transport)
        yield from (total, filtered, dropped, transport)
        for key, name, doc in (("enobufs", "toolkit_netlink_enobufs",
                                "recv() calls that returned ENOBUFS (each: >= 1 loss)."),
                               ("seq_lost", "toolkit_netlink_seq_gap_messages",
                                "Messages missing from the per-CPU sequence numbers "
                                "(a cross-check of the socket drops).")):
            if isinstance(stats.extra.get(key), int):
                fam = self._family("counter", name, doc)
                fam.add_metric(self.values, stats.extra[key])
                yield fam

    def _typed(self, stats):
        return [(t, c) for t, c in stats.events.items()
                if self.types is None or t in self.types]

    def _hooks_and_ring(self, stats):
        if stats.hooks:
            runs = self._family("counter", "toolkit_hook_runs",
                                "Times each kernel hook (kprobe, BPF program) ran.", ("hook",))
            secs = self._family("counter", "toolkit_hook_seconds",
                                "Time spent in each kernel hook.", ("hook",))
            for h in stats.hooks:
                runs.add_metric(self.values + [h.name], h.count)
                secs.add_metric(self.values + [h.name], h.total_ns / 1e9)
            yield from (runs, secs)
        if stats.ring_size:
            cap = self._family("gauge", "toolkit_ring_capacity_records",
                               "Records the backend's ring or buffer holds.")
            cap.add_metric(self.values, stats.ring_size)
            fill = self._family("gauge", "toolkit_ring_fill_records",
                                "Records waiting in the ring now.")
            fill.add_metric(self.values, stats.ring_fill)
            yield from (cap, fill)


class LabelledProcessCollector:
    """prometheus_client's ProcessCollector (CPU seconds, RSS, fds, start time of this
    process) with the exporter's labels added to every sample."""

    def __init__(self, labels: dict):
        from prometheus_client import ProcessCollector
        self.inner = ProcessCollector(registry=None)
        self.labels = dict(labels)

    def collect(self):
        for fam in self.inner.collect():
            fam.samples = [s._replace(labels={**self.labels, **s.labels})
                           for s in fam.samples]
            yield fam


def new_registry():
    """An empty registry (no default collectors: those are registered by register())."""
    from prometheus_client import CollectorRegistry
    return CollectorRegistry(auto_describe=False)


def register(registry, reader: Reader, labels: dict) -> None:
    registry.register(ToolkitCollector(reader, labels))
    registry.register(LabelledProcessCollector(labels))
