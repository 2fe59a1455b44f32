"""`toolkit inspect`: parsing the module's /proc/toolkit/vm text, the check against /proc,
rendering, and the CLI's bad-input errors; on text captured in the lab (one process's
vm text between two samples of its /proc/PID/{status,stat,maps})."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit import sysinfo
from toolkit.cli import main
from toolkit.inspect import check, render
from toolkit.inspect.layout import LayoutError, parse_layout

DATA = Path(__file__).parent / "data" / "inspect"


def sample(which: str) -> check.ProcSample:
    return check.ProcSample(sysinfo.parse_status((DATA / f"{which}.status").read_text()),
                            sysinfo.proc_stat_addresses((DATA / f"{which}.stat").read_text()),
                            sysinfo.parse_maps((DATA / f"{which}.maps").read_text()))


@pytest.fixture
def layout():
    return parse_layout((DATA / "vm.txt").read_text())


def test_parse_captured(layout):
    assert layout.tgid == layout.tid and layout.comm == "python"
    assert layout.page_size == 4096 and layout.paging_levels in (4, 5)
    code = layout.regions["code"]
    assert 0 < code[0] < code[1]
    sv = layout.regions["stack_vma"]
    assert sv[0] <= layout.regions["stack"][0] < sv[1]      # start_stack inside its VMA
    assert layout.counters["map_count"] == len(layout.vmas)
    names = {v.name for v in layout.vmas}
    assert {"[heap]", "[stack]", "[vdso]", "anon"} <= names
    assert all(v.start < v.end for v in layout.vmas)
    assert layout.pgd and all(e.start <= e.last and "present" in e.flags for e in layout.pgd)
    assert layout.vma_outside_pgd() == []


def test_check_captured_agrees(layout):
    rows = check.check(layout, sample("before"), sample("after"))
    assert len(rows) > 20
    assert [r for r in rows if not r.agree] == []


def test_check_reports_a_difference(layout):
    layout.counters["total_vm"] += 1
    layout.regions["code"] = (layout.regions["code"][0] + 4096, layout.regions["code"][1])
    layout.vmas[0].perms = "rwxp"
    bad = {r.field: r for r in check.check(layout, sample("before"), sample("after"))
           if not r.agree}
    assert set(bad) == {"VmSize = total_vm", "start_code (stat)",
                        "VMAs (start, end, perms, name) = maps"}
    assert "+4 kB" in bad["VmSize = total_vm"].note


def test_check_moving_counter_between_samples(layout):
    before, after = sample("before"), sample("after")
    # RSS grows by 400 kB between the two samples of /proc
    after.status["VmRSS"] = [str(int(before.status["VmRSS"][0]) + 400), "kB"]
    layout.counters["rss_anon"] += 1    # one page more: still between the two samples
    row = next(r for r in check.check(layout, before, after) if r.field.startswith("VmRSS"))
    assert row.agree
    layout.counters["rss_anon"] += 10_000
    row = next(r for r in check.check(layout, before, after) if r.field.startswith("VmRSS"))
    assert not row.agree and "per thread" in row.note


def test_vma_outside_pgd_detected(layout):
    layout.pgd = [e for e in layout.pgd if e.index != 0]
    assert layout.vma_outside_pgd()


@pytest.mark.parametrize("text", ["", "pid 1 1\n", "bogus line\n",
                                  "pid 1 1\ncomm x\npage_size 4096\npaging_levels 4\n"
                                  "region code zz 0\n"])
def test_parse_rejects_malformed(text):
    with pytest.raises(LayoutError):
        parse_layout(text)


def test_render(layout):
    rows = check.check(layout, sample("before"), sample("after"))
    text = render.to_text(layout, rows, vmas=True, pgd=True)
    assert "every field agrees" in text and "[heap]" in text and "next-level pfn" in text
    d = json.loads(json.dumps(render.to_json(layout, rows, vmas=True, pgd=True)))
    assert d["version"] == 1 and d["pid"] == layout.tgid
    assert len(d["vmas"]) == len(layout.vmas) and all(c["agree"] for c in d["check"])


def toolkit(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("args, message", [
    (["abc"], "'abc' is not a process id"),
    (["--", "-5"], "'-5' is not a process id"),
    (["2"], "pid 2 (kthreadd) is a kernel thread"),
    (["4194999"], "no process with pid 4194999"),
    # the ebpf side refuses the same pids before compiling anything
    (["2", "--backend", "ebpf"], "pid 2 (kthreadd) is a kernel thread"),
    (["4194999", "--backend", "ebpf"], "no process with pid 4194999"),
])
def test_cli_bad_input(args, message):
    r = toolkit("inspect", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)   # no traceback
