"""Reading one pid's Layout through a backend.

lkm: open /proc/toolkit/vm, write the pid, seek to 0, read (the selection belongs to that
open file). ebpf: ebpf/vm.c's task and task_vma iterators (ebpf_source.py), whose output
is the module's text.
"""
from __future__ import annotations

import errno
import os

from .. import sysinfo
from ..errors import BackendError, ToolkitError
from .layout import Layout, LayoutError, parse_layout

class InspectError(ToolkitError):
    """A pid that cannot be inspected (no such process, a kernel thread, gone)."""


def parse_pid(text: str) -> int:
    """A decimal pid, or `self` (the calling process: what makes sense with --lab, where
    the host's pids mean nothing)."""
    if text == "self":
        return os.getpid()
    if not text.isascii() or not text.isdigit():
        raise InspectError(f"{text!r} is not a process id", hint="a decimal number, or self")
    return int(text)


def check_pid(pid: int) -> None:
    """Refuse, before asking the kernel, what /proc already says cannot be inspected."""
    if pid <= 0:
        raise InspectError(f"{pid} is not a process id (a positive number)")
    kt = sysinfo.is_kernel_thread(pid)
    if kt is None:
        raise InspectError(f"no process with pid {pid}")
    if kt:
        comm = (sysinfo.read_text(f"/proc/{pid}/comm") or "?").strip()
        raise InspectError(f"pid {pid} ({comm}) is a kernel thread: it has no user memory "
                           "to inspect")


def read_vm_text(pid: int) -> str:
    """The module's text for @pid; errors as the module returns them, explained."""
    from ..backends import lkm
    path = lkm.PROC_DIR / "vm"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise BackendError(f"{path} does not exist: {lkm.MODULE} is not loaded "
                           "(or is older than `inspect`)",
                           hint="`toolkit lkm load`, or add --lab") from None
    except PermissionError:
        raise BackendError(f"{path} is root-only", hint="run as root") from None
    try:
        try:
            os.write(fd, f"{pid}\n".encode())
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise InspectError(f"no process with pid {pid} (or it has exited)") from None
            if e.errno == errno.EINVAL:
                raise InspectError(f"pid {pid} cannot be inspected: a kernel thread, "
                                   "or not a valid pid") from None
            raise
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        try:
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise InspectError(f"pid {pid} exited while being read") from None
            raise
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(fd)


def read_layout(pid: int, backend: str = "lkm") -> Layout:
    if backend not in ("lkm", "ebpf"):
        raise BackendError(f"unknown backend {backend!r} for inspect", hint="lkm or ebpf")
    check_pid(pid)
    if backend == "ebpf":
        from .ebpf_source import read_layout_ebpf
        return read_layout_ebpf(pid)
    from ..backends import lkm
    if not lkm.is_loaded():
        lkm.load()
    try:
        return parse_layout(read_vm_text(pid))
    except LayoutError as e:
        raise BackendError(f"unexpected output of /proc/toolkit/vm: {e}") from None
