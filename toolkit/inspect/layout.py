"""The text of /proc/toolkit/vm (format documented at the top of lkm/vm.c) as a Layout."""
from __future__ import annotations

import dataclasses

FORMAT_VERSION = 1      # of the JSON that render.py writes from a Layout

# Regions in the order the module prints them.
REGIONS = ("code", "data", "heap", "stack", "stack_vma", "args", "env")
# Counters, in pages except map_count.
PAGE_COUNTERS = ("rss_anon", "rss_file", "rss_shmem", "hiwater_rss", "total_vm",
                 "locked_vm", "data_vm", "exec_vm", "stack_vm")


class LayoutError(ValueError):
    """The text is not what lkm/vm.c prints."""


@dataclasses.dataclass
class Vma:
    start: int
    end: int
    perms: str          # rwxp / rwxs
    pgoff: int          # in pages
    name: str           # a path, [heap], [stack], [vdso], [vvar], or anon
    # False when the backend could not name the file as maps does (ebpf on >= 6.8: an
    # overlayfs backing file by its real path): --check then compares the base name
    name_exact: bool = True

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclasses.dataclass
class PgdEntry:
    index: int
    start: int
    last: int           # inclusive
    raw: int
    next_pfn: int
    flags: list[str]

    def covers(self, start: int, end: int) -> bool:
        """Does [start, end) lie inside this entry's range?"""
        return self.start <= start and end - 1 <= self.last


@dataclasses.dataclass
class Layout:
    tgid: int
    tid: int
    comm: str
    page_size: int
    paging_levels: int
    regions: dict[str, tuple[int, int]]
    counters: dict[str, int]
    vmas: list[Vma]
    pgd: list[PgdEntry]
    backend: str = "lkm"
    engine: str = ""    # a backend with engines: which one read this, and why
    # what this backend read differently from the module, or could not read (ebpf)
    notes: list[str] = dataclasses.field(default_factory=list)

    def kib(self, counter: str) -> int:
        return self.counters[counter] * self.page_size // 1024

    @property
    def rss_pages(self) -> int:
        return sum(self.counters[k] for k in ("rss_anon", "rss_file", "rss_shmem"))

    def vma_outside_pgd(self) -> list[Vma]:
        """VMAs not inside any present top-level entry (should be none)."""
        return [v for v in self.vmas if not any(e.covers(v.start, v.end) for e in self.pgd)]


def _hex(word: str, line: str) -> int:
    try:
        return int(word, 16)
    except ValueError:
        raise LayoutError(f"not a hex number {word!r} in {line!r}") from None


def parse_layout(text: str) -> Layout:
    head: dict[str, str] = {}
    regions: dict[str, tuple[int, int]] = {}
    counters: dict[str, int] = {}
    vmas: list[Vma] = []
    pgd: list[PgdEntry] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key, _, rest = line.partition(" ")
        try:
            if key in ("pid", "comm", "page_size", "paging_levels"):
                head[key] = rest
            elif key == "region":
                name, s, e = rest.split()
                regions[name] = (_hex(s, line), _hex(e, line))
            elif key == "counter":
                name, v = rest.split()
                counters[name] = int(v)
            elif key == "vma":
                s, e, perms, off, name = rest.split(" ", 4)
                vmas.append(Vma(_hex(s, line), _hex(e, line), perms, _hex(off, line), name))
            elif key == "pgd":
                i, s, last, raw, pfn, *fl = rest.split()
                pgd.append(PgdEntry(int(i), _hex(s, line), _hex(last, line), _hex(raw, line),
                                    _hex(pfn, line), fl[0].split(",") if fl else []))
            else:
                raise LayoutError(f"unknown line {line!r}")
        except ValueError as e:
            if isinstance(e, LayoutError):
                raise
            raise LayoutError(f"malformed line {line!r}") from None
    missing = [k for k in ("pid", "comm", "page_size", "paging_levels") if k not in head]
    missing += [r for r in REGIONS if r not in regions and r != "stack_vma"]
    missing += [c for c in (*PAGE_COUNTERS, "map_count") if c not in counters]
    if missing:
        raise LayoutError(f"missing from the module's output: {', '.join(missing)}")
    tgid, tid = (int(w) for w in head["pid"].split())
    return Layout(tgid, tid, head["comm"], int(head["page_size"]),
                  int(head["paging_levels"]), regions, counters, vmas, pgd)
