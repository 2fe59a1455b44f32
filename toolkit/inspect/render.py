"""A Layout (and its check) as tables for people or JSON for machines."""
from __future__ import annotations

import dataclasses

from tabulate import tabulate

from .check import Row
from .layout import FORMAT_VERSION, PAGE_COUNTERS, REGIONS, Layout


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def to_json(lay: Layout, rows: list[Row] | None, vmas: bool, pgd: bool) -> dict:
    d = {"format": "toolkit-inspect", "version": FORMAT_VERSION, "backend": lay.backend,
         "engine": lay.engine.partition(":")[0], "notes": list(lay.notes), "pid": lay.tgid, "tid": lay.tid, "comm": lay.comm, "page_size": lay.page_size,
         "paging_levels": lay.paging_levels,
         "regions": {k: {"start": s, "end": e, "size": e - s}
                     for k, (s, e) in lay.regions.items()},
         "counters": dict(lay.counters)}
    if vmas:
        d["vmas"] = [dataclasses.asdict(v) for v in lay.vmas]
    if pgd:
        d["pgd"] = [dataclasses.asdict(e) for e in lay.pgd]
    if rows is not None:
        d["check"] = [dataclasses.asdict(r) for r in rows]
    return d


def to_text(lay: Layout, rows: list[Row] | None, vmas: bool, pgd: bool) -> str:
    out = [f"pid {lay.tgid} ({lay.comm}), {lay.paging_levels}-level paging, "
           f"pages of {lay.page_size} B, read by {lay.backend}"
           + (f" (engine {lay.engine})" if lay.engine else "")]
    out += [f"note: {n}" for n in lay.notes]
    out.append("")
    reg = []
    for k in REGIONS:
        if k not in lay.regions:
            continue
        s, e = lay.regions[k]
        if k == "stack":    # one address: where exec left the stack pointer
            reg.append(("stack (start_stack)", f"{s:#x}", "", "argv, env, auxv lie above it"))
        else:
            reg.append((k, f"{s:#x}", f"{e:#x}", _size(e - s)))
    out.append(tabulate(reg, headers=["region", "start", "end", "size"]))
    out.append("")
    cnt = [(k, v, _size(v * lay.page_size)) for k, v in lay.counters.items()
           if k in PAGE_COUNTERS]
    cnt.append(("map_count", lay.counters["map_count"], ""))
    out.append(tabulate(cnt, headers=["counter", "pages", "size"]))
    if vmas:
        out.append("")
        # a name the backend could not give as maps does is marked (see the notes)
        out.append(tabulate([(f"{v.start:#x}", f"{v.end:#x}", _size(v.size), v.perms,
                              v.name if v.name_exact else f"{v.name} (*)")
                             for v in lay.vmas],
                            headers=["start", "end", "size", "perms", "backing"]))
    if pgd:
        out.append("")
        out.append(f"top-level page table (mm->pgd), {lay.paging_levels} levels; "
                   f"{len(lay.pgd)} present entries")
        # x86 sets `user` on every upper-level entry, the kernel half's too: the leaf
        # entries decide; the half is told by the address
        out.append(tabulate([(e.index, "user" if e.start < 1 << 63 else "kernel",
                              f"{e.start:#x}", f"{e.last:#x}", f"{e.next_pfn:#x}",
                              ",".join(e.flags)) for e in lay.pgd],
                            headers=["index", "half", "start", "last", "next-level pfn",
                                     "flags"]))
    if rows is not None:
        out.append("")
        bad = sum(not r.agree for r in rows)
        out.append(f"check against /proc/{lay.tgid}: "
                   + ("every field agrees" if not bad else f"{bad} of {len(rows)} differ"))
        out.append(tabulate([(r.field, r.module, r.proc, "agree" if r.agree else r.note)
                             for r in rows], headers=["field", lay.backend, "/proc", "verdict"]))
    return "\n".join(out)
