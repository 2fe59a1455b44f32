"""The ebpf side of `toolkit inspect` (toolkit/backends/ebpf_vm.py) on output captured
in the lab on 6.1: ebpf/vm.c's task and task_vma iterators and the module's
/proc/toolkit/vm, read one after the other from the same stopped `sleep`. The BPF output,
turned into the module's text, must parse to the same Layout, line for line."""
from __future__ import annotations

from pathlib import Path

import pytest

from toolkit import sysinfo
from toolkit.backends import ebpf_vm as E
from toolkit.errors import BackendError, InspectError
from toolkit.inspect import check
from toolkit.inspect.layout import parse_layout

DATA = Path(__file__).parent / "data" / "inspect"
KSYMS = {"special_mapping_name": 1}     # present (the address is unused here)


def captured() -> tuple[list[str], list[str], str]:
    return ((DATA / "ebpf-task.txt").read_text().splitlines(),
            (DATA / "ebpf-vma.txt").read_text().splitlines(),
            (DATA / "lkm-sleep.txt").read_text())


def test_ebpf_output_is_the_modules_text():
    task, vma, lkm_text = captured()
    pid = int(task[0].split()[1])
    text, notes, inexact = E.to_module_text(task, vma, pid, KSYMS)
    assert notes == [] and inexact == set()
    assert sorted(text.splitlines()) == sorted(lkm_text.splitlines())
    a, b = parse_layout(lkm_text), parse_layout(text)
    assert (b.regions, b.counters, b.vmas, b.pgd) == (a.regions, a.counters, a.vmas, a.pgd)
    assert b.paging_levels == 5 and any(v.name == "[vdso]" for v in b.vmas)


def test_pgd_line_matches_the_module():
    # a kernel-half entry of the capture: index 322 of a 5-level table, the module's line
    _, _, lkm_text = captured()
    want = next(line for line in lkm_text.splitlines() if line.startswith("pgd 322 "))
    raw = int(want.split()[4], 16)
    assert E._pgd_line(322, raw, 48, (1 << 52) - 1) == want
    # 4-level: entry 256 is the first of the kernel half, sign-extended
    line = E._pgd_line(256, 0x8000000012345067, 39, (1 << 52) - 1)
    assert line.split()[2:4] == ["ffff800000000000", "ffff807fffffffff"]
    assert line.split()[5] == "12345" and line.endswith("present,rw,user,accessed,dirty,nx")


@pytest.mark.parametrize("gone, message", [("kthread", "kernel thread"),
                                           ("nomm", "exited while being read")])
def test_gone(gone, message):
    with pytest.raises(InspectError, match=message):
        E.to_module_text([f"tk_gone {gone}"], [], 4194000)


def test_nothing_found_for_a_vanished_pid():
    assert sysinfo.is_kernel_thread(4194000) is None
    with pytest.raises(InspectError, match="exited"):
        E.to_module_text([], [], 4194000)


def test_walks_that_disagree_are_walked_again():
    task, vma, _ = captured()
    pid = int(task[0].split()[1])
    other_mm = [line.replace("tk_mm vma ", "tk_mm vma 1") for line in vma]
    with pytest.raises(E._Changed, match="different mms"):
        E.to_module_text(task, other_mm, pid, KSYMS)
    one_vma_less = vma[:-2]         # a VMA unmapped between the walks
    with pytest.raises(E._Changed, match="map_count"):
        E.to_module_text(task, one_vma_less, pid, KSYMS)


def test_unexpected_line_is_an_error():
    task, vma, _ = captured()
    with pytest.raises(BackendError, match="unexpected line"):
        E.to_module_text(task, ["tk_mm vma 0", "garbage"] + vma, 1, KSYMS)


def test_newline_in_a_path_is_escaped_as_the_module_does():
    lines = ["tk_mm vma 1", "vma 1000 2000 r--p 0 /tmp/a", "b.so", "tk_mm vma 1",
             "vma 2000 3000 r--p 0 anon"]
    assert E._join_broken(lines)[1] == "vma 1000 2000 r--p 0 /tmp/a\\012b.so"


def test_backing_files_are_noted_and_checked_by_base_name():
    task, vma, _ = captured()
    pid = int(task[0].split()[1])
    lib = next(line for line in vma if line.startswith("vma ") and "libc" in line)
    start = int(lib.split()[1], 16)
    real = [line.replace("/usr/lib/", "/lower/usr/lib/") if line == lib else line
            for line in vma]
    text, notes, inexact = E.to_module_text(task, real + [f"tk_note backing-file {start:x}"],
                                            pid, {})
    assert inexact == {start}
    assert any("backing files" in n for n in notes)
    assert any("[vdso]/[vvar] shown as anon" in n for n in notes)  # no kallsyms given
    assert not any("paging" in n for n in notes)    # the capture's tk_geom has the shift
    lay = parse_layout(text)
    for v in lay.vmas:
        v.name_exact = v.start not in inexact
    maps = [sysinfo.MapsLine(v.start, v.end, v.perms, v.pgoff * 4096,
                             v.name.replace("/lower", "") if v.name != "anon" else "")
            for v in lay.vmas]
    row = next(r for r in check._vma_rows(lay, [check.ProcSample({}, {}, maps)])
               if r.field.startswith("VMAs"))
    assert row.agree, row


def test_paging_depth_from_kallsyms_or_task_size():
    """pgdir_shift and physical_mask from kallsyms where it has data symbols; else the
    depth from a 64-bit TASK_SIZE (the reader's first: the target may be 32-bit), the
    frame mask without encryption; each said in a note, never silently."""
    assert E.paging((48, 0xfffffffffffff)) == (48, 0xfffffffffffff, [])
    shift, mask, notes = E.paging((0, 0, 0xffffe000, (1 << 47) - 4096))
    assert (shift, mask) == (39, (1 << 52) - 1) and len(notes) == 2
    assert "TASK_SIZE" in notes[0] and "4 levels" in notes[0] and "SME" in notes[1]
    assert E.paging((0, 1 << 40, (1 << 56) - 4096, 0))[0] == 48
    shift, _, notes = E.paging((0, 1 << 40, 0xffffe000, 0))
    assert shift == 39 and "assumed 4-level" in notes[0]


@pytest.mark.parametrize("field, name, exact", [
    ("tk_rpath:/libc.so.6/x86_64-linux-gnu/lib/usr", "/usr/lib/x86_64-linux-gnu/libc.so.6",
     True),
    ("tk_rpath:", "/", True),
    ("tk_rpath:d/a.out/tmp", "/tmp/a.out (deleted)", True),
    ("tk_rpath:s/dev/zero", "/dev/zero (deleted)", True),
    ("tk_rpath:a/bpf-map", "anon_inode:bpf-map", True),
    ("tk_rpath:u/x", "/x", False),
    ("tk_rpath:/c/b/", "/b/c", False),      # cut at the depth bound
])
def test_core_path_walk_names(field, name, exact):
    assert E.rpath(field) == (name, exact)
    line, ok = E._rpath_vma(f"vma 1000 2000 r--p 0 {field}")
    assert line == f"vma 1000 2000 r--p 0 {name}" and ok == exact


def test_cfg_fields_come_from_the_header():
    fields = E.cfg_fields()
    assert fields[:2] == ["pid", "nr_cpu_ids"]
    assert set(E.KSYMS) <= set(fields)
