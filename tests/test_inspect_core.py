"""`toolkit inspect --backend ebpf --engine core` natively: the CO-RE build of
ebpf/tk_vm.h (ebpf/core/vm.bpf.o) against /proc on this kernel (these need root and a
kernel with BTF: this host has both; under CI=true a skip is a failure,
tests/conftest.py). The lab compares the same object with the module on 6.1 and 6.12
(tests/kernel/test_inspect.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bounded import readline  # noqa: E402

from toolkit import sysinfo  # noqa: E402
from toolkit.backends import engines  # noqa: E402
from toolkit.errors import InspectError  # noqa: E402
from toolkit.inspect import check  # noqa: E402
from toolkit.inspect.source import read_layout  # noqa: E402

TOOLKIT = Path(sys.executable).parent / "toolkit"
# a process with a heap, a 16 MiB anonymous mapping it touched, a deleted file still
# mapped, a shared anonymous mapping (/dev/zero (deleted)) and two threads
CHILD = r"""
import mmap, os, sys, tempfile, threading, time
heap = [bytearray(4096) for _ in range(2000)]
anon = mmap.mmap(-1, 16 << 20)
anon.write(b"x" * (16 << 20))
shared = mmap.mmap(-1, 8192, flags=mmap.MAP_SHARED)
shared[0] = 1
fd, path = tempfile.mkstemp(prefix="tk inspect ")
os.write(fd, b"y" * 8192)
gone = mmap.mmap(fd, 8192, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
os.unlink(path)
for _ in range(2):
    threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
print("ready", flush=True)
time.sleep(120)
"""


@pytest.fixture(autouse=True)
def _needs_core():
    why = engines.core_blocker() or (None if os.geteuid() == 0 else "not root")
    if why:
        pytest.skip(f"the CO-RE engine cannot run here: {why}")


@pytest.fixture
def stopped():
    """The child, stopped: nothing it does moves a counter or a mapping between two
    reads, so the tolerance is zero."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE)
    try:
        assert readline(child.stdout, what="the child's ready") == b"ready\n"
        os.kill(child.pid, signal.SIGSTOP)
        yield child.pid
    finally:
        child.kill()
        child.wait(30)


def tk(*args, timeout=120):
    return subprocess.run([str(TOOLKIT), *args], capture_output=True, text=True,
                          timeout=timeout)


def test_stopped_process_agrees_with_proc_exactly(stopped):
    lay = read_layout(stopped, "ebpf", "core")
    proc = check.sample_proc(stopped)
    rows = check.check(lay, proc, proc)
    assert [r for r in rows if not r.agree] == []
    assert lay.backend == "ebpf" and lay.engine.startswith("core")
    # counters exactly as status shows them: on 6.2+ that needs every CPU's delta
    kib = {k: int(v[0]) for k, v in proc.status.items() if v and v[-1:] == ["kB"]}
    assert lay.rss_pages * 4 == kib["VmRSS"]
    assert (lay.kib("rss_anon"), lay.kib("rss_file"), lay.kib("rss_shmem")) == \
        (kib["RssAnon"], kib["RssFile"], kib["RssShmem"])
    assert lay.kib("hiwater_rss") == kib["VmHWM"] and lay.kib("total_vm") == kib["VmSize"]
    assert lay.kib("rss_anon") >= 8 << 10         # most of the touched 16 MiB
    # every VMA, named as maps names it, the deleted file and /dev/zero included
    maps = [(m.start, m.end, m.perms, m.name) for m in proc.maps if m.name != "[vsyscall]"]
    assert [(v.start, v.end, v.perms, "" if v.name == "anon" else v.name)
            for v in lay.vmas] == maps
    names = {v.name for v in lay.vmas}
    assert "/dev/zero (deleted)" in names and "[vdso]" in names and "[heap]" in names
    assert any(n.startswith("/tmp/tk inspect ") and n.endswith(" (deleted)") for n in names)
    assert all(v.name_exact for v in lay.vmas)
    # what this kernel hides is said, never guessed silently
    if not sysinfo.kallsyms_addr("pgdir_shift")["pgdir_shift"]:
        assert any("paging depth from TASK_SIZE" in n for n in lay.notes)


def test_pgd_entries_cover_the_vmas(stopped):
    lay = read_layout(stopped, "ebpf", "core")
    shift = 48 if lay.paging_levels == 5 else 39
    assert lay.paging_levels in (4, 5) and lay.pgd and lay.vma_outside_pgd() == []
    user = [e for e in lay.pgd if e.start < 1 << 63]
    assert user and all({"present", "user"} <= set(e.flags) for e in user)
    for e in lay.pgd:
        assert e.last - e.start == (1 << shift) - 1 and 0 <= e.index < 512
        assert (e.start >> shift) & 511 == e.index and e.start % (1 << shift) == 0
    # each user entry holds at least one VMA: the tables below the top are freed with
    # the last mapping they served
    assert all(any(e.covers(v.start, v.end) for v in lay.vmas) for e in user)


def test_command_check_is_clean_and_json_names_the_engine():
    cp = tk("inspect", "self", "--backend", "ebpf", "--engine", "core", "--check",
            "--vmas", "--pgd")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "every field agrees" in cp.stdout and "read by ebpf (engine core" in cp.stdout
    assert "note: ebpf: the mm is read without being pinned" in cp.stdout
    cp = tk("inspect", "self", "--backend", "ebpf", "--engine", "core", "--format", "json")
    assert cp.returncode == 0, cp.stderr
    d = json.loads(cp.stdout)
    assert (d["backend"], d["engine"]) == ("ebpf", "core") and d["counters"]["map_count"]


@pytest.mark.parametrize("pid, message", [
    ("abc", "is not a process id"), ("0", "is not a process id"),
    ("4194000", "no process with pid"), ("2", "is a kernel thread")])
def test_bad_input_is_a_clear_error(pid, message):
    cp = tk("inspect", pid, "--backend", "ebpf", "--engine", "core")
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    assert message in cp.stderr and "error:" in cp.stderr


def test_engine_on_a_backend_without_engines_is_refused():
    cp = tk("inspect", "self", "--backend", "lkm", "--engine", "core")
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    assert "--engine applies to --backend ebpf" in cp.stderr


def test_the_programs_own_verdicts():
    """Past user space's pid checks: a kernel thread and a pid nobody has, as the BPF
    walks see them; and a process that has exited (reaped) by the time it is read."""
    from toolkit.backends.ebpf_core import EbpfCoreBackend
    with pytest.raises(InspectError, match="kernel thread"):
        EbpfCoreBackend.layout(2)
    with pytest.raises(InspectError, match="exited|no process"):
        EbpfCoreBackend.layout(4194000)
    child = subprocess.Popen(["true"])
    child.wait(30)
    with pytest.raises(InspectError, match="exited|no process"):
        EbpfCoreBackend.layout(child.pid)
    with pytest.raises(InspectError, match="no process"):
        read_layout(child.pid, "ebpf", "core")
