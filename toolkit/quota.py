"""Per-process quotas on heap and open files, enforced from the kernel by SIGKILL.

What the module (lkm/quota.c) and the eBPF programs (ebpf/quota.c) enforce, from
Python: the size and count parsers the CLI uses, the checks of a target, and
``spawn_registered``: start a command already under its quotas. The kernel sides are
behind the Quotas interface (toolkit/backends/quotas.py: lkm_quota.py, ebpf_quota.py).

heap  = mm->data_vm in bytes: the private, writable, non-stack memory that RLIMIT_DATA
        limits (the brk heap plus private writable mappings: anonymous mmap, writable
        private file mappings, a binary's .data/.bss), read when brk, mmap, munmap,
        mremap or mprotect returns.
files = open file descriptors (the bits set in the fd table), checked whenever one is
        created (fd_install, dup2, dup3); those open at registration count.
"""
from __future__ import annotations

import os
import re
import signal
from typing import Callable, Sequence

from . import schema, sysinfo
from .errors import QuotaError

FILES_MAX = 2**31 - 1        # the module's limit (INT_MAX)
HEAP_MAX = 2**63 - 1
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'64M' -> 67108864: a positive whole number of bytes with an optional binary
    suffix K, M, G or T (powers of 1024; 'KiB', 'MB' are accepted too)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.I)
    if not m:
        raise QuotaError(f"heap quota {text!r} is not a size",
                         hint="a positive whole number of bytes, with K, M or G (e.g. 64M)")
    n = int(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if n <= 0 or n > HEAP_MAX:
        raise QuotaError(f"heap quota {text!r} is out of range",
                         hint=f"between 1 byte and {HEAP_MAX} bytes")
    return n


def parse_count(text: str) -> int:
    """A descriptor quota: a whole number 1..2**31-1."""
    if not re.fullmatch(r"\s*\d+\s*", str(text)):
        raise QuotaError(f"file quota {text!r} is not a whole number",
                         hint="a number of descriptors, 1 or more (e.g. 100)")
    n = int(text)
    if not 1 <= n <= FILES_MAX:
        raise QuotaError(f"file quota {text!r} is out of range", hint=f"1..{FILES_MAX}")
    return n


def check_target(pid: int) -> None:
    """Refuse what may never be limited: pid 1, a kernel thread, the toolkit itself,
    a process that does not exist (the kernel side refuses them too)."""
    if pid <= 0:
        raise QuotaError(f"pid {pid} is not a process id")
    if pid == 1:
        raise QuotaError("pid 1 (init) cannot be given a quota: killing it panics the kernel")
    if pid == os.getpid():
        raise QuotaError(f"pid {pid} is this toolkit process itself")
    kthread = sysinfo.is_kernel_thread(pid)
    if kthread is None:
        raise QuotaError(f"no process {pid}")
    if kthread:
        raise QuotaError(f"pid {pid} is a kernel thread: it has no heap or files to limit")


def limits_text(heap: int | None, files: int | None) -> str:
    """"heap=BYTES files=N", the keys given."""
    return " ".join(([f"heap={heap}"] if heap else []) + ([f"files={files}"] if files else []))


# ---------------------------------------------------------------- run a command

def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by {signal.Signals(sig).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"


def describe_kill(rec) -> str:
    """One kill record in words."""
    kind = schema.QUOTA_NAMES.get(rec.quota_kind, str(rec.quota_kind))
    unit = " bytes" if kind == "heap" else " descriptors" if kind == "files" else ""
    return (f"pid {rec.tgid} ({rec.comm}) killed: {kind} reached {rec.quota_value}{unit}, "
            f"quota {rec.quota}")


def exit_code(status: int) -> int:
    """The shell's convention: the exit status, or 128 + the signal number."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def spawn_registered(argv: Sequence[str], register: Callable[[int], None]) -> int:
    """Fork a child that waits on a pipe; `register(pid)` while it waits (nothing of
    the command has run yet); then let it exec `argv`. Returns the child's pid. If
    registering fails, the child is killed and reaped and the error re-raised.

    The child keeps only descriptors 0, 1 and 2 (and the pipe, close-on-exec). Between
    the go-ahead and execve() it runs only os.read and os.execvp, which create no
    descriptor and map no memory."""
    if not argv:
        raise QuotaError("no command to run", hint="toolkit quota run ... -- CMD [ARGS]")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                        # the child
        try:
            os.close(w)
            # the command gets stdin, stdout and stderr only (as subprocess's
            # close_fds): the toolkit's own descriptors would count against it
            os.closerange(3, r)
            os.closerange(r + 1, os.sysconf("SC_OPEN_MAX"))
            if os.read(r, 1) != b"g":
                os._exit(127)
            os.execvp(argv[0], list(argv))
        except OSError as e:
            os.write(2, f"toolkit quota run: {argv[0]}: {e.strerror}\n".encode())
        os._exit(127)
    os.close(r)
    try:
        register(pid)
    except BaseException:
        os.close(w)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    os.write(w, b"g")
    os.close(w)
    return pid
