"""bench quota's summary and report, from synthetic trials (the runs are in the lab)."""
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
