"""`toolkit bench quota` through its CLI, small, in the lab: the module (no compile) and
cgroup v2's memory.max, one trial each, two cost rounds. The table, the run directory's
files and the overshoot figures: the module kills at the crossing call, at most one heap
step (1 MiB) or one descriptor past the limit; cgroup's OOM kill leaves memory.peak at
memory.max. (eBPF is left out: a BCC compile costs 50-90 s under TCG; rlimit runs
natively in tests/test_bench_quota.py.) The command runs in this interpreter
(CliRunner): a new one spent ~45 s importing before the bench started, under TCG."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_lkm import ensure_loaded  # noqa: E402

from test_bench_quota import run_cli  # noqa: E402
from toolkit.bench import quota as bq  # noqa: E402

pytestmark = pytest.mark.kernel


def test_bench_quota_lkm_and_cgroup(tmp_path):
    ensure_loaded(ring_size=16384, proc_gid=-1)
    assert bq.cgroup_available() is None, bq.cgroup_available()
    cp, enf, cost, summary = run_cli(tmp_path / "run", "lkm,cgroup", "--calls", "200",
                                     in_process=True)
    assert "left out" not in cp.stderr, cp.stderr
    assert set(enf) == {("lkm", s) for s in bq.SCENARIOS} | \
        {("cgroup", "heap-brk"), ("cgroup", "heap-mmap")}, enf
    for (mech, scen), v in enf.items():
        assert (v["trials"], v["outcome"]) == ("1", "killed"), (mech, scen, v)
        over = int(v["max"])
        if mech == "cgroup":
            assert over == 0, (scen, v)
        elif scen == "files":
            assert over == 1, v
        else:
            assert 0 < over <= bq.STEP_KIB * 1024, (scen, v)
    assert [(c[0], c[1], c[2]) for c in cost] == [("lkm", op, "2") for op in bq.COST_OPS]
    assert (tmp_path / "run" / "cost.png").exists()
    assert all(e["death_ms_median"] > 0 for e in summary["enforcement"])
