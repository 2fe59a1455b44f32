"""/proc/toolkit/vm and `toolkit inspect` in the lab: agreement with /proc, the page
table covering every VMA, the write validation, per-open-file selections, and a target
exiting in the middle of reads."""
from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_lkm import DMESG_BAD, dmesg_lines, ensure_loaded  # noqa: E402

from toolkit.backends import lkm  # noqa: E402
from toolkit.inspect.check import inspect_and_check  # noqa: E402
from toolkit.inspect.layout import parse_layout  # noqa: E402

pytestmark = pytest.mark.kernel
VM = lkm.PROC_DIR / "vm"


@pytest.fixture(autouse=True)
def loaded():
    ensure_loaded(ring_size=16384, proc_gid=-1)


def select(fd: int, pid: int | bytes) -> None:
    os.write(fd, pid if isinstance(pid, bytes) else f"{pid}\n".encode())


def read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_own_process_agrees_with_proc():
    lay, rows = inspect_and_check(os.getpid())
    assert lay.tgid == os.getpid()
    assert [r for r in rows if not r.agree] == []
    # and through the command, as a user runs it
    cp = subprocess.run(["toolkit", "inspect", "self", "--check", "--vmas", "--pgd"],
                        capture_output=True, text=True)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "every field agrees" in cp.stdout


def test_every_vma_inside_a_present_top_level_entry():
    lay, _ = inspect_and_check(os.getpid())
    assert lay.paging_levels in (4, 5) and lay.vmas and lay.pgd
    assert lay.vma_outside_pgd() == []
    user = [e for e in lay.pgd if e.start < 1 << 63]
    assert user and all("user" in e.flags and "present" in e.flags for e in user)


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
        child.wait()


def test_target_exiting_during_reads():
    """200 targets that exit while being read: every read is a whole layout or ESRCH;
    the module's dmesg stays clean."""
    before = len(dmesg_lines())
    whole = gone = 0
    for _ in range(200):
        child = subprocess.Popen(["sleep", "0.01"])
        fd = os.open(VM, os.O_RDWR)
        try:
            try:
                select(fd, child.pid)
            except OSError as e:
                assert e.errno == errno.ESRCH
                gone += 1
                continue
            for _ in range(100_000):     # sleep 0.01 exits long before this
                try:
                    lay = parse_layout(read_fd(fd))
                except OSError as e:
                    assert e.errno == errno.ESRCH
                    gone += 1
                    break
                assert lay.tgid == child.pid
                whole += 1
            else:
                pytest.fail(f"pid {child.pid} still readable after 100000 reads")
        finally:
            os.close(fd)
            child.wait()
    assert gone == 200 and whole > 0
    bad = [line for line in dmesg_lines()[before:] if DMESG_BAD.search(line)]
    assert bad == []


def test_memgrowth_heap_and_stack():
    """memapp under the module: the heap grows by at least the bytes malloc'd below the
    (pinned) mmap threshold, does not move for a 1 MiB malloc, and the stack VMA grows
    with the recursion depth; /proc agrees on the layout at every step."""
    from toolkit.bench.memgrowth import findings, run
    from toolkit.bench.workload import build
    steps = run(build().memapp, "lkm")
    f = findings(steps)
    assert f["heap_growth_small"] >= f["bytes_malloced_small"] == 8 * 64 * 1024
    assert f["heap_move_1mib"] == 0 and f["vm_added_1mib_kib"] >= 1024
    stacks = [s for _, s in f["stack_by_depth"]]
    depths = [d for d, _ in f["stack_by_depth"]]
    assert depths == sorted(depths) and stacks == sorted(stacks) and stacks[-1] > stacks[0]
    assert stacks[-1] >= depths[-1]
    rss = [r for _, r in f["rss_by_touched_kib"]]
    assert rss[-1] - rss[0] >= 1024 * 4 * 0.9      # 1024 pages touched: ~4 MiB of RSS
    assert f["disagreements_with_proc"] == []
