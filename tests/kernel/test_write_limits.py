"""The module's writable files at their exact limits, in the lab: /proc/toolkit/control
takes 256 bytes and not 257, /proc/toolkit/quota 1024 and not 1025 (each write applied
whole or not at all), and /proc/toolkit/vm parses what the fuzz in test_inspect.py filters
out: all-digit inputs that are 0 or overflow an int reach kstrtoint and are refused."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_inspect import VM, read_fd, select  # noqa: E402
from test_lkm import ensure_loaded, settings, write_control  # noqa: E402

from toolkit.backends import lkm_quota  # noqa: E402
from toolkit.inspect.layout import parse_layout  # noqa: E402

pytestmark = pytest.mark.kernel

CONTROL_MAX = 256       # TK_CONTROL_MAX, lkm/toolkit_lkm.h
QUOTA_MAX = 1024        # TK_QUOTA_WRITE_MAX, lkm/quota_proc.c


@pytest.fixture(autouse=True)
def loaded():
    ensure_loaded(ring_size=16384, proc_gid=-1)


def padded(cmd: bytes, n: int) -> bytes:
    """`cmd` padded with trailing blanks (which the parser strips) to exactly n bytes."""
    data = cmd + b" " * (n - len(cmd))
    assert len(data) == n
    return data


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
        write_control(b"uid " + (b"off" if uid is None else str(uid).encode()) + b"\nevents "
                      + (",".join(events).encode() or b"none"))


def quota_of(pid: int):
    return next((r for r in lkm_quota.read()[0] if r.pid == pid), None)


def test_quota_takes_1024_bytes_and_refuses_1025():
    child = subprocess.Popen(["sleep", "60"])
    fd = os.open(lkm_quota.QUOTA_FILE, os.O_WRONLY)
    try:
        for n in (QUOTA_MAX - 1, QUOTA_MAX):
            assert os.write(fd, padded(b"set %d files=%d" % (child.pid, n), n)) == n
            assert quota_of(child.pid).files_quota == n
        with pytest.raises(OSError) as e:
            os.write(fd, padded(b"set %d files=7" % child.pid, QUOTA_MAX + 1))
        assert e.value.errno == errno.EINVAL
        assert quota_of(child.pid).files_quota == QUOTA_MAX     # unchanged
    finally:
        os.close(fd)
        lkm_quota.write(f"clear {child.pid}")
        child.kill()
        child.wait(30)
    assert quota_of(child.pid) is None


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
    finally:
        os.close(fd)
