"""The eBPF backend's `layout(pid)` capability (`toolkit inspect --backend ebpf`), on
both engines: the iterators of ebpf/tk_vm.h, built by BCC from ebpf/vm.c or loaded by
libbpf from the CO-RE object ebpf/core/build/vm.bpf.o, and their output turned into the
module's text (lkm/vm.c's format), which toolkit/inspect parses for both backends.

BCC: the compile reuses the eBPF backend's preflight and compile_source (ebpf.py), once
per process (~40 s under TCG). CO-RE: the object is loaded once per process (libbpf
relocates it with the kernel's BTF; no headers, no compiler). Every read then creates two
new iterators (one walk each), so reads never share a position.

Why text in the module's format (and not binary rows): the two sides then share one
parser (toolkit/inspect/layout.py) and one contract, the format documented in lkm/vm.c.
The BPF programs print the module's lines where BPF can compute them; for the page table
they print each present entry raw (`tk_pgd`), and this file derives the module's `pgd`
line (range, frame, flag names) from it with the geometry the program read (`tk_geom`).
The `stack_vma` region (the module's vma_lookup(start_stack)) is found here in the VMA
list. What the kernel hides from BPF here (kallsyms without data symbols: pgdir_shift,
physical_mask) is derived or assumed as the notes say, never silently.
"""
from __future__ import annotations

import ctypes as ct
import re
import time

from .. import sysinfo
from ..errors import BackendError, InspectError
from ..paths import EBPF_DIR
from . import bpf_iter
from .base import LayoutText

SOURCE = EBPF_DIR / "vm.c"
HEADER = EBPF_DIR / "tk_vm.h"
CORE_OBJ = EBPF_DIR / "core" / "build" / "vm.bpf.o"
# struct tk_vm_cfg's kallsyms fields -> the symbol whose address goes there
KSYMS = {"special_name": "special_mapping_name", "pgdir_shift": "pgdir_shift",
         "physical_mask": "physical_mask", "pcpu_offsets": "__per_cpu_offset",
         "simple_dname": "simple_dname", "anon_dname": "anon_inodefs_dname"}
# x86 page-table entry bits, in the order lkm/vm.c's tk_pgd_bits names them
PGD_BITS = ((0, "present"), (1, "rw"), (2, "user"), (3, "pwt"), (4, "pcd"),
            (5, "accessed"), (6, "dirty"), (7, "pse"), (8, "global"), (63, "nx"))
PAGE_SHIFT = 12
PTE_PHYSICAL_MASK = (1 << 52) - 1    # __PHYSICAL_MASK without memory encryption
# TASK_SIZE of a 64-bit process (task_size_max()): paging depth -> value
TASK_SIZE = {39: (1 << 47) - 4096, 48: (1 << 56) - 4096}
ATTEMPTS = 5            # walks of a process that keeps changing its layout

ALWAYS = ("ebpf: the mm is read without being pinned (no get_task_mm from BPF) and in two "
          "walks, the task iterator (regions, counters, page table) and the task_vma "
          "iterator (VMAs, under the mmap lock per batch), not under one mmap lock as the "
          "module does; both walks are checked to have seen the same mm and VMA count")


class _Changed(Exception):
    """The process changed between the two walks (exec, mmap): walk again."""


def possible_cpus() -> int:
    """nr_cpu_ids: one more than the last CPU in /sys/devices/system/cpu/possible."""
    text = sysinfo.read_text("/sys/devices/system/cpu/possible", "0") or "0"
    return max(int(x) for x in re.split(r"[-,]", text.strip()) if x) + 1


def _check_iterators() -> None:
    for target in ("task", "task_vma"):
        if not bpf_iter.supported(target):
            raise BackendError(f"the ebpf side of inspect needs the BPF {target} iterator "
                               f"(kernel >= {'.'.join(map(str, bpf_iter.MIN_KERNEL[target]))}"
                               f"), this is {sysinfo.release()}", hint="use --backend lkm")


def cfg_fields() -> list[str]:
    """struct tk_vm_cfg's fields, in order, from ebpf/tk_vm.h (the one definition)."""
    body = re.search(r"struct tk_vm_cfg \{(.*?)\};", HEADER.read_text(), re.S)
    if not body:
        raise BackendError(f"{HEADER}: no struct tk_vm_cfg")
    return re.findall(r"^\s*u64 (\w+);", body.group(1), re.M)


def cfg_values(pid: int, ksyms: dict[str, int]) -> dict[str, int]:
    vals = {"pid": pid, "nr_cpu_ids": possible_cpus()}
    vals.update({field: ksyms.get(sym, 0) for field, sym in KSYMS.items()})
    return vals


class _Walker:
    """One engine's compiled or loaded vm programs: configure, then walk a target."""
    engine = ""
    _ksyms: dict[str, int] | None = None

    def ksyms(self) -> dict[str, int]:
        if self._ksyms is None:
            self._ksyms = sysinfo.kallsyms_addr(*KSYMS.values())
        return self._ksyms

    def walk(self, target: str, pid: int) -> list[str]:
        try:
            data = self._read(target, bpf_iter.task_link_info(pid))
        except BackendError:
            if sysinfo.is_kernel_thread(pid) is None:
                raise InspectError(f"pid {pid} exited while being read") from None
            raise
        return data.decode(errors="replace").splitlines()


class _BccWalker(_Walker):
    engine = "bcc"

    def __init__(self):
        from .ebpf import ITER_CFLAGS, compile_source, preflight
        _check_iterators()
        preflight(SOURCE)
        self.bpf = compile_source(SOURCE, ITER_CFLAGS, what="inspect (ebpf)",
                                  hint="add --lab")

    def configure(self, pid: int) -> None:
        table = self.bpf[b"tk_vm_cfg"]
        leaf = table.Leaf()
        for field, value in cfg_values(pid, self.ksyms()).items():
            setattr(leaf, field, value)
        table[table.Key(0)] = leaf

    def _read(self, target: str, link_info) -> bytes:
        return bpf_iter.read(self.bpf, target, link_info)


class _CoreWalker(_Walker):
    engine = "core"
    PROGRAMS = {"task": "tk_vm_iter_task", "task_vma": "tk_vm_iter_vma"}

    def __init__(self):
        from . import libbpf
        from .ebpf_core import preflight
        _check_iterators()
        preflight(CORE_OBJ)
        self.cfg_type = type("TkVmCfg", (ct.Structure,),
                             {"_fields_": [(f, ct.c_uint64) for f in cfg_fields()]})
        obj = libbpf.Object(str(CORE_OBJ))
        try:
            obj.load()
        except libbpf.LibbpfError as e:
            obj.close()
            raise BackendError(f"inspect (ebpf, engine core): {e}") from None
        self.obj = obj
        self.progs = {t: obj.program(n) for t, n in self.PROGRAMS.items()}

    def configure(self, pid: int) -> None:
        self.obj.map("tk_vm_cfg").update_struct(
            0, self.cfg_type(**cfg_values(pid, self.ksyms())))

    def _read(self, target: str, link_info) -> bytes:
        return self.progs[target].iterate(link_info)


_WALKERS: dict[str, _Walker] = {}


def _walker(engine: str) -> _Walker:
    """The engine's programs, compiled (BCC) or loaded (CO-RE) once per process."""
    if engine not in _WALKERS:
        _WALKERS[engine] = _BccWalker() if engine == "bcc" else _CoreWalker()
    return _WALKERS[engine]


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
            # pgdir_shift, physical_mask (0: not in kallsyms), and (captures from
            # before both engines shared tk_vm.h have only those two) the target's and
            # the reader's TASK_SIZE
            part["geom"] = tuple(int(x, 16 if i else 10) for i, x in enumerate(w))
        elif key == "tk_geom_cpus":
            part["notes"] += _cpus_note(int(w[0]), int(w[1]))
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


def rpath(field: str) -> tuple[str, bool]:
    """The CO-RE path walk's `tk_rpath:<flags>/leaf/.../top` as d_path() prints it, and
    whether it is exact (see ebpf/core/vm.bpf.c): a deleted file gets " (deleted)", a
    shmem pseudo file `/<name> (deleted)`, one of anon_inodefs `anon_inode:<name>`; a walk
    cut short or a d_dname() BPF cannot call is not exact."""
    flags, _, names = field[len("tk_rpath:"):].partition("/")
    if "s" in flags:            # simple_dname(): one name, whole
        return f"/{names} (deleted)", True
    parts = names.split("/") if names else []
    cut = bool(parts) and parts[-1] == ""
    parts = [p for p in parts if p]
    if "a" in flags:
        return f"anon_inode:{parts[0] if parts else ''}", True
    path = "/" + "/".join(reversed(parts))
    return path + (" (deleted)" if "d" in flags else ""), not (cut or "u" in flags)


def _rpath_vma(line: str) -> tuple[str, bool]:
    """A vma line whose name is a CO-RE path walk, with the path in its place."""
    head = line.split(" ", 5)
    if len(head) < 6 or not head[5].startswith("tk_rpath:"):
        return line, True
    path, exact = rpath(head[5])
    return " ".join(head[:5] + [path]), exact


def _vma_part(vma_lines: list[str]) -> tuple[list[str], set[int], dict[int, str]]:
    """The task_vma iterator's lines: the vma lines, the mms it walked, and why each VMA
    not named as maps names it is not (start -> backing | ops | path: an overlayfs
    backing file by its real path, a vm_ops->name() or d_dname() BPF cannot call, a
    path walk cut short)."""
    vmas, mms, inexact = [], set(), {}
    for line in _join_broken(vma_lines):
        key, _, rest = line.partition(" ")
        w = rest.split()
        if key == "tk_mm":
            mms.add(int(w[1], 16))
        elif key == "tk_note" and w[0] in ("backing-file", "ops-name"):
            inexact[int(w[1], 16)] = "backing" if w[0] == "backing-file" else "ops"
        elif key == "vma":
            line, exact = _rpath_vma(line)
            if not exact:
                inexact[int(w[0], 16)] = "path"
            vmas.append(line)
        else:
            raise BackendError(f"unexpected line from the BPF task_vma iterator: {line!r}")
    return vmas, mms, inexact


def _cpus_note(summed: int, ncpus: int) -> list[str]:
    if summed >= ncpus:
        return []
    if summed == 0:
        return [f"ebpf: RSS without the per-CPU counters' deltas (no per-CPU offsets "
                f"found): the folded value only, up to 32 pages x {ncpus} CPUs per counter "
                "off what /proc/PID/status sums"]
    return [f"ebpf: RSS per-CPU deltas summed over the first {summed} of {ncpus} CPUs "
            "only (the BPF loop's bound)"]


def paging(geom: tuple) -> tuple[int, int, list[str]]:
    """(pgdir_shift, physical_mask, notes) from the tk_geom line: kallsyms' values where
    it has them, else PGDIR_SHIFT from TASK_SIZE and PTE_PFN_MASK without encryption."""
    shift, physmask, *sizes = geom
    notes = []
    if not shift:
        by_size = {v: k for k, v in TASK_SIZE.items()}
        found = next((by_size[t] for t in reversed(sizes) if t in by_size), None)
        if found is None:
            shift = 39
            notes.append("ebpf: no pgdir_shift in kallsyms and no 64-bit TASK_SIZE seen: "
                         "assumed 4-level paging")
        else:
            shift = found
            notes.append(f"ebpf: paging depth from TASK_SIZE (mm->task_size "
                         f"{TASK_SIZE[found]:#x}: {5 if found == 48 else 4} levels), as "
                         "pgdir_shift, a data symbol, is not in kallsyms")
    if not physmask:
        physmask = PTE_PHYSICAL_MASK
        notes.append("ebpf: physical_mask, a data symbol, is not in kallsyms: next-level "
                     "frames taken from bits 12-51 (PTE_PFN_MASK without memory "
                     "encryption; with SME/TDX the encryption bit would show in the frame)")
    return shift, physmask, notes


WHY_INEXACT = {
    "backing": "mapped files are overlayfs backing files, named by their real path: the "
               "path the user opened (backing_file.user_path, 6.8+) is no struct path "
               "bpf_d_path accepts",
    "ops": "VMAs are named by a vm_ops->name() other than special_mapping_name(), which "
           "BPF cannot call: shown by the module's other rules",
    "path": "mapped files' paths are partial: a walk cut at its depth bound, or a "
            "pseudo file's d_dname() that BPF cannot call",
}


def _name_notes(ksyms: dict[str, int], inexact: dict[int, str]) -> list[str]:
    notes = []
    if not ksyms.get("special_mapping_name"):
        notes.append("ebpf: special_mapping_name not in kallsyms: [vdso]/[vvar] shown as anon")
    for why, text in WHY_INEXACT.items():
        n = sum(1 for w in inexact.values() if w == why)
        if n:
            notes.append(f"ebpf: {n} {text}; --check compares their base names")
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
    shift, physmask, geom_notes = paging(task["geom"])
    out = task["out"] + [f"paging_levels {5 if shift == 48 else 4}"] + vmas
    out += [_pgd_line(i, raw, shift, physmask) for i, raw in task["pgd"]]
    stack_vma = _stack_vma_line(out, vmas)
    if stack_vma:
        out.append(stack_vma)
    notes = task["notes"] + geom_notes + _name_notes(ksyms or {}, inexact)
    return "\n".join(out) + "\n", notes, set(inexact)


def _read(engine: str, pid: int) -> LayoutText:
    """One pid's layout through the engine's programs in the module's text; walks again
    (up to ATTEMPTS) when the process changed between the task and the task_vma walk."""
    walker = _walker(engine)
    why = ""
    for attempt in range(ATTEMPTS):
        walker.configure(pid)
        vma_lines = walker.walk("task_vma", pid)
        task_lines = walker.walk("task", pid)
        try:
            text, notes, inexact = to_module_text(task_lines, vma_lines, pid,
                                                  walker.ksyms())
        except _Changed as e:
            why = str(e)
            time.sleep(0.01 * (attempt + 1))
            continue
        return LayoutText(text, [ALWAYS, *notes], inexact)
    raise BackendError(f"pid {pid}: no consistent layout in {ATTEMPTS} walks ({why})",
                       hint="the process changes its mappings faster than BPF walks them")


def read_layout(pid: int) -> LayoutText:
    """EbpfBackend.layout (BCC): ebpf/vm.c, compiled once per process."""
    return _read("bcc", pid)


def read_layout_core(pid: int) -> LayoutText:
    """EbpfCoreBackend.layout (CO-RE): ebpf/core/build/vm.bpf.o, loaded once per process."""
    return _read("core", pid)


def core_inspect_summary(pid: int) -> tuple[bool, str]:
    """What `inspect --engine core` reads on this kernel and what it derives or assumes,
    from one real read of @pid (doctor's own process): (works, one line)."""
    try:
        got = read_layout_core(pid)
    except BackendError as e:
        return False, str(e).splitlines()[0]
    short = {"RSS": None, "paging depth from TASK_SIZE": "paging depth derived from "
             "TASK_SIZE (pgdir_shift not in kallsyms)",
             "physical_mask": "next-level frames assume no memory encryption "
             "(physical_mask not in kallsyms)",
             "special_mapping_name": "[vdso]/[vvar] shown as anon"}
    notes = [n.removeprefix("ebpf: ") for n in got.notes if n != ALWAYS]
    said = []
    if not any(n.startswith("RSS") for n in notes):
        said.append("RSS exact (every CPU's delta)")
    for n in notes:
        key = next((k for k in short if n.startswith(k)), None)
        said.append(n.split(":")[0] if key is None else short[key] or n.split(":")[0])
    return True, ("regions, counters, VMAs and their names, the top-level page table; "
                  + "; ".join(said))
