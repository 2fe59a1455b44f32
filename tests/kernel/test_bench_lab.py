"""`toolkit bench forkstorm` for real, in the lab: lkm, ebpf and ebpf-core against the
ledger.

Sized for QEMU TCG (about 250 forks/s, 13 exec/s, ~25 s per BCC compile). Never skipped.
"""
import json
import os

import pytest
from click.testing import CliRunner

from toolkit import paths
from toolkit.cli import main

pytestmark = pytest.mark.kernel


def bench(name, *args):
    # the lab kernels run at once (bin/test): each its own directory
    out = paths.RESULTS_DIR / ".test" / f"bench-{name}-{os.uname().release}-{os.getpid()}"
    r = CliRunner().invoke(main, ["bench", "forkstorm", *map(str, args), "--out", str(out)])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 0, r.output
    return json.loads((out / "summary.json").read_text()), out


def test_lkm_and_ebpf_catch_every_child():
    s, out = bench("small", "--backend", "lkm,ebpf,ps", "--engine", "bcc,core",
                   "--ps-interval", "1", "--count", 80, "--exec-every", 8, "--repeat", 1,
                   "--concurrency", 4)
    assert s["environment"]["in_lab"]
    assert s["truth"]["execs"] == 50    # 5 storms: none, lkm, ebpf, ebpf-core, ps@1s
    for lb in ("lkm", "ebpf", "ebpf-core"):
        b = s["backends"][lb]
        assert b["truth"] == {"fork": 80, "exec": 10, "exit": 80}
        assert b["capture"] == {"fork": 1.0, "exec": 1.0, "exit": 1.0}, (lb, b)
        assert b["dropped"] == 0 and b["never_seen"] == 0
        assert b["exit_code_agreement"] == 1.0
        # on Debian's 6.1 the exit record's RSS is ~15% above the child's own VmRSS read
        # just before _exit (both backends; see the bench report); bound it, do not hide it
        assert b["rss_error_pct"]["median"] is not None and b["rss_error_pct"]["median"] < 30
        assert b["ns_per_event"] and b["ns_per_event"] > 0
        assert b["latency_ms"]["p50"] is not None and b["latency_ms"]["p50"] >= 0
        assert (out / f"events-{lb}.csv").exists()
    ps = s["backends"]["ps@1s"]
    assert ps["capture"]["fork"] < 0.5
    # the measurement agrees with the model: within 10 points of its band (the point
    # estimate and the [low, high] bounds differ by how long ps takes to read /proc)
    pm, got = ps["ps_model"], ps["capture"]["fork"]
    assert pm["predicted_low"] <= pm["predicted_fork_capture"] <= pm["predicted_high"]
    assert pm["predicted_low"] - 0.10 <= got <= pm["predicted_high"] + 0.10, pm


def test_tiny_ring_drops_are_counted_and_explain_every_miss():
    # the module's smallest ring (16 records), one ring-buffer page (~39 records) for eBPF,
    # a reader that sleeps 2 s between reads, and the backends scoped to the storm's
    # children (a parent filter in the kernel), so every drop concerns the ledger
    s, _ = bench("tiny", "--backend", "lkm,ebpf", "--engine", "bcc,core", "--ring-size", 16,
                 "--buffer-pages", 1, "--read-interval", 2, "--count", 150,
                 "--exec-every", 0, "--concurrency", 8, "--repeat", 1, "--scope", "children")
    for lb in ("lkm", "ebpf", "ebpf-core"):
        b = s["backends"][lb]
        assert b["dropped"] > 0, (lb, b)
        assert b["never_seen"] == 0 and b["unmatched"] == {"fork": 0, "exec": 0, "exit": 0}
        # misses == counted drops, per event type, exactly
        for t in ("fork", "exec", "exit"):
            assert b["missed"][t] == b["dropped_by_type"][t], (lb, t, b["missed"],
                                                               b["dropped_by_type"])
        # the storm process's own exec and exit (its parent is the harness) were filtered
        assert b["filtered_by_type"]["exit"] >= 1, (lb, b["filtered_by_type"])
        assert b["misses_equal_drops"]


def test_whole_machine_scope_bounds_drops_by_what_the_hooks_saw():
    # recording everything: drops beyond the ledger's misses are other processes' events
    # (at least the storm process's own exit), never more than the hooks saw of them
    s, _ = bench("tiny-system", "--backend", "lkm", "--ring-size", 16, "--read-interval", 2,
                 "--count", 60, "--exec-every", 0, "--concurrency", 8, "--repeat", 1)
    b = s["backends"]["lkm"]
    assert b["never_seen"] == 0 and b["dropped"] > 0
    for t in ("fork", "exec", "exit"):
        assert 0 <= b["dropped_other"][t] <= b["seen_other"][t], (t, b)
