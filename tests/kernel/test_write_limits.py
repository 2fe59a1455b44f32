"""The module's writable files at their exact limits, in the lab: /proc/toolkit/control
takes 256 bytes and not 257, /proc/toolkit/quota 1024 and not 1025 (each write applied
whole or not at all), and /proc/toolkit/vm parses what the fuzz in test_inspect.py filters
out: all-digit inputs that are 0 or overflow an int reach kstrtoint and are refused, and
its own limit (32 bytes) holds exactly.
Several writers at once each get their write applied whole; root cannot write the
read-only files nor read the write-only one. Each refusal changes nothing.

The quota file is read and written here directly (its format is the module's, documented
at the top of lkm/quota_proc.c), not through toolkit/backends/lkm_quota.py."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_inspect import VM, read_fd, select  # noqa: E402
from test_lkm import ensure_loaded, settings, write_control  # noqa: E402

from toolkit.backends import lkm  # noqa: E402
from toolkit.inspect.layout import parse_layout  # noqa: E402

pytestmark = pytest.mark.kernel

CONTROL_MAX = 256       # TK_CONTROL_MAX, lkm/toolkit_lkm.h
QUOTA_MAX = 1024        # TK_QUOTA_WRITE_MAX, lkm/quota_proc.c
QUOTA = lkm.PROC_DIR / "quota"


@pytest.fixture(autouse=True)
def loaded():
    ensure_loaded(ring_size=16384, proc_gid=-1)


def padded(cmd: bytes, n: int) -> bytes:
    """`cmd` padded with trailing blanks (which the parser strips) to exactly n bytes."""
    data = cmd + b" " * (n - len(cmd))
    assert len(data) == n
    return data


def restore(uid, events) -> None:
    write_control(b"uid " + (b"off" if uid is None else str(uid).encode()) + b"\nppid off\n"
                  b"events " + (",".join(events).encode() or b"none"))


def test_control_takes_256_bytes_and_refuses_257():
    uid, events = settings()
    try:
        write_control(b"uid 11")
        for n in (CONTROL_MAX - 1, CONTROL_MAX):
            write_control(padded(b"uid %d" % n, n))
            assert settings()[0] == n
        with pytest.raises(OSError) as e:
            write_control(padded(b"uid 257", CONTROL_MAX + 1))
        assert e.value.errno == errno.EINVAL
        assert settings()[0] == CONTROL_MAX        # nothing of it applied
    finally:
        restore(uid, events)


def quota_rows() -> dict[int, dict]:
    """/proc/toolkit/quota by pid: {files, files_quota, heap_quota, comm}."""
    rows = {}
    for line in QUOTA.read_text().splitlines():
        if line and not line.startswith("#"):
            pid, _start, comm, _heap, heap_q, files, files_q, _state = line.split(" ")
            rows[int(pid)] = {"comm": comm, "heap_quota": int(heap_q), "files": int(files),
                              "files_quota": int(files_q)}
    return rows


def quota_write(data: bytes) -> None:
    fd = os.open(QUOTA, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_quota_takes_1024_bytes_and_refuses_1025():
    child = subprocess.Popen(["sleep", "60"])
    fd = os.open(QUOTA, os.O_WRONLY)
    try:
        for n in (QUOTA_MAX - 1, QUOTA_MAX):
            assert os.write(fd, padded(b"set %d files=%d" % (child.pid, n), n)) == n
            assert quota_rows()[child.pid]["files_quota"] == n
        with pytest.raises(OSError) as e:
            os.write(fd, padded(b"set %d files=7" % child.pid, QUOTA_MAX + 1))
        assert e.value.errno == errno.EINVAL
        assert quota_rows()[child.pid]["files_quota"] == QUOTA_MAX     # unchanged
    finally:
        os.close(fd)
        quota_write(b"clear %d\n" % child.pid)
        child.kill()
        child.wait(30)
    assert child.pid not in quota_rows()


def test_vm_all_digit_inputs_that_are_no_pid():
    """0 and numbers past INT_MAX are all digits, so they pass the digit check and reach
    kstrtoint: EINVAL; a valid int that is no process: ESRCH. The selection stays."""
    fd = os.open(VM, os.O_RDWR)
    try:
        select(fd, os.getpid())
        for data, err in ((b"0", errno.EINVAL), (b"0\n", errno.EINVAL), (b"00", errno.EINVAL),
                          (b"2147483648", errno.EINVAL), (b"4294967296\n", errno.EINVAL),
                          (b"9" * 32, errno.EINVAL), (b"1" * 33, errno.EINVAL),
                          (b"2147483647", errno.ESRCH), (b"4194305\n", errno.ESRCH)):
            with pytest.raises(OSError) as e:
                os.write(fd, data)
            assert e.value.errno == err, data
            assert parse_layout(read_fd(fd)).tgid == os.getpid(), data
        # the length limit exactly (TK_VM_WRITE_MAX, 32 bytes): a pid with leading zeros
        # selects at 32 bytes and is refused at 33; the 32-byte one selected the child
        child = subprocess.Popen(["sleep", "60"])
        try:
            assert os.write(fd, b"%032d" % child.pid) == 32
            assert parse_layout(read_fd(fd)).tgid == child.pid
            for data in (b"%033d" % os.getpid(), b"%032d\n" % os.getpid()):
                with pytest.raises(OSError) as e:
                    os.write(fd, data)
                assert e.value.errno == errno.EINVAL, data
                assert parse_layout(read_fd(fd)).tgid == child.pid, data
        finally:
            child.kill()
            child.wait(30)
    finally:
        os.close(fd)


WRITERS, ROUNDS = 4, 100


def _together(work) -> None:
    """work(i) in WRITERS threads started at once (os.write drops the GIL: the writes
    meet in the module); the first exception is raised here."""
    go, errs = threading.Barrier(WRITERS), []

    def body(i):
        try:
            go.wait(30)
            work(i)
        except BaseException as e:    # noqa: BLE001 - re-raised below
            errs.append(e)
    ts = [threading.Thread(target=body, args=(i,)) for i in range(WRITERS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not any(t.is_alive() for t in ts), "a writer is still writing after 120 s"
    if errs:
        raise errs[0]


def test_several_writers_at_once_each_applied_whole():
    """WRITERS threads at once, ROUNDS writes each. Control: each sets uid and ppid to its
    own number in one write; the writes are applied one at a time (tk_control_lock), so
    the last one stands whole: uid == ppid, one writer's number. Quota: each sets its own
    child's quota, every round; the last of each stands. vm: each selects its own child on
    its own open file and reads back that child, every round."""
    uid, events = settings()
    kids = [subprocess.Popen(["sleep", "60"]) for _ in range(WRITERS)]

    def writer(i):
        n = 1000 + i
        fd = os.open(VM, os.O_RDWR)
        try:
            for r in range(ROUNDS):
                write_control(b"uid %d\nppid %d\n" % (n, n))
                quota_write(b"set %d files=%d" % (kids[i].pid, 10 + r))
                select(fd, kids[i].pid)
                assert parse_layout(read_fd(fd)).tgid == kids[i].pid
        finally:
            os.close(fd)
    try:
        _together(writer)
        s = lkm.read_stats().extra
        assert s["uid_filter"] == s["ppid_filter"] in range(1000, 1000 + WRITERS), s
        q = quota_rows()
        assert [q[k.pid]["files_quota"] for k in kids] == [10 + ROUNDS - 1] * WRITERS, q
    finally:
        restore(uid, events)
        for k in kids:
            quota_write(b"clear %d" % k.pid)
            k.kill()
            k.wait(30)


def test_root_cannot_write_the_read_only_files():
    """events, processes, meminfo and stats have no write handler and control no read
    handler: even root gets EIO (fs/proc/inode.c), and nothing changes."""
    def state():
        return (settings(), lkm.loaded_params(),
                {p: (r["heap_quota"], r["files_quota"]) for p, r in quota_rows().items()})
    before = state()
    for name in ("events", "processes", "meminfo", "stats"):
        fd = os.open(lkm.PROC_DIR / name, os.O_WRONLY)
        try:
            for data in (b"reset\n", b"clear\n", b"uid 5\n", b"1\n"):
                with pytest.raises(OSError) as e:
                    os.write(fd, data)
                assert e.value.errno == errno.EIO, (name, data)
        finally:
            os.close(fd)
    fd = os.open(lkm.PROC_DIR / "control", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            os.read(fd, 100)
        assert e.value.errno == errno.EIO
    finally:
        os.close(fd)
    assert state() == before
