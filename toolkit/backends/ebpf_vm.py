"""The eBPF backend's `layout(pid)` capability (`toolkit inspect --backend ebpf`):
ebpf/vm.c's two BPF iterators, run through bpf_iter.py, and their output turned into the
module's text (lkm/vm.c's format), which toolkit/inspect parses for both backends.

The compile reuses the eBPF backend's preflight and compile_source (ebpf.py); this
module is apart from ebpf.py because it serves another command.

Why text in the module's format (and not binary rows): the two sides then share one
parser (toolkit/inspect/layout.py) and one contract, the format documented in lkm/vm.c, and no
struct layout has to be kept in step between C and Python. The BPF programs print the
module's lines where BPF can compute them; for the page table they print each present
entry raw (`tk_pgd`), and this file derives the module's `pgd` line (range, frame, flag
names) from it with the geometry the program read (`tk_geom`), because formatting ten
flags per entry inside a 512-iteration loop would multiply the verifier's work. The
`stack_vma` region (the module's vma_lookup(start_stack)) is found here in the VMA list.

BCC compiles vm.c once per process (~40 s under TCG); every read then creates two new
iterators (one walk each), so reads never share a position.
"""
from __future__ import annotations

import time

from .. import sysinfo
from ..errors import BackendError, InspectError
from ..paths import EBPF_DIR
from . import bpf_iter
from .base import LayoutText
from .ebpf import ITER_CFLAGS, compile_source, preflight

SOURCE = EBPF_DIR / "vm.c"
# the kernel variables the programs read through their kallsyms address (tk_vm_cfg)
KSYMS = {"pgdir_shift": "pgdir_shift", "physical_mask": "physical_mask",
         "special_vmops": "special_mapping_vmops",
         "legacy_vmops": "legacy_special_mapping_vmops",
         "pcpu_offsets": "__per_cpu_offset", "nr_cpu_ids": "nr_cpu_ids"}
# x86 page-table entry bits, in the order lkm/vm.c's tk_pgd_bits names them
PGD_BITS = ((0, "present"), (1, "rw"), (2, "user"), (3, "pwt"), (4, "pcd"),
            (5, "accessed"), (6, "dirty"), (7, "pse"), (8, "global"), (63, "nx"))
PAGE_SHIFT = 12
ATTEMPTS = 5            # walks of a process that keeps changing its layout

ALWAYS = ("ebpf: the mm is read without being pinned (no get_task_mm from BPF) and in two "
          "walks, the task iterator (regions, counters, page table) and the task_vma "
          "iterator (VMAs, under the mmap lock per batch), not under one mmap lock as the "
          "module does; both walks are checked to have seen the same mm and VMA count")

_BPF = None
_KSYMS: dict[str, int] | None = None


class _Changed(Exception):
    """The process changed between the two walks (exec, mmap): walk again."""


def _module():
    """The compiled vm.c, once per process."""
    global _BPF
    if _BPF is not None:
        return _BPF
    for target in ("task", "task_vma"):
        if not bpf_iter.supported(target):
            raise BackendError(f"the ebpf side of inspect needs the BPF {target} iterator "
                               f"(kernel >= {'.'.join(map(str, bpf_iter.MIN_KERNEL[target]))}"
                               f"), this is {sysinfo.release()}", hint="use --backend lkm")
    preflight(SOURCE)
    _BPF = compile_source(SOURCE, ITER_CFLAGS, what="inspect (ebpf)", hint="add --lab")
    return _BPF


def _configure(bpf, pid: int) -> dict[str, int]:
    global _KSYMS
    if _KSYMS is None:
        _KSYMS = sysinfo.kallsyms_addr(*KSYMS.values())
    table = bpf[b"tk_vm_cfg"]
    leaf = table.Leaf()
    leaf.pid = pid
    for field, sym in KSYMS.items():
        setattr(leaf, field, _KSYMS[sym])
    table[table.Key(0)] = leaf
    return _KSYMS


def _walk(bpf, target: str, pid: int) -> list[str]:
    try:
        data = bpf_iter.read(bpf, target, bpf_iter.task_link_info(pid))
    except BackendError:
        if sysinfo.is_kernel_thread(pid) is None:
            raise InspectError(f"pid {pid} exited while being read") from None
        raise
    return data.decode(errors="replace").splitlines()


def _join_broken(lines: list[str]) -> list[str]:
    """A newline in a mapped file's path splits its vma line (BPF does not escape it);
    the continuation starts with none of the keys: put it back, escaped as the module
    escapes it (\\012)."""
    out: list[str] = []
    for line in lines:
        key = line.partition(" ")[0]
        if out and out[-1].startswith("vma ") and key not in ("vma", "tk_mm", "tk_note"):
            out[-1] += "\\012" + line
        else:
            out.append(line)
    return out


def _pgd_line(index: int, raw: int, shift: int, physmask: int) -> str:
    """lkm/vm.c's tk_vm_pgd() line for one present entry."""
    va_bits = shift + 9
    start = index << shift
    if start & (1 << (va_bits - 1)):
        start |= ~((1 << va_bits) - 1) & ((1 << 64) - 1)
    last = start + (1 << shift) - 1
    pfn_mask = physmask & ~((1 << PAGE_SHIFT) - 1)
    flags = [name for bit, name in PGD_BITS if raw & ~pfn_mask & (1 << bit)]
    return (f"pgd {index} {start:x} {last:x} {raw:x} {(raw & pfn_mask) >> PAGE_SHIFT:x} "
            + ",".join(flags))


def _task_part(task_lines: list[str], pid: int) -> dict:
    """The task iterator's lines: the module's lines as they are, and the BPF-only ones
    (tk_*) taken apart. InspectError for a process that cannot be shown."""
    part = {"out": [], "notes": [], "mm": None, "geom": None, "pgd": []}
    for line in task_lines:
        key, _, rest = line.partition(" ")
        w = rest.split()
        if key == "tk_gone":
            if rest == "kthread":
                raise InspectError(f"pid {pid} is a kernel thread: it has no user memory "
                                   "to inspect")
            raise InspectError(f"pid {pid} exited while being read (no mm left)")
        if key == "tk_mm":
            part["mm"] = int(w[1], 16)
        elif key == "tk_geom":
            part["geom"] = (int(w[0]), int(w[1], 16))
        elif key == "tk_geom_cpus":
            if int(w[0]) < int(w[1]):
                part["notes"].append(f"ebpf: RSS per-CPU deltas summed over the first "
                                     f"{w[0]} of {w[1]} CPUs only (the BPF loop's bound)")
        elif key == "tk_pgd":
            part["pgd"].append((int(w[0]), int(w[1], 16)))
        elif key == "tk_note":
            part["notes"].append(f"ebpf: {rest}")
        else:
            part["out"].append(line)
    if part["mm"] is None:
        if sysinfo.is_kernel_thread(pid) is None:
            raise InspectError(f"pid {pid} exited while being read")
        raise BackendError(f"the BPF task iterator did not find pid {pid} "
                           f"(its output: {task_lines[:3]!r})")
    if part["geom"] is None:
        raise BackendError("the BPF task iterator printed no page-table geometry")
    return part


def _vma_part(vma_lines: list[str]) -> tuple[list[str], set[int], set[int]]:
    """The task_vma iterator's lines: the vma lines, the mms it walked, and the start of
    every VMA named by its real path (an overlayfs backing file)."""
    vmas, mms, inexact = [], set(), set()
    for line in _join_broken(vma_lines):
        key, _, rest = line.partition(" ")
        if key == "tk_mm":
            mms.add(int(rest.split()[1], 16))
        elif key == "tk_note" and rest.startswith("backing-file "):
            inexact.add(int(rest.split()[1], 16))
        elif key == "vma":
            vmas.append(line)
        else:
            raise BackendError(f"unexpected line from the BPF task_vma iterator: {line!r}")
    return vmas, mms, inexact


def _ksym_notes(ksyms: dict[str, int], inexact: set[int]) -> list[str]:
    notes = []
    if not ksyms.get("pgdir_shift"):
        notes.append("ebpf: no pgdir_shift in kallsyms: assumed 4-level paging "
                     "(a kernel without CONFIG_X86_5LEVEL)")
    if not (ksyms.get("special_mapping_vmops") or ksyms.get("legacy_special_mapping_vmops")):
        notes.append("ebpf: special_mapping_vmops not in kallsyms: [vdso]/[vvar] shown as anon")
    if inexact:
        notes.append(f"ebpf: {len(inexact)} mapped files are overlayfs backing files, named "
                     "by their real path: the path the user opened "
                     "(backing_file.user_path, 6.8+) is no struct path bpf_d_path accepts; "
                     "--check compares their base names")
    return notes


def _stack_vma_line(out: list[str], vmas: list[str]) -> str | None:
    """The module's `region stack_vma` (its vma_lookup(mm, start_stack)), found in the
    VMA list; checks that the walks saw as many VMAs as map_count (else _Changed)."""
    fields = {tuple(w[:2]): w[2:] for w in (line.split() for line in out) if len(w) >= 3}
    try:
        map_count = int(fields[("counter", "map_count")][0])
        stack = int(fields[("region", "stack")][0], 16)
        ranges = [(int(w[1], 16), int(w[2], 16)) for w in (v.split() for v in vmas)]
    except (KeyError, IndexError, ValueError):
        raise BackendError("unexpected output of ebpf/vm.c: no map_count or stack region, "
                           "or a malformed vma line") from None
    if map_count != len(vmas):
        raise _Changed(f"map_count {map_count} but {len(vmas)} VMAs walked (the layout "
                       "changed between the walks)")
    sv = next(((s, e) for s, e in ranges if s <= stack < e), None)
    return f"region stack_vma {sv[0]:x} {sv[1]:x}" if sv else None


def to_module_text(task_lines: list[str], vma_lines: list[str], pid: int,
                   ksyms: dict[str, int] | None = None) -> tuple[str, list[str], set[int]]:
    """The two walks' output as the module's text, the notes, and the start addresses of
    VMAs whose name is not the one maps shows. Raises InspectError for a process that
    cannot be shown, _Changed when the walks disagree."""
    task = _task_part(task_lines, pid)
    vmas, mm_vma, inexact = _vma_part(vma_lines)
    if mm_vma - {task["mm"]}:
        raise _Changed("the task and task_vma walks saw different mms (an exec between)")
    shift, physmask = task["geom"]
    out = task["out"] + [f"paging_levels {5 if shift == 48 else 4}"] + vmas
    out += [_pgd_line(i, raw, shift, physmask) for i, raw in task["pgd"]]
    stack_vma = _stack_vma_line(out, vmas)
    if stack_vma:
        out.append(stack_vma)
    notes = task["notes"] + _ksym_notes(ksyms or {}, inexact)
    return "\n".join(out) + "\n", notes, inexact


def read_layout(pid: int) -> LayoutText:
    """EbpfBackend.layout: one pid's layout through ebpf/vm.c in the module's text; walks
    again (up to ATTEMPTS) when the process changed between the task and the task_vma
    walk."""
    bpf = _module()
    why = ""
    for attempt in range(ATTEMPTS):
        ksyms = _configure(bpf, pid)
        vma_lines = _walk(bpf, "task_vma", pid)
        task_lines = _walk(bpf, "task", pid)
        try:
            text, notes, inexact = to_module_text(task_lines, vma_lines, pid, ksyms)
        except _Changed as e:
            why = str(e)
            time.sleep(0.01 * (attempt + 1))
            continue
        return LayoutText(text, [ALWAYS, *notes], inexact)
    raise BackendError(f"pid {pid}: no consistent layout in {ATTEMPTS} walks ({why})",
                       hint="the process changes its mappings faster than BPF walks them")
