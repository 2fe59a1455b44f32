"""`toolkit export` on the kernel backends (lkm, ebpf) in the lab, scraped by a real
Prometheus (the host's Debian package, seen through the lab's root): a storm filtered to
its parent in the kernel, its reader stopped (SIGSTOP) so a tiny ring overflows, must be
accounted exactly (delivered + ring_full drops = the storm's children), and Prometheus's
last toolkit_events_dropped_total must be the backend's own drop counter. Small for TCG:
one exporter per backend (one BCC compile), 150 children."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from promstack import settled, stack, storm  # noqa: E402,F401

pytestmark = pytest.mark.kernel

N = 150


@pytest.mark.parametrize("backend,tiny", [("lkm", "ring_size=32"), ("ebpf", "buffer_pages=1")])
def test_storm_accounted_and_ring_drops_reach_prometheus(backend, tiny, stack, storm):
    s = storm(N)
    exp, prom = stack("--backend", backend, "--ppid", str(s.pid), "-o", tiny,
                      "--interval", "600", "--linger", "5")
    assert prom.query("toolkit_ring_capacity_records") > 0
    exp.proc.send_signal(signal.SIGSTOP)         # the reader stops: the ring fills
    try:
        s.go()
    finally:
        exp.proc.send_signal(signal.SIGCONT)
    for t in ("fork", "exit"):
        settled(prom, f'sum(toolkit_events_total{{type="{t}"}}) + sum(toolkit_events_dropped_'
                f'total{{type="{t}",reason="ring_full"}})', at_least=N)
        got = prom.query(f'toolkit_events_total{{type="{t}"}}')
        lost = prom.query(f'toolkit_events_dropped_total{{type="{t}",reason="ring_full"}}')
        missed = prom.query(f'sum(toolkit_events_dropped_total{{type="{t}",reason="hook_missed"}})')
        assert got + lost == N, f"{t}: {got} delivered + {lost} dropped (missed {missed})"
        assert lost > 0, f"{t}: the stopped reader's ring lost nothing"
    assert prom.query("sum(toolkit_hook_runs_total)") > 0
    final = exp.stop()["final_stats"]
    expr = "sum(last_over_time(toolkit_events_dropped_total{reason='ring_full'}[2m]))"
    assert prom.query(expr) == final["dropped"]
    assert final["events"]["fork"]["delivered"] + final["events"]["fork"]["dropped"] == N
