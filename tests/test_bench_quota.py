"""bench quota's summary and report, from synthetic trials; rlimit through the CLI natively
(every mechanism through the CLI in the lab: tests/kernel/test_bench_quota_lab.py)."""
import pytest

from toolkit.bench import quota as bq


def _trials():
    T = bq.Trial
    return [T("lkm", "heap-brk", 0, 100, "killed", 512, 5.0, 612),
            T("lkm", "heap-brk", 1, 100, "killed", 256, 7.0, 356),
            T("rlimit", "files", 0, 30, "refused", 0, None, None)]


def _cost():
    rows = []
    for r in range(4):
        for state, base in (("off", 100.0), ("on", 150.0 + r)):
            rows.append({"mechanism": "lkm", "round": r, "state": state,
                         **{op: base for op in bq.COST_OPS}})
    return rows


def test_summary_enforcement_and_paired_cost():
    s = bq.summarize(_trials(), _cost())
    (lkm, rl) = s["enforcement"]
    assert (lkm["mechanism"], lkm["outcome"], lkm["overshoot_max"]) == ("lkm", "killed", 512)
    assert lkm["overshoot_median"] == 384 and lkm["death_ms_median"] == 6.0
    assert rl["outcome"] == "refused" and rl["death_ms_median"] is None
    brk = [c for c in s["cost"] if c["op"] == "brk"][0]
    assert brk["rounds"] == 4 and brk["added_ns"] == 51.5 and brk["ci_low"] <= 51.5 <= brk["ci_high"]


def test_report_and_plot(tmp_path):
    s = bq.summarize(_trials(), _cost())
    s["params"] = {"kernel": "6.1", "trials": 2, "rounds": 4, "cost_calls": 10,
                   "step_kib": 1024, "files_margin": 20}
    md = bq.report_md(s)
    assert "| lkm" in md and "killed" in md and "cost.png" in md
    bq.plot(s, tmp_path / "cost.png")
    assert (tmp_path / "cost.png").stat().st_size > 1000


def test_state_layout_matches_the_workload():
    src = (bq.BENCH_DIR / "quotaload.c").read_text()
    body = src[src.index("struct state {"):src.index("};", src.index("struct state {"))]
    assert body.count("uint64_t ") == 6 == len(bq._STATE.unpack(bytes(bq._STATE.size)))


def run_cli(out, mechanisms, *extra, in_process=False):
    """`toolkit bench quota` as a user runs it: its two tables (rows split on the
    columns' 2+ blanks), its stderr, and the run directory's summary. `in_process`: the
    same command line through click's CliRunner, in this interpreter (under TCG a new
    one costs ~45 s before the bench starts: pandas' import alone took 31 s on 6.12)."""
    import json
    import re
    import subprocess
    import sys
    from pathlib import Path
    argv = ["bench", "quota", "--mechanism", mechanisms, "--trials", "1", "--rounds", "2",
            *extra, "--out", str(out)]
    if in_process:
        from click.testing import CliRunner

        from toolkit.cli import main
        r = CliRunner().invoke(main, argv)
        assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
        cp = subprocess.CompletedProcess(argv, r.exit_code, r.stdout, r.stderr)
    else:
        toolkit = Path(sys.executable).parent / "toolkit"
        cp = subprocess.run([str(toolkit), *argv], capture_output=True, text=True,
                            timeout=600)
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert cp.stdout.rstrip().endswith(f"run directory: {out}"), cp.stdout
    enf_text, cost_text = cp.stdout.split("\n\n")[:2]
    rows = [re.split(r"\s{2,}", line.strip()) for line in enf_text.splitlines()[2:]]
    enf = {(r[0], r[1]): dict(zip(["trials", "outcome", "median", "max", "unit"], r[2:7]))
           for r in rows}
    cost = [re.split(r"\s{2,}", line.strip()) for line in cost_text.splitlines()[2:]]
    assert {"trials.csv", "cost.csv", "summary.json", "report.md"} <= \
        {f.name for f in out.iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    # the table is the summary's
    assert [(e["mechanism"], e["scenario"], e["outcome"], e["overshoot_max"])
            for e in summary["enforcement"]] == \
        [(m, s, v["outcome"], int(v["max"])) for (m, s), v in enf.items()]
    return cp, enf, cost, summary


def test_cli_rlimit_natively(tmp_path):
    """The kernel's own RLIMIT_DATA / RLIMIT_NOFILE need no module: natively, through
    the CLI, each limit refuses the crossing call (overshoot <= 0, nobody killed). The
    module, BCC and cgroup need the lab: tests/kernel/test_bench_quota_lab.py."""
    import os
    if os.geteuid() != 0:
        pytest.skip("bench quota needs root")
    _, enf, cost, summary = run_cli(tmp_path / "run", "rlimit", "--calls", "10")
    assert set(enf) == {("rlimit", s) for s in bq.SCENARIOS}, enf
    for (_, scen), v in enf.items():
        assert (v["trials"], v["outcome"]) == ("1", "refused"), (scen, v)
        assert int(v["max"]) <= 0 and v["unit"] == ("descriptors" if scen == "files"
                                                   else "bytes"), (scen, v)
    assert cost == [] and summary["cost"] == []         # rlimit has no per-call cost
