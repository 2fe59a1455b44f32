"""The Quotas interface: per-process heap and open-file quotas enforced from the kernel
by SIGKILL, one implementation per kernel side (lkm_quota.LkmQuotas: lkm/quota.c through
/proc/toolkit/quota; ebpf_quota.EbpfQuotas: ebpf/quota.c through its BPF map), reached
through the backend's `quotas_impl` capability (base.Backend.quotas), so that the CLI
and the bench never branch on a backend's name nor read /proc themselves.

heap  = mm->data_vm in bytes (what RLIMIT_DATA limits); files = open descriptors.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

from .. import schema


@dataclasses.dataclass(frozen=True)
class QuotaRow:
    """One tracked process. A value the side cannot give (ebpf's map holds the quotas,
    not the live values nor the comm) is None: shown as "-", never 0."""
    pid: int
    start_ns: int            # the leader's start time (0: not bound yet, ebpf)
    comm: str | None
    heap: int | None         # now, bytes
    heap_quota: int          # 0: none
    files: int | None        # now, descriptors
    files_quota: int         # 0: none
    state: str               # tracking, killed-heap, killed-files


def coverage(hooks: str) -> dict[str, str]:
    """What each quota kind is checked by under hook set `hooks`, in words."""
    if hooks == "kprobe":
        heap = [t for k, t, _ in schema.QUOTA_KPROBES if k == "heap"]
        dups = [t for k, t, how in schema.QUOTA_KPROBES if k == "files" and how == "kretprobe"]
        return {"heap": "mm->data_vm at the return of " + ", ".join(heap)
                + " (kretprobes on the 64-bit syscalls; 32-bit compat syscalls not hooked)",
                "files": "open_fds at fd_install() (open/openat/openat2/creat, dup, fcntl "
                "F_DUPFD, pipe, socket, socketpair, accept, eventfd, epoll_create, "
                "memfd_create, timerfd, signalfd, inotify, pidfd, SCM_RIGHTS, io_uring's "
                "openat: every way but dup2/dup3) and at the return of " + ", ".join(dups)}
    return {"heap": "mm->data_vm at the return of every syscall of the process (raw "
            "tracepoint sys_exit): brk, mmap, mremap, mprotect, execve... 32-bit ones too",
            "files": "open_fds at the return of every syscall of the process (raw "
            "tracepoint sys_exit): every way a syscall makes a descriptor (open..., dup, "
            "dup2, dup3, fcntl, pipe, socket, accept, eventfd, epoll, memfd, SCM_RIGHTS, "
            "ioctl, io_uring_enter); a descriptor io_uring's async workers install counts "
            "at the process's next syscall return"}


class Quotas(abc.ABC):
    """set / clear / entries / kills / counts / reset / close; a context manager.

    exclusive: the caller owns the side's quotas and kill records for the object's
    lifetime (the bench): kills() then returns every kill, and close() drops every
    quota. Otherwise (the CLI) quotas set on a persistent side stay after close()."""

    name: ClassVar[str]
    # Do quotas outlive this object, so that another command can list or clear them?
    # lkm: yes (the module holds them); ebpf: no (the map lives while attached).
    persistent: ClassVar[bool]
    # Said before a slow start (a BCC compile), or None.
    startup_note: ClassVar[str | None] = None
    # Why quotas of this class cannot outlive the command (persistent False), in words.
    not_persistent_why: ClassVar[str] = "its quotas live as long as the command"
    # The most descriptors a file quota may name (None: the kernel's own limit).
    files_limit: ClassVar[int | None] = None
    # The hook set in use: "kprobe" (the module's hooks) or "tracepoint".
    hooks: str | None = "kprobe"

    def __init__(self, exclusive: bool = False, load: bool = False):
        """load: load what the side needs (the module, the programs) if it is not
        loaded, and say so in load_note; otherwise a side not loaded is an error (or,
        for a pinned side, empty)."""
        self.exclusive = exclusive
        self.load_note: str | None = None

    def coverage(self) -> dict[str, str]:
        """What each quota kind is checked by on this side, in words (coverage())."""
        return coverage(self.hooks) if self.hooks else {}

    @abc.abstractmethod
    def set(self, pid: int, heap: int | None = None, files: int | None = None) -> None:
        """Quotas for @pid; a key not given keeps its value."""

    @abc.abstractmethod
    def clear(self, pid: int) -> None:
        ...

    @abc.abstractmethod
    def entries(self) -> dict[int, QuotaRow]:
        """The tracked processes by pid, in the side's order."""

    @abc.abstractmethod
    def kills(self, timeout_ms: int = 0) -> list:
        """Kill records (schema.Record, type kill) since the last call, waiting up to
        @timeout_ms for the first. [] where the kills go to a stream this object does
        not own (lkm, not exclusive: `toolkit watch` shows them)."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """The side's own counters (kills, dropped kill records, probes missed...): only
        those it has."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Drop every quota."""

    def close(self) -> None:
        """Detach; an exclusive owner's quotas go."""
        if self.exclusive:
            self.reset()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
