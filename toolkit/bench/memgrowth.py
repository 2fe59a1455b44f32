"""`toolkit bench memgrowth`: run bench/memapp.c step by step and sample each step's
memory layout through one or more kernel backends (the module's /proc/toolkit/vm, the
ebpf side's BPF iterators) and through /proc.

Writes to the run directory: steps.csv (one row per step, the backend's and /proc's
figures side by side), summary.json, report.md and memgrowth.png (heap against bytes
malloc'd, stack against recursion depth, RSS against pages touched).
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from .. import sysinfo
from ..errors import BenchError
from . import raw_file, results

FORMAT_VERSION = 1      # steps.csv and summary.json before the one results format (v3)
KIB = 1024


@dataclasses.dataclass
class Step:
    step: int
    name: str
    small: int          # bytes live below the mmap threshold (brk-served)
    big: int            # bytes live above it (mmap-served)
    depth: int          # bytes of recursion frames live
    touched: int        # pages of the mmap'd region written
    # the backend's view
    heap: int           # brk - start_brk
    stack_vma: int      # size of the VMA holding start_stack
    rss_kib: int
    anon_kib: int
    vmas: int
    vm_kib: int         # total_vm
    # /proc's view
    proc_heap: int      # size of the [heap] line of maps (0: none)
    proc_stack: int     # size of the [stack] line
    proc_rss_kib: int
    proc_anon_kib: int
    proc_vmas: int
    proc_thp_kib: int   # AnonHugePages of /proc/PID/smaps_rollup: transparent huge pages


def _parse_step(line: str) -> tuple[int, str, dict[str, int]]:
    words = line.split()
    if len(words) < 3 or words[0] != "step":
        raise BenchError(f"memapp printed {line!r}, not a step line")
    return int(words[1]), words[2], {k: int(v) for k, v in
                                     (w.split("=", 1) for w in words[3:])}


def sample(pid: int, n: int, name: str, f: dict[str, int], backend: str) -> Step:
    from ..inspect.source import read_layout
    lay = read_layout(pid, backend)
    status = sysinfo.parse_status(sysinfo.read_text(f"/proc/{pid}/status") or "")
    maps = sysinfo.parse_maps(sysinfo.read_text(f"/proc/{pid}/maps") or "")
    rollup = sysinfo.parse_status(sysinfo.read_text(f"/proc/{pid}/smaps_rollup") or "")

    def named(tag):
        m = next((m for m in maps if m.name == tag), None)
        return m.end - m.start if m else 0
    heap = lay.regions["heap"]
    sv = lay.regions.get("stack_vma", (0, 0))
    return Step(n, name, f["small"], f["big"], f["depth"], f["touched"],
                heap=heap[1] - heap[0], stack_vma=sv[1] - sv[0],
                rss_kib=lay.rss_pages * lay.page_size // KIB, anon_kib=lay.kib("rss_anon"),
                vmas=len(lay.vmas), vm_kib=lay.kib("total_vm"), proc_heap=named("[heap]"), proc_stack=named("[stack]"),
                proc_rss_kib=int(status.get("VmRSS", ["0"])[0]),
                proc_anon_kib=int(status.get("RssAnon", ["0"])[0]),
                proc_vmas=sum(m.name != "[vsyscall]" for m in maps),
                proc_thp_kib=int(rollup.get("AnonHugePages", ["0"])[0]))


def run(memapp: Path, backends: str | list[str], progress=None) -> dict[str, list[Step]]:
    """Drive memapp through its script; at each pause, one Step per backend (memapp waits,
    so every backend samples the same state)."""
    if isinstance(backends, str):
        backends = [backends]
    steps: dict[str, list[Step]] = {b: [] for b in backends}
    p = subprocess.Popen([str(memapp)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, bufsize=1)
    try:
        for line in p.stdout:
            if line.strip() == "done":
                break
            n, name, f = _parse_step(line)
            for b in backends:
                steps[b].append(sample(p.pid, n, name, f, b))
                if progress:
                    progress(b, steps[b][-1])
            p.stdin.write("\n")
            p.stdin.flush()
    finally:
        if p.poll() is None:
            p.stdin.close()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    if p.returncode not in (0, None):
        raise BenchError(f"memapp exited with status {p.returncode}")
    if not any(steps.values()):
        raise BenchError("memapp printed no steps")
    return steps


def findings(steps: list[Step]) -> dict:
    """What the figures show, as numbers the report and the lab test both use."""
    by = {s.name: s for s in steps}
    nsmall = sum(s.name.startswith("malloc-small") for s in steps)
    start, small8 = by["start"], by[f"malloc-small-{nsmall}"]
    big = by["malloc-1MiB"]
    prev = steps[steps.index(big) - 1]
    rec = [s for s in steps if s.name.startswith("recurse-")]
    touch = [s for s in steps if s.name in ("mmap-4MiB", "touch")]
    return {
        "heap_growth_small": small8.heap - start.heap,
        "bytes_malloced_small": small8.small - start.small,
        "heap_move_1mib": big.heap - prev.heap,
        # an anonymous mmap next to another anonymous mapping merges with it: the VMA
        # count need not change, total_vm does
        "vm_added_1mib_kib": big.vm_kib - prev.vm_kib,
        "stack_by_depth": [(s.depth, s.stack_vma) for s in rec],
        "rss_by_touched_kib": [(s.touched, s.rss_kib) for s in touch],
        "thp_by_touched_kib": [(s.touched, s.proc_thp_kib) for s in touch],
        "rss_kib_per_page_touched": ((touch[-1].rss_kib - touch[0].rss_kib)
                                     / (touch[-1].touched - touch[0].touched)
                                     if len(touch) > 1 and touch[-1].touched else None),
        "disagreements_with_proc": [s.name for s in steps if (s.heap and -(-s.heap // 4096)
                                    * 4096 != s.proc_heap) or s.stack_vma != s.proc_stack
                                    or s.vmas != s.proc_vmas],
    }


def write_csv(steps: list[Step], path: Path) -> None:
    import pandas as pd
    results.write_csv(pd.DataFrame([dataclasses.asdict(s) for s in steps]), path,
                      "memgrowth")


def read_csv(path: Path) -> list[Step]:
    """steps.csv (or steps.csv.gz) back into Steps (for re-rendering a run and for the
    unit tests)."""
    import pandas as pd
    df = results.check_csv(pd.read_csv(raw_file(path)), path, "memgrowth",
                           legacy=("format_version", (FORMAT_VERSION,)))
    names = [f.name for f in dataclasses.fields(Step)]
    return [Step(**{k: (str(r[k]) if k == "name" else int(r[k])) for k in names})
            for _, r in df.iterrows()]


def plot(steps: list[Step], path: Path, backend: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    mal = [s for s in steps if s.name == "start" or s.name.startswith("malloc")]
    for kind, marker in (("brk-served", "o"), ("mmap-served", "s")):
        pts = [s for s in mal if (s.big == 0) == (kind == "brk-served")]
        ax[0].plot([(s.small + s.big) / KIB for s in pts], [s.heap / KIB for s in pts],
                   marker, label=f"{backend}: heap, {kind} step")
    ax[0].plot([(s.small + s.big) / KIB for s in mal], [s.proc_heap / KIB for s in mal],
               "k+", ms=12, label="/proc: [heap] VMA")
    top = max((s.small + s.big) / KIB for s in mal)
    ax[0].plot([0, top], [mal[0].heap / KIB, mal[0].heap / KIB + top], ":", color="grey",
               label="heap start + bytes malloc'd")
    ax[0].set(xlabel="bytes malloc'd (KiB)", ylabel="heap = brk - start_brk (KiB)",
              title="heap against bytes malloc'd")
    rec = [s for s in steps if s.name.startswith("recurse-") or s.name == "free-all"]
    ax[1].plot([s.depth / KIB for s in rec], [s.stack_vma / KIB for s in rec], "o-",
               label=f"{backend}: VMA holding start_stack")
    ax[1].plot([s.depth / KIB for s in rec], [s.proc_stack / KIB for s in rec], "k+", ms=12,
               label="/proc: [stack] VMA")
    ax[1].set(xlabel="recursion depth (KiB of frames)", ylabel="stack VMA (KiB)",
              title="stack against recursion depth")
    tch = [s for s in steps if s.name in ("mmap-4MiB", "touch")]
    ax[2].plot([s.touched for s in tch], [s.rss_kib / KIB for s in tch], "o-",
               label=f"{backend}: rss anon+file+shmem")
    ax[2].plot([s.touched for s in tch], [s.proc_rss_kib / KIB for s in tch], "k+", ms=12,
               label="/proc: VmRSS")
    ax[2].set(xlabel="pages touched in a 4 MiB mmap", ylabel="RSS (MiB)",
              title="RSS against pages touched")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(steps: list[Step], f: dict, backend: str, params: dict) -> str:
    from tabulate import tabulate
    stack = f["stack_by_depth"]
    lines = [
        "# memgrowth: memapp's layout, step by step", "",
        f"Backend `{backend}` beside /proc; {len(steps)} steps; environment: "
        f"kernel {params['kernel']}. memapp pins glibc's mmap threshold at 128 KiB "
        "(mallopt), so blocks of 64 KiB come from brk and blocks of 1 MiB or more from "
        "their own mmap.", "",
        "## What the figures show", "",
        f"- Eight 64 KiB mallocs ({f['bytes_malloced_small'] // KIB} KiB) moved brk by "
        f"{f['heap_growth_small'] // KIB} KiB: the heap grows by at least what is "
        "malloc'd below the threshold (plus malloc's headers and its top-chunk padding).",
        f"- A 1 MiB malloc moved brk by {f['heap_move_1mib']} bytes and added "
        f"{f['vm_added_1mib_kib']} KiB to total_vm: it is served by its own mmap (which "
        "the kernel may merge into a neighbouring anonymous VMA), not by the heap.",
        "- The stack VMA against recursion depth (KiB): "
        + ", ".join(f"{d // KIB} -> {s // KIB}" for d, s in stack)
        + ": it grows with the frames and never shrinks on return.",
        "- RSS against pages touched in a 4 MiB anonymous mmap: "
        + ", ".join(f"{t} -> {r / KIB:.1f} MiB" for t, r in f["rss_by_touched_kib"])
        + (f" ({f['rss_kib_per_page_touched']:.2f} KiB per page touched): an untouched "
           "mapping costs no RSS." if f["rss_kib_per_page_touched"] is not None else "")
        + " Transparent huge pages (AnonHugePages) meanwhile: "
        + ", ".join(f"{t} -> {k // KIB} MiB" for t, k in f["thp_by_touched_kib"])
        + ": where RSS moves in 2 MiB steps, a fault filled a whole huge page.",
        "- Layout (heap, stack VMA, VMA count) disagreeing with /proc at: "
        + (", ".join(f["disagreements_with_proc"]) or "no step") + ".", "",
        "## Steps", "",
        tabulate([(s.step, s.name, s.small // KIB, s.big // KIB, s.depth // KIB, s.touched,
                   s.heap // KIB, s.proc_heap // KIB, s.stack_vma // KIB, s.proc_stack // KIB,
                   s.rss_kib, s.proc_rss_kib, s.proc_thp_kib, s.vmas, s.proc_vmas)
                  for s in steps],
                 headers=["#", "step", "small KiB", "big KiB", "depth KiB", "touched",
                          "heap KiB", "[heap] KiB", "stack KiB", "[stack] KiB",
                          "RSS KiB", "VmRSS KiB", "THP KiB", "VMAs", "maps"],
                 tablefmt="github"),
        "", "RSS of the backend and VmRSS are read a moment apart and may differ by a few "
        "pages; heap is brk - start_brk, [heap] its VMA (brk rounded up to a page).",
        "", "![memgrowth](memgrowth.png)", ""]
    return "\n".join(lines)


# the figures two backends must give alike at a step (RSS moves between two reads)
SAME_FIELDS = ("heap", "stack_vma", "vmas", "vm_kib")


def compare(runs: dict[str, list[Step]]) -> list[dict]:
    """Step by step, the layout figures on which the backends differ (empty: none)."""
    names = list(runs)
    out = []
    for i, first in enumerate(runs[names[0]]):
        for other in names[1:]:
            s = runs[other][i]
            for fld in SAME_FIELDS:
                a, b = getattr(first, fld), getattr(s, fld)
                if a != b:
                    out.append({"step": first.name, "field": fld, names[0]: a, other: b})
    return out


def compare_report(runs: dict[str, list[Step]], diffs: list[dict], params: dict) -> str:
    from tabulate import tabulate
    names = list(runs)
    rows = []
    for i, s in enumerate(runs[names[0]]):
        row = [s.step, s.name]
        for fld in ("heap", "stack_vma"):
            row += [getattr(runs[b][i], fld) // KIB for b in names]
        row += [runs[b][i].rss_kib for b in names] + [s.proc_rss_kib]
        rows.append(row)
    headers = ["#", "step"] + [f"heap KiB {b}" for b in names] + \
        [f"stack KiB {b}" for b in names] + [f"RSS KiB {b}" for b in names] + ["VmRSS KiB"]
    lines = ["# memgrowth: memapp's layout through " + " and ".join(names), "",
             f"One memapp run on kernel {params['kernel']}; at each pause every backend "
             "and /proc sampled the same state (memapp waits for a line). Each backend's "
             "report and plots: " + ", ".join(f"[{b}]({b}/report.md)" for b in names) + ".",
             "", "## Do the backends agree?", "",
             ("Heap (brk - start_brk), the VMA holding start_stack, the VMA count and "
              "total_vm are equal at every step." if not diffs else
              f"{len(diffs)} differences in heap / stack VMA / VMA count / total_vm:")]
    if diffs:
        lines += ["", tabulate(diffs, headers="keys", tablefmt="github")]
    lines += ["", "RSS is read by each backend a moment apart (and apart from /proc): "
              "a page fault in between moves it.", "",
              tabulate(rows, headers=headers, tablefmt="github"), ""]
    lines += [f"![{b}]({b}/memgrowth.png)" for b in names] + [""]
    return "\n".join(lines)


def _write_one(out_dir: Path, steps: list[Step], backend: str, params: dict) -> dict:
    f = findings(steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(steps, out_dir / "steps.csv")
    plot(steps, out_dir / "memgrowth.png", backend)
    (out_dir / "report.md").write_text(report(steps, f, backend, params))
    return results.write_summary(out_dir, "memgrowth",
                                 {"params": {**params, "backend": backend}, "findings": f})


def memgrowth(out_dir: Path, backends: str | list[str] = "lkm", echo=print) -> dict:
    """One backend: its files in out_dir. Several: each backend's files in
    out_dir/<backend>/, and out_dir/report.md + summary.json comparing them."""
    from .workload import build
    if isinstance(backends, str):
        backends = [backends]
    bins = build()
    out_dir.mkdir(parents=True, exist_ok=True)

    def progress(b: str, s: Step):
        echo(f"memgrowth: step {s.step:2d} {s.name:<16} {b:<5} heap {s.heap // KIB:6d} KiB  "
             f"stack {s.stack_vma // KIB:5d} KiB  rss {s.rss_kib:6d} KiB")
    runs = run(bins.memapp, backends, progress)
    params = {"backends": backends, "kernel": sysinfo.release(), "argv": sys.argv[1:]}
    if len(backends) == 1:
        return _write_one(out_dir, runs[backends[0]], backends[0], params)
    per = {b: _write_one(out_dir / b, runs[b], b, params) for b in backends}
    diffs = compare(runs)
    (out_dir / "report.md").write_text(compare_report(runs, diffs, params))
    return results.write_summary(out_dir, "memgrowth-compare", {
        "params": params, "differences": diffs, "findings": per[backends[0]]["findings"],
        "per_backend": {b: per[b]["findings"] for b in backends}})


def rerender(run_dir: Path, s: dict) -> str:
    """report.md's text again, from the run's steps.csv (per backend for a comparison)
    and its summary (`toolkit report`)."""
    params = s["params"]
    if results.kind_of(s) == "memgrowth":
        steps = read_csv(run_dir / "steps.csv")
        return report(steps, findings(steps), params["backend"], params)
    runs = {b: read_csv(run_dir / b / "steps.csv") for b in params["backends"]}
    return compare_report(runs, s.get("differences") or compare(runs), params)
