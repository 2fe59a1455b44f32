"""Reading one pid's Layout through a backend's `layout(pid)` capability.

The backends own the kernel I/O (lkm: /proc/toolkit/vm, toolkit/backends/lkm.py; ebpf:
ebpf/vm.c's iterators, toolkit/backends/ebpf_vm.py) and give the module's text; this
file checks the pid first, then parses what the backend read.
"""
from __future__ import annotations

import os

from .. import sysinfo
from ..backends import base
from ..errors import BackendError, InspectError
from .layout import Layout, LayoutError, parse_layout


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


def backend_for(backend: str, engine: str | None = None):
    """(class, engine, reason) that reads layouts for --backend/--engine: for a backend
    with engines, --engine (auto: what runs here, engines.resolve), else the class."""
    try:
        base.registered_class(backend)
    except KeyError:
        raise BackendError(f"unknown backend {backend!r}; choose one of "
                           f"{', '.join(base.REGISTRY)}") from None
    if backend not in base.ENGINE_BACKENDS:
        if engine not in (None, "auto"):
            raise BackendError(f"--engine applies to --backend "
                               f"{', '.join(base.ENGINE_BACKENDS)} only, not {backend}")
        return base.registered_class(backend), "", ""
    from ..backends import engines
    engine, reason = engines.resolve(engine)
    return base.backend_class(backend, engine), engine, reason


def read_layout(pid: int, backend: str = "lkm", engine: str | None = None) -> Layout:
    """@pid's Layout as the backend named @backend reads it (on @engine, for a backend
    with engines: None is auto)."""
    cls, engine, reason = backend_for(backend, engine)
    check_pid(pid)
    got = cls.layout(pid)
    try:
        lay = parse_layout(got.text)
    except LayoutError as e:
        raise BackendError(f"unexpected layout from the {backend} backend: {e}") from None
    for v in lay.vmas:
        v.name_exact = v.start not in got.inexact_names
    lay.backend, lay.notes = cls.name, list(got.notes)
    lay.engine = f"{engine}: {reason}" if engine else ""
    return lay
