"""The fork-storm workload: builds warning-free, and its ledger is the truth it claims."""
import json
import subprocess

import pytest

from toolkit.bench import workload
from toolkit.bench.ledger import read_ledger


@pytest.fixture(scope="module")
def bins(tmp_path_factory):
    import os
    d = tmp_path_factory.mktemp("build")
    old = os.environ.get("TOOLKIT_BUILD_DIR")
    os.environ["TOOLKIT_BUILD_DIR"] = str(d)
    try:
        yield workload.build()
    finally:
        if old is None:
            os.environ.pop("TOOLKIT_BUILD_DIR")
        else:
            os.environ["TOOLKIT_BUILD_DIR"] = old


def test_sources_compile_without_warnings(tmp_path):
    from toolkit.paths import BENCH_DIR
    for name, srcs in workload.SOURCES.items():
        p = subprocess.run(["gcc", *workload.CFLAGS, "-o", str(tmp_path / name),
                            *(str(BENCH_DIR / s) for s in srcs)], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0 and p.stderr == "", p.stderr


def test_ledger_is_complete_and_consistent(bins, tmp_path):
    ledger = tmp_path / "l.csv"
    params = workload.StormParams(count=40, concurrency=3, lifetime_ms=1, exec_every=4,
                                  threads=2, alloc_mib=4)
    p = subprocess.run(params.argv(bins, ledger), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    s = workload.parse_summary(p.stdout)
    rows = read_ledger(ledger)
    assert s["count"] == 40 and len(rows) == 40 and s["fork_errors"] == 0
    # the kernel's own counter saw at least our forks and threads
    assert s["kernel_forks_after"] - s["kernel_forks_before"] >= 40 * 3
    for r in rows.itertuples():
        assert r.fork_ns <= r.forked_ns <= r.reap_ns
        assert r.fork_ns < r.exit_ns <= r.reap_ns
        assert r.exit_ns - r.fork_ns >= 1_000_000            # lived its lifetime
        assert r.exit_status == (r.idx % 7) << 8               # exit codes vary
        assert r.exec == int(r.idx % 4 == 0) and r.threads == 2
        assert r.hwm_kib >= r.rss_kib >= 4 * 1024              # touched 4 MiB, exec'd too
    assert rows["pid"].nunique() == 40


def test_build_is_cached(bins):
    assert workload.build() == bins


def test_summary_line_errors():
    with pytest.raises(workload.WorkloadError):
        workload.parse_summary("garbage\n")
    assert workload.parse_summary('x\n{"pid": 1}\n') == {"pid": 1}
    json.dumps(workload.StormParams().__dict__)
