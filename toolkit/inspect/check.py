"""A Layout against /proc/PID/{maps,status,stat}, field by field.

/proc is sampled just before and just after the module is read; a live process may change
in between, so a value agrees when it equals the /proc value of either sample, or, for the
counters that move (RSS, peak RSS), lies between them. What remains is reported with the
reasons it may legitimately differ.
"""
from __future__ import annotations

import dataclasses
import os
import posixpath

from .. import sysinfo
from .layout import Layout, Vma

WHY_COUNTER = ("sampled at a different instant; on 6.1 the RSS counters are also cached "
               "per thread (up to 64 page events) before they reach the mm; from 6.2 they "
               "are per-CPU counters, which /proc/PID/status sums only from 6.16 (and "
               "6.12.y backports) while both backends always sum them")
WHY_ADDRESS = "the process changed its layout between the samples (brk, mmap, exec)"


@dataclasses.dataclass
class ProcSample:
    status: dict[str, list[str]]
    stat: dict[str, int]
    maps: list[sysinfo.MapsLine]


@dataclasses.dataclass
class Row:
    field: str
    module: str
    proc: str
    agree: bool
    note: str = ""


def sample_proc(pid: int) -> ProcSample | None:
    status = sysinfo.read_text(f"/proc/{pid}/status")
    stat = sysinfo.read_text(f"/proc/{pid}/stat")
    maps = sysinfo.read_text(f"/proc/{pid}/maps")
    if status is None or stat is None or maps is None:
        return None
    return ProcSample(sysinfo.parse_status(status), sysinfo.proc_stat_addresses(stat),
                      sysinfo.parse_maps(maps))


def _kib(sample: ProcSample, key: str) -> int | None:
    v = sample.status.get(key)
    return int(v[0]) if v else None


def _counter_rows(lay: Layout, samples: list[ProcSample]) -> list[Row]:
    page_kib = lay.page_size // 1024
    # (row name, module value in kB, status key or keys summed, may it move?)
    specs = [
        ("VmRSS = rss_anon+rss_file+rss_shmem", lay.rss_pages * page_kib, ("VmRSS",), True),
        ("RssAnon = rss_anon", lay.kib("rss_anon"), ("RssAnon",), True),
        ("RssFile = rss_file", lay.kib("rss_file"), ("RssFile",), True),
        ("RssShmem = rss_shmem", lay.kib("rss_shmem"), ("RssShmem",), True),
        ("VmHWM = hiwater_rss", lay.kib("hiwater_rss"), ("VmHWM",), True),
        ("VmSize = total_vm", lay.kib("total_vm"), ("VmSize",), False),
        ("VmLck = locked_vm", lay.kib("locked_vm"), ("VmLck",), False),
        ("VmData = data_vm", lay.kib("data_vm"), ("VmData",), False),
        ("VmStk = stack_vm", lay.kib("stack_vm"), ("VmStk",), False),
        # VmExe is the text segment (end_code - start_code); exec_vm is every executable
        # mapping: status splits it into VmExe + VmLib
        ("VmExe+VmLib = exec_vm", lay.kib("exec_vm"), ("VmExe", "VmLib"), False),
    ]
    rows = []
    for name, mod, keys, moves in specs:
        vals = []
        for s in samples:
            got = [_kib(s, k) for k in keys]
            if None not in got:
                vals.append(sum(got))
        if not vals:
            rows.append(Row(name, f"{mod} kB", "-", False, "not in /proc/PID/status"))
            continue
        ok = mod in vals or (moves and min(vals) <= mod <= max(vals))
        proc = " / ".join(f"{v} kB" for v in dict.fromkeys(vals))
        rows.append(Row(name, f"{mod} kB", proc, ok,
                        "" if ok else f"differs by {mod - vals[-1]:+d} kB: "
                        + (WHY_COUNTER if moves else WHY_ADDRESS)))
    return rows


def _addr_rows(lay: Layout, samples: list[ProcSample]) -> list[Row]:
    r = lay.regions
    specs = [("start_code", r["code"][0], "startcode"), ("end_code", r["code"][1], "endcode"),
             ("start_data", r["data"][0], "start_data"), ("end_data", r["data"][1], "end_data"),
             ("start_brk", r["heap"][0], "start_brk"), ("start_stack", r["stack"][0], "startstack"),
             ("arg_start", r["args"][0], "arg_start"), ("arg_end", r["args"][1], "arg_end"),
             ("env_start", r["env"][0], "env_start"), ("env_end", r["env"][1], "env_end")]
    rows = []
    for name, mod, key in specs:
        vals = [s.stat[key] for s in samples if key in s.stat]
        ok = mod in vals
        note = "" if ok else ("/proc/PID/stat hides addresses from a reader that may not "
                              "ptrace the target" if vals and not any(vals) else WHY_ADDRESS)
        rows.append(Row(f"{name} (stat)", hex(mod), " / ".join(hex(v) for v in
                                                               dict.fromkeys(vals)) or "-",
                        ok, note))
    return rows


def _named(maps: list[sysinfo.MapsLine], name: str) -> sysinfo.MapsLine | None:
    return next((m for m in maps if m.name == name), None)


def _vma_rows(lay: Layout, samples: list[ProcSample]) -> list[Row]:
    rows = []
    page = lay.page_size
    heap_end = -(-lay.regions["heap"][1] // page) * page
    # [heap]: the VMA from start_brk to brk rounded up to a page (none while brk == start)
    want_heap = ((lay.regions["heap"][0], heap_end)
                 if lay.regions["heap"][1] > lay.regions["heap"][0] else None)
    got = [(m.start, m.end) if (m := _named(s.maps, "[heap]")) else None for s in samples]
    rows.append(Row("[heap] (maps) = start_brk..PAGE_ALIGN(brk)",
                    "-" if want_heap is None else f"{want_heap[0]:x}-{want_heap[1]:x}",
                    " / ".join("-" if g is None else f"{g[0]:x}-{g[1]:x}"
                               for g in dict.fromkeys(got)),
                    want_heap in got, "" if want_heap in got else WHY_ADDRESS))
    sv = lay.regions.get("stack_vma")
    got = [(m.start, m.end) if (m := _named(s.maps, "[stack]")) else None for s in samples]
    rows.append(Row("[stack] (maps) = VMA holding start_stack",
                    "-" if sv is None else f"{sv[0]:x}-{sv[1]:x}",
                    " / ".join("-" if g is None else f"{g[0]:x}-{g[1]:x}"
                               for g in dict.fromkeys(got)),
                    sv in got, "" if sv in got else "the stack grew between the samples"))
    # map_count: maps also lists the [vsyscall] gate page, which is no VMA of the mm
    counts = [sum(m.name != "[vsyscall]" for m in s.maps) for s in samples]
    mc = lay.counters["map_count"]
    rows.append(Row("map_count = lines of maps without [vsyscall]", str(mc),
                    " / ".join(map(str, dict.fromkeys(counts))), mc in counts,
                    "" if mc in counts else WHY_ADDRESS))
    mine = {_key(v) for v in lay.vmas}
    # names the backend could not give as maps does are compared by their base name
    inexact = {v.start for v in lay.vmas if not v.name_exact}
    best = min(samples, key=lambda s: len(mine ^ {_mkey(m, inexact) for m in s.maps
                                                 if m.name != "[vsyscall]"}))
    theirs = {_mkey(m, inexact) for m in best.maps if m.name != "[vsyscall]"}
    diff = sorted(mine ^ theirs)
    rows.append(Row("VMAs (start, end, perms, name) = maps", f"{len(mine)} VMAs",
                    f"{len(theirs)} lines", not diff,
                    "" if not diff else f"{len(diff)} differ, first "
                    f"{diff[0][0]:x}-{diff[0][1]:x} {diff[0][3]}: {WHY_ADDRESS}"))
    outside = lay.vma_outside_pgd()
    rows.append(Row("every VMA inside a present top-level entry", f"{len(outside)} outside",
                    "-", not outside and bool(lay.pgd),
                    "" if not outside else f"first outside: {outside[0].start:x}"))
    return rows


def _key(v: Vma) -> tuple:
    name = "" if v.name == "anon" else v.name
    return (v.start, v.end, v.perms, name if v.name_exact else posixpath.basename(name))


def _mkey(m: sysinfo.MapsLine, inexact: set[int] = frozenset()) -> tuple:
    return (m.start, m.end, m.perms,
            posixpath.basename(m.name) if m.start in inexact else m.name)


def check(lay: Layout, before: ProcSample | None, after: ProcSample | None) -> list[Row]:
    samples = [s for s in (before, after) if s is not None]
    if not samples:
        return [Row("/proc/PID", "-", "gone", False, "the process exited")]
    return _counter_rows(lay, samples) + _addr_rows(lay, samples) + _vma_rows(lay, samples)


# `self` is a target that moves by being read: sampling /proc and parsing allocate (a
# Python arena is a 1 MiB mapping), so its layout can change twice between the samples
SELF_ATTEMPTS = 3


def inspect_and_check(pid: int, backend: str = "lkm",
                      engine: str | None = None) -> tuple[Layout, list[Row]]:
    """@pid's Layout between two /proc samples, and the check; the reading process's
    own pid is read again (up to SELF_ATTEMPTS) while a field differs, and says so."""
    from .source import read_layout
    attempts = SELF_ATTEMPTS if pid == os.getpid() else 1
    for attempt in range(1, attempts + 1):
        before = sample_proc(pid)
        lay = read_layout(pid, backend, engine)
        after = sample_proc(pid)
        rows = check(lay, before, after)
        if all(r.agree for r in rows):
            break
    if attempt > 1:
        lay.notes.append(f"check: this process is its own target and allocates while it "
                         f"samples /proc: read and checked {attempt} times, the last shown")
    return lay, rows
