"""`toolkit bench memgrowth` on the committed reference run (captured in the lab): the
CSV reads back, the findings hold, the report and the plot render; memapp's script."""
from __future__ import annotations

import subprocess

import pytest

from toolkit import paths
from toolkit.bench import memgrowth as M
from toolkit.errors import BenchError

REF = paths.RESULTS_DIR / "reference" / "memgrowth-tcg"


@pytest.fixture
def steps():
    return M.read_csv(REF / "steps.csv")


def test_reference_findings(steps):
    f = M.findings(steps)
    assert f["heap_growth_small"] >= f["bytes_malloced_small"] == 8 * 64 * 1024
    assert f["heap_move_1mib"] == 0 and f["vm_added_1mib_kib"] >= 1024
    stacks = [s for _, s in f["stack_by_depth"]]
    assert stacks == sorted(stacks) and stacks[-1] > stacks[0]
    assert f["disagreements_with_proc"] == []


def test_report_and_plot(steps, tmp_path):
    f = M.findings(steps)
    text = M.report(steps, f, "lkm", {"kernel": "6.1.0-56-amd64"})
    assert "moved brk by 0 bytes" in text and "![memgrowth](memgrowth.png)" in text
    M.plot(steps, tmp_path / "p.png", "lkm")
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_bad_step_line():
    with pytest.raises(BenchError):
        M._parse_step("hello")


def test_memapp_script_runs_natively():
    """memapp itself needs no kernel backend: its script, step by step."""
    from toolkit.bench.workload import build
    out = subprocess.run([str(build().memapp)], input="\n" * 100, capture_output=True,
                         text=True, timeout=60).stdout.splitlines()
    assert out[-1] == "done"
    steps = [M._parse_step(line) for line in out[:-1]]
    assert [n for n, _, _ in steps] == list(range(len(steps)))
    by = {name: f for _, name, f in steps}
    assert by["malloc-small-8"]["small"] == 8 * 64 * 1024
    assert by["malloc-1MiB"]["big"] == 1 << 20 and by["recurse-1024"]["depth"] == 4 << 20


def test_compare_backends(steps, tmp_path):
    """--backend lkm,ebpf: the layout figures compared step by step, and the report."""
    import dataclasses
    same = {"lkm": steps, "ebpf": [dataclasses.replace(s) for s in steps]}
    assert M.compare(same) == []
    moved = [dataclasses.replace(s, heap=s.heap + 4096) if s.name == "start" else s
             for s in steps]
    diffs = M.compare({"lkm": steps, "ebpf": moved})
    assert diffs == [{"step": "start", "field": "heap", "lkm": steps[0].heap,
                      "ebpf": steps[0].heap + 4096}]
    text = M.compare_report(same, [], {"kernel": "6.1.0-56-amd64"})
    assert "are equal at every step" in text and "![ebpf](ebpf/memgrowth.png)" in text
    assert "1 differences" in M.compare_report({"lkm": steps, "ebpf": moved}, diffs,
                                               {"kernel": "x"})
