"""The ebpf side of `toolkit inspect`: ebpf/vm.c's two BPF iterators, run through
toolkit/backends/bpf_iter.py, and their output turned into the module's text.

Why text in the module's format (and not binary rows): the two sides then share one
parser (layout.parse_layout) and one contract, the format documented in lkm/vm.c, and no
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
from ..errors import BackendError
from ..paths import EBPF_DIR
from .layout import Layout, LayoutError, parse_layout

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
    from ..backends import bpf_iter
    for target in ("task", "task_vma"):
        if not bpf_iter.supported(target):
            raise BackendError(f"the ebpf side of inspect needs the BPF {target} iterator "
                               f"(kernel >= {'.'.join(map(str, bpf_iter.MIN_KERNEL[target]))}"
                               f"), this is {sysinfo.release()}", hint="use --backend lkm")
    from ..backends.ebpf import ITER_CFLAGS, compile_source, preflight
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
    from ..backends import bpf_iter
    from .source import InspectError
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


def to_module_text(task_lines: list[str], vma_lines: list[str], pid: int,
                   ksyms: dict[str, int] | None = None) -> tuple[str, list[str], set[int]]:
    """The two walks' output as the module's text, the notes, and the start addresses of
    VMAs whose name is not the one maps shows. Raises InspectError for a process that
    cannot be shown, _Changed when the walks disagree."""
    from .source import InspectError
    ksyms = ksyms or {}
    out, notes, inexact = [], [], set()
    mm_task, mm_vma = None, set()
    geom = None
    pgd_raw = []
    for line in task_lines:
        key, _, rest = line.partition(" ")
        w = rest.split()
        if key == "tk_gone":
            if rest == "kthread":
                raise InspectError(f"pid {pid} is a kernel thread: it has no user memory "
                                   "to inspect")
            raise InspectError(f"pid {pid} exited while being read (no mm left)")
        if key == "tk_mm":
            mm_task = int(w[1], 16)
        elif key == "tk_geom":
            geom = (int(w[0]), int(w[1], 16))
        elif key == "tk_geom_cpus":
            if int(w[0]) < int(w[1]):
                notes.append(f"ebpf: RSS per-CPU deltas summed over the first {w[0]} of "
                             f"{w[1]} CPUs only (the BPF loop's bound)")
        elif key == "tk_pgd":
            pgd_raw.append((int(w[0]), int(w[1], 16)))
        elif key == "tk_note":
            notes.append(f"ebpf: {rest}")
        else:
            out.append(line)
    if mm_task is None:
        if sysinfo.is_kernel_thread(pid) is None:
            raise InspectError(f"pid {pid} exited while being read")
        raise BackendError(f"the BPF task iterator did not find pid {pid} "
                           f"(its output: {task_lines[:3]!r})")
    vmas = []
    for line in _join_broken(vma_lines):
        key, _, rest = line.partition(" ")
        if key == "tk_mm":
            mm_vma.add(int(rest.split()[1], 16))
        elif key == "tk_note" and rest.startswith("backing-file "):
            inexact.add(int(rest.split()[1], 16))
        elif key == "vma":
            vmas.append(line)
        else:
            raise BackendError(f"unexpected line from the BPF task_vma iterator: {line!r}")
    if mm_vma - {mm_task}:
        raise _Changed("the task and task_vma walks saw different mms (an exec between)")
    if geom is None:
        raise BackendError("the BPF task iterator printed no page-table geometry")
    shift, physmask = geom
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
    out.append(f"paging_levels {5 if shift == 48 else 4}")
    out += vmas
    out += [_pgd_line(i, raw, shift, physmask) for i, raw in pgd_raw]
    text = "\n".join(out) + "\n"
    try:
        lay = parse_layout(text)
    except LayoutError as e:
        raise BackendError(f"unexpected output of ebpf/vm.c: {e}") from None
    if lay.counters["map_count"] != len(lay.vmas):
        raise _Changed(f"map_count {lay.counters['map_count']} but {len(lay.vmas)} VMAs "
                       "walked (the layout changed between the walks)")
    ss = lay.regions["stack"][0]
    sv = next((v for v in lay.vmas if v.start <= ss < v.end), None)
    if sv is not None:      # the module's vma_lookup(mm, start_stack)
        text += f"region stack_vma {sv.start:x} {sv.end:x}\n"
    return text, notes, inexact


def read_layout_ebpf(pid: int) -> Layout:
    """One pid's Layout through ebpf/vm.c; walks again (up to ATTEMPTS) when the process
    changed between the task and the task_vma walk."""
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
        lay = parse_layout(text)
        for v in lay.vmas:
            v.name_exact = v.start not in inexact
        lay.backend = "ebpf"
        lay.notes = [ALWAYS, *notes]
        return lay
    raise BackendError(f"pid {pid}: no consistent layout in {ATTEMPTS} walks ({why})",
                       hint="the process changes its mappings faster than BPF walks them")
