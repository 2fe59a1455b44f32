"""/proc/toolkit/vm and `toolkit inspect` in the lab, through the module and through the
ebpf side (ebpf/vm.c's BPF iterators): agreement with /proc, the page table covering every
VMA, the two backends agreeing with each other, the write validation, per-open-file
selections, and a target exiting in the middle of reads.

The ebpf side compiles vm.c once per process (~40 s under TCG, more on a shared host):
the module-scoped `ebpf` fixture pays it once for the whole file."""
from __future__ import annotations

import errno
import os
import posixpath
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_lkm import DMESG_BAD, dmesg_lines, ensure_loaded  # noqa: E402
from bounded import readline  # noqa: E402

from toolkit.backends import lkm  # noqa: E402
from toolkit.inspect.check import inspect_and_check  # noqa: E402
from toolkit.inspect.layout import parse_layout  # noqa: E402
from toolkit.errors import InspectError  # noqa: E402
from toolkit.inspect.source import read_layout  # noqa: E402

pytestmark = pytest.mark.kernel
VM = lkm.PROC_DIR / "vm"
BACKENDS = ["lkm", "ebpf"]


@pytest.fixture(autouse=True)
def loaded():
    ensure_loaded(ring_size=16384, proc_gid=-1)


@pytest.fixture(scope="module")
def ebpf():
    """vm.c compiled once for this file (the compile is cached per process)."""
    from toolkit.backends import ebpf_vm
    t0 = time.monotonic()
    ebpf_vm._walker("bcc")
    print(f"ebpf/vm.c compiled in {time.monotonic() - t0:.0f} s")


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "ebpf":
        request.getfixturevalue("ebpf")
    return request.param


def select(fd: int, pid: int | bytes) -> None:
    os.write(fd, pid if isinstance(pid, bytes) else f"{pid}\n".encode())


def read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_own_process_agrees_with_proc(backend):
    lay, rows = inspect_and_check(os.getpid(), backend)
    assert lay.tgid == os.getpid() and lay.backend == backend
    assert [r for r in rows if not r.agree] == []
    # and through the command, as a user runs it (for ebpf that is one more compile)
    cp = subprocess.run(["toolkit", "inspect", "self", "--backend", backend, "--check",
                         "--vmas", "--pgd"], capture_output=True, text=True, timeout=900)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "every field agrees" in cp.stdout and f"read by {backend}" in cp.stdout
    if backend == "ebpf":       # what it reads differently is said
        assert "note: ebpf: the mm is read without being pinned" in cp.stdout


def test_every_vma_inside_a_present_top_level_entry(backend):
    lay, _ = inspect_and_check(os.getpid(), backend)
    assert lay.paging_levels in (4, 5) and lay.vmas and lay.pgd
    assert lay.vma_outside_pgd() == []
    user = [e for e in lay.pgd if e.start < 1 << 63]
    assert user and all("user" in e.flags and "present" in e.flags for e in user)


THREADED = ("import sys, threading, time\n"
            "for _ in range(2):\n"
            "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")


@pytest.fixture
def stopped_threaded():
    """A stopped process with three threads: it cannot fault, map or grow, so nothing it
    does moves a counter between two reads (a kernel reclaiming its pages in between
    would; an idle 4 GiB lab VM does not reclaim)."""
    child = subprocess.Popen([sys.executable, "-c", THREADED], stdout=subprocess.PIPE)
    try:
        assert readline(child.stdout, what="the threaded child's ready") == b"ready\n"
        os.kill(child.pid, signal.SIGSTOP)
        assert len(os.listdir(f"/proc/{child.pid}/task")) == 3
        yield child.pid
    finally:
        child.kill()
        child.wait(30)


def assert_same_layout(a, b):
    """Module layout @a and eBPF layout @b field by field, the tolerance zero; each VMA
    once, though every thread shares them."""
    assert (b.tgid, b.tid, b.comm, b.page_size, b.paging_levels) == \
        (a.tgid, a.tid, a.comm, a.page_size, a.paging_levels)
    assert b.regions == a.regions
    assert b.counters == a.counters
    # names: whole, except a backing file's the ebpf side could only give by its
    # real path (6.8+, overlayfs; marked not exact): its base name
    inexact = {v.start for v in b.vmas if not v.name_exact}
    assert [(v.start, v.end, v.perms, v.pgoff,
             posixpath.basename(v.name) if v.start in inexact else v.name)
            for v in b.vmas] == \
        [(v.start, v.end, v.perms, v.pgoff,
          posixpath.basename(v.name) if v.start in inexact else v.name)
         for v in a.vmas]
    # user-half entries exactly; kernel-half raw bits too (the accessed bit of a
    # kernel entry is the CPU's to set at any time, so flags are compared as names)
    assert [(e.index, e.start, e.last, e.next_pfn) for e in b.pgd] == \
        [(e.index, e.start, e.last, e.next_pfn) for e in a.pgd]
    assert [set(e.flags) - {"accessed"} for e in b.pgd] == \
        [set(e.flags) - {"accessed"} for e in a.pgd]


def test_lkm_and_ebpf_give_the_same_layout(ebpf, stopped_threaded):
    """BCC's ebpf/vm.c against the module."""
    assert_same_layout(read_layout(stopped_threaded, "lkm"),
                       read_layout(stopped_threaded, "ebpf", "bcc"))


def test_lkm_and_ebpf_core_give_the_same_layout(stopped_threaded):
    """The CO-RE object (loaded, not compiled: no BCC here) against the module, and its
    --check against /proc: the same layout field for field, every name as maps gives it
    (CO-RE walks a backing file's user path itself), the check clean."""
    t0 = time.monotonic()
    b = read_layout(stopped_threaded, "ebpf", "core")
    print(f"ebpf/core/build/vm.bpf.o loaded and read in {time.monotonic() - t0:.1f} s")
    assert_same_layout(read_layout(stopped_threaded, "lkm"), b)
    assert all(v.name_exact for v in b.vmas) and b.engine.startswith("core")
    lay, rows = inspect_and_check(stopped_threaded, "ebpf", "core")
    assert [r for r in rows if not r.agree] == []


def test_ebpf_refuses_what_the_module_refuses(ebpf):
    """The BPF programs' own verdicts (user space's pid checks skipped): a kernel thread,
    a pid nobody has; and the names only BPF-side lookups give: [vdso], full paths."""
    from toolkit.backends.ebpf import EbpfBackend
    with pytest.raises(InspectError, match="kernel thread"):
        EbpfBackend.layout(2)
    with pytest.raises(InspectError, match="exited|no process"):
        EbpfBackend.layout(4194000)
    lay = read_layout(os.getpid(), "ebpf")
    assert any(v.name == "[vdso]" for v in lay.vmas)
    assert any(v.name.startswith("/") and "python" in v.name for v in lay.vmas), \
        [v.name for v in lay.vmas]


def test_write_fuzz_keeps_the_previous_selection():
    fd = os.open(VM, os.O_RDWR)
    try:
        select(fd, os.getpid())
        bad = [b"", b"\n", b"abc", b"12a", b"-1", b"+1", b"0", b" 1", b"1 ", b"1\n\n",
               b"0x10", b"1" * 33, b"9" * 40 + b"\n", b"\x00", b"1\x00"]
        rnd = random.Random(11)
        bad += [bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 64)))
                for _ in range(200)]
        bad = [b for b in bad if not (b.rstrip(b"\n").isdigit() and b.count(b"\n") <= 1
                                      and len(b) <= 32)]
        for b in bad:
            with pytest.raises(OSError) as e:
                os.write(fd, b)
            assert e.value.errno == errno.EINVAL, b
        with pytest.raises(OSError) as e:
            select(fd, 4194000)             # above any pid in use: ESRCH
        assert e.value.errno == errno.ESRCH
        with pytest.raises(OSError) as e:
            select(fd, 2)                   # kthreadd: a kernel thread
        assert e.value.errno == errno.EINVAL
        assert parse_layout(read_fd(fd)).tgid == os.getpid()
    finally:
        os.close(fd)


def test_unselected_read_is_einval():
    fd = os.open(VM, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            os.read(fd, 100)
        assert e.value.errno == errno.EINVAL
    finally:
        os.close(fd)


def test_two_open_files_keep_their_own_selection():
    child = subprocess.Popen(["sleep", "30"])
    a, b = os.open(VM, os.O_RDWR), os.open(VM, os.O_RDWR)
    try:
        select(a, os.getpid())
        select(b, child.pid)
        for _ in range(3):
            assert parse_layout(read_fd(a)).tgid == os.getpid()
            lb = parse_layout(read_fd(b))
            assert lb.tgid == child.pid and lb.comm == "sleep"
    finally:
        os.close(a)
        os.close(b)
        child.kill()
        child.wait(30)


# reads of a target that exits meanwhile, 200 rounds on both sides: an ebpf read (two
# iterator walks) took 8 ms in the lab on 6.1, about what spawning the target costs, so
# the ebpf rounds add ~45 s, as the module's do
EXIT_ROUNDS = {"lkm": 200, "ebpf": 200}


def _read_backend(backend: str, pid: int, fd: int | None):
    """One read of @pid: its Layout, or None when it is gone (ESRCH / InspectError)."""
    if backend == "lkm":
        try:
            return parse_layout(read_fd(fd))
        except OSError as e:
            assert e.errno == errno.ESRCH
            return None
    try:
        return read_layout(pid, "ebpf")
    except InspectError:
        return None


def test_target_exiting_during_reads(backend):
    """Targets that exit while being read: every read is a whole layout or a clean "gone"
    (ESRCH from the module, InspectError from either side); dmesg stays clean."""
    before = len(dmesg_lines())
    whole = gone = 0
    rounds = EXIT_ROUNDS[backend]
    for _ in range(rounds):
        child = subprocess.Popen(["sleep", "0.01"])
        fd = os.open(VM, os.O_RDWR) if backend == "lkm" else None
        try:
            if fd is not None:
                try:
                    select(fd, child.pid)
                except OSError as e:
                    assert e.errno == errno.ESRCH
                    gone += 1
                    continue
            for _ in range(100_000):     # sleep 0.01 exits long before this
                lay = _read_backend(backend, child.pid, fd)
                if lay is None:
                    gone += 1
                    break
                assert lay.tgid == child.pid
                whole += 1
            else:
                pytest.fail(f"pid {child.pid} still readable after 100000 reads")
        finally:
            if fd is not None:
                os.close(fd)
            child.wait(30)
    assert gone == rounds and whole > 0
    bad = [line for line in dmesg_lines()[before:] if DMESG_BAD.search(line)]
    assert bad == []


def test_memgrowth_heap_and_stack(ebpf, tmp_path):
    """`toolkit bench memgrowth --backend lkm,ebpf` as a user runs it (in this
    interpreter: a new one costs ~45 s of imports under TCG), memapp sampled at every
    step through both backends: the heap grows by at least the bytes malloc'd below the
    (pinned) mmap threshold, does not move for a 1 MiB malloc, and the stack VMA grows
    with the recursion depth; /proc agrees on the layout at every step, and so do the two
    backends with each other. Each backend's steps.csv, report.md, memgrowth.png and
    summary.json, and the comparison's, are in the run directory."""
    import json

    from click.testing import CliRunner

    from toolkit.bench.memgrowth import compare, findings, read_csv
    from toolkit.cli import main
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["bench", "memgrowth", "--backend", ",".join(BACKENDS),
                                  "--out", str(out)])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 0, r.output
    assert r.stdout.rstrip().endswith(f"run directory: {out}"), r.stdout
    assert "the same heap, stack VMA, VMA count and total_vm at every step" in r.stdout
    runs = {b: read_csv(out / b / "steps.csv") for b in BACKENDS}
    for backend, steps in runs.items():
        assert {"report.md", "memgrowth.png", "summary.json"} <= \
            {f.name for f in (out / backend).iterdir()}, backend
        f = findings(steps)
        assert f["heap_growth_small"] >= f["bytes_malloced_small"] == 8 * 64 * 1024, backend
        assert f["heap_move_1mib"] == 0 and f["vm_added_1mib_kib"] >= 1024, backend
        stacks = [s for _, s in f["stack_by_depth"]]
        depths = [d for d, _ in f["stack_by_depth"]]
        assert depths == sorted(depths) and stacks == sorted(stacks), backend
        assert stacks[-1] > stacks[0] and stacks[-1] >= depths[-1], backend
        rss = [r for _, r in f["rss_by_touched_kib"]]
        assert rss[-1] - rss[0] >= 1024 * 4 * 0.9, backend  # 1024 pages touched: ~4 MiB
        assert f["disagreements_with_proc"] == [], backend
    assert compare(runs) == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["differences"] == [] and set(summary["per_backend"]) == set(BACKENDS)

