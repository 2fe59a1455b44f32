"""`toolkit bench quota` through its CLI, small, in the lab on both kernels: every
mechanism (the module, BCC's and the CO-RE engine's quotas with the kprobe hook set,
RLIMIT_DATA / RLIMIT_NOFILE, cgroup v2's memory.max), one trial each, two cost rounds.
The table, the run directory's files and the overshoot figures: the three quota sides
kill at the crossing call, at most one heap step (1 MiB) or one descriptor past the
limit; the rlimits refuse it (overshoot <= 0, nobody killed); cgroup's OOM kill leaves
memory.peak at memory.max. The command runs in this interpreter (CliRunner): a new one
spent ~45 s importing before the bench started, under TCG."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_lkm import ensure_loaded  # noqa: E402

from test_bench_quota import run_cli  # noqa: E402
from toolkit.bench import quota as bq  # noqa: E402

pytestmark = pytest.mark.kernel
SIDES = ("lkm", "ebpf", "ebpf-core")


def test_bench_quota_every_mechanism(tmp_path):
    ensure_loaded(ring_size=16384, proc_gid=-1)
    assert bq.cgroup_available() is None, bq.cgroup_available()
    cp, enf, cost, summary = run_cli(tmp_path / "run", ",".join((*SIDES, "rlimit", "cgroup")),
                                     "--calls", "200", in_process=True)
    assert "left out" not in cp.stderr, cp.stderr
    assert set(enf) == {(m, s) for m in (*SIDES, "rlimit") for s in bq.SCENARIOS} | \
        {("cgroup", "heap-brk"), ("cgroup", "heap-mmap")}, enf
    for (mech, scen), v in enf.items():
        over = int(v["max"])
        if mech == "rlimit":
            assert (v["trials"], v["outcome"]) == ("1", "refused") and over <= 0, (scen, v)
            continue
        assert (v["trials"], v["outcome"]) == ("1", "killed"), (mech, scen, v)
        if mech == "cgroup":
            assert over == 0, (scen, v)
        elif scen == "files":
            assert over == 1, (mech, v)
        else:
            assert 0 < over <= bq.STEP_KIB * 1024, (mech, scen, v)
    assert [(c[0], c[1], c[2]) for c in cost] == \
        [(m, op, "2") for m in SIDES for op in bq.COST_OPS]
    assert (tmp_path / "run" / "cost.png").exists()
    assert all(e["death_ms_median"] > 0 for e in summary["enforcement"]
               if e["outcome"] == "killed")
