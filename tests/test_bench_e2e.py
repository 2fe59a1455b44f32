"""A small native end-to-end run with --backend ps, summary.json's schema, and
`toolkit report` (re-render, compare, refuse unknown versions)."""
import json
import shutil

import pytest
from click.testing import CliRunner

from toolkit import report
from toolkit.cli import main

CAPTURE_KEYS = {"fork", "exec", "exit"}


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import os
    tmp = tmp_path_factory.mktemp("bench")
    os.environ["TOOLKIT_BUILD_DIR"] = str(tmp / "build")
    try:
        r = run("bench", "forkstorm", "--backend", "ps", "--ps-interval", "0.05,1",
                "--count", 60, "--repeat", 2, "--lifetime", "0,60", "--exec-every", 5,
                "--out", tmp / "run")
    finally:
        os.environ.pop("TOOLKIT_BUILD_DIR")
    assert r.exit_code == 0, r.output
    return tmp / "run", r.output


def test_run_directory_files(run_dir):
    d, out = run_dir
    for f in ("ledger.csv", "events-ps@0.05s.csv", "events-ps@1s.csv", "summary.json",
              "report.md", "capture-vs-lifetime.png"):
        assert (d / f).exists(), f
    assert not (d / ".work").exists()
    assert "capture fork" in out and "ps@0.05s" in out and f"run directory: {d}" in out
    # ledger: 2 lifetimes x 2 rounds x (none + 2 ps) storms of 60
    assert sum(1 for _ in open(d / "ledger.csv")) == 1 + 2 * 2 * 3 * 60


def test_summary_schema(run_dir):
    s = json.loads((run_dir[0] / "summary.json").read_text())
    from toolkit.bench import SCHEMA_HISTORY, SCHEMA_VERSION
    assert s["schema_version"] == SCHEMA_VERSION == max(SCHEMA_HISTORY)
    env = s["environment"]
    for k in ("kernel_release", "virtualization", "cpus", "toolkit_version", "record_version",
              "parameters"):
        assert k in env
    assert env["virtualization"] in ("native", "kvm", "tcg", "vm")
    assert env["parameters"]["count"] == 60 and env["parameters"]["lifetime_ms"] == [0, 60]
    assert set(s["truth"]) >= {"forks", "execs", "exits", "kernel_forks"}
    assert s["truth"]["forks"] == 720 and s["truth"]["execs"] == 144
    assert list(s["backends"]) == ["ps@0.05s", "ps@1s"]
    for b in s["backends"].values():
        assert set(b["capture"]) == CAPTURE_KEYS
        assert all(v is None or 0 <= v <= 1 for v in b["capture"].values())
        assert isinstance(b["dropped"], int) and isinstance(b["never_seen"], int)
        assert set(b["rss_error_pct"]) >= {"median", "p95"}
        assert set(b["latency_ms"]) >= {"p50", "p99"}
        assert set(b["overhead_pct"]) >= {"median", "ci95_low", "ci95_high"}
        assert "cpu_s_per_1k_events" in b and "ns_per_event" in b
        pm = b["ps_model"]
        assert pm["predicted_low"] <= pm["predicted_fork_capture"] <= pm["predicted_high"]
        assert 0 <= pm["scan_s"] <= pm["ps_wall_s"]
    # the sane-measurement check: 60 ms children, 50 ms polls are mostly caught,
    # 0 ms children at 1 s polls hardly ever; the model agrees with the measurement
    # (tolerances are loose: on a loaded host a ps scan slows down by 10x)
    by_lt = {e["lifetime_ms"]: e["backends"] for e in s["sweep"]}
    assert by_lt[0]["ps@1s"]["capture"]["fork"] < 0.5
    for lt, lb in ((0, "ps@0.05s"), (0, "ps@1s"), (60, "ps@1s")):
        e = by_lt[lt][lb]
        assert abs(e["capture"]["fork"] - e["predicted_fork_capture"]) < 0.25, (lt, lb, e)
    assert by_lt[60]["ps@0.05s"]["capture"]["fork"] >= by_lt[0]["ps@0.05s"]["capture"]["fork"]


def test_report_reproduces_the_table(run_dir):
    d, out = run_dir
    r = run("report", d)
    assert r.exit_code == 0, r.output
    s = report.load(d)
    assert report.table(s) in r.output and report.table(s) in out
    r = run("report", d, "--markdown")
    assert r.output.strip() == (d / "report.md").read_text().strip()


def test_report_compares_two_runs(run_dir, tmp_path):
    d, _ = run_dir
    other = tmp_path / "other"
    shutil.copytree(d, other)
    s = json.loads((other / "summary.json").read_text())
    s["backends"]["ps@1s"]["capture"]["fork"] = 0.5
    (other / "summary.json").write_text(json.dumps(s))
    r = run("report", d, other)
    assert r.exit_code == 0, r.output
    assert "→ 50.0%" in r.output


@pytest.mark.parametrize("version", [99, None, "1"])
def test_report_refuses_unknown_schema_versions(tmp_path, version):
    (tmp_path / "summary.json").write_text(json.dumps({"schema_version": version}))
    r = run("report", tmp_path)
    assert r.exit_code == 2
    assert "schema_version" in r.output and "not one this toolkit knows" in r.output
    assert "Traceback" not in r.output


def test_report_on_a_directory_without_a_run(tmp_path):
    r = run("report", tmp_path)
    assert r.exit_code == 2 and "no summary.json" in r.output


@pytest.mark.parametrize("args", [
    ["--backend", "nope"], ["--probe", "uprobe"], ["--ps-interval", "0"],
    ["--ps-interval", "x"], ["--lifetime", "-1"], ["--lifetime", "1.5"],
    ["--count", "0"], ["--buffer-pages", "3"],
])
def test_bad_bench_flags(args):
    r = run("bench", "forkstorm", "--backend", "ps", *args)
    assert r.exit_code == 2 and "rror" in r.output
