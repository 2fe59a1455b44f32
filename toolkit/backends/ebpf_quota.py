"""Quotas enforced by BCC BPF programs (ebpf/quota.c, the logic of ebpf/tk_quota.h shared
with the CO-RE build): the eBPF twin of lkm/quota.c, on the kprobe hook set of
include/toolkit_quota.h (the module's hooks).

``EbpfQuotas`` compiles and attaches the programs; the quotas live in the tk_quotas
hash map and hold while this object keeps the programs attached (``close`` detaches
them and every quota goes). Kill records (struct tk_record, type kill) come from the
tk_kills ring buffer: ``kills()`` polls it.

An entry is written with start_ns 0 for a process the caller holds unreaped (its own
child, so the pid cannot be reused meanwhile); the first hook that sees the process
binds it to the kernel's start time (see ebpf/quota.c).
"""
from __future__ import annotations

import contextlib
import ctypes as ct

from .. import schema
from ..paths import EBPF_DIR, INCLUDE_DIR
from . import base
from .ebpf import capture_stderr, compile_source, log_tail, preflight
from .quotas import QuotaRow, Quotas, coverage

SOURCE = EBPF_DIR / "quota.c"
FD_LIMIT = schema.FD_WORDS * 64      # descriptors the program can count
CFLAGS = [f"-I{INCLUDE_DIR}", f"-I{EBPF_DIR}", "-Wno-macro-redefined"]
_CT = {"__u64": ct.c_uint64, "__u32": ct.c_uint32}


class _Quota(ct.Structure):
    """struct tk_quota_value (include/toolkit_quota.h)."""
    _fields_ = [(name, _CT[ctype]) for name, ctype in schema.QUOTA_VALUE_FIELDS]


def _attach(bpf) -> None:
    """Every hook of TK_QUOTA_KPROBES to its entry point (kp_<fn>, kr_<syscall>)."""
    for kind, target, how in schema.QUOTA_KPROBES:
        event = schema.quota_symbol(target, how).encode()
        fn = schema.quota_program(kind, target, how).encode()
        if how == "kprobe":
            bpf.attach_kprobe(event=event, fn_name=fn)
        else:
            bpf.attach_kretprobe(event=event, fn_name=fn)


class EbpfQuotas(Quotas):
    name = "ebpf"
    persistent = False          # the map goes with the programs, at close()
    not_persistent_why = ("BCC attaches kprobes as perf events, which cannot be pinned: "
                          "the quotas would go with this command")
    startup_note = "compiling and attaching ebpf/quota.c (BCC) ..."
    files_limit = FD_LIMIT - 1
    hooks = "kprobe"

    def __init__(self, exclusive: bool = False, load: bool = True):
        super().__init__(exclusive)
        self.load_note = "compiled and attached ebpf/quota.c (BCC, kprobe hooks)"
        preflight(SOURCE)           # the eBPF backend's: root, bcc, headers, the source
        self.bpf = compile_source(SOURCE, CFLAGS, what="ebpf quotas")
        with capture_stderr() as err:
            try:
                _attach(self.bpf)
            except Exception as e:
                failure = e
            else:
                failure = None
        if failure is not None:
            self.bpf.cleanup()
            raise base.BackendError(f"ebpf quotas: cannot attach {SOURCE.name} ({failure})\n"
                                    f"{log_tail(err[0])}", base.LAB_HINT)
        self._kills: list = []

        def on_kill(ctx, data, size):
            self._kills.append(schema.unpack(ct.string_at(data, size)))
            return 0
        self.bpf[b"tk_kills"].open_ring_buffer(on_kill)
        self.table = self.bpf[b"tk_quotas"]

    def coverage(self) -> dict[str, str]:
        return coverage(self.hooks)

    def set(self, pid: int, heap: int | None = None, files: int | None = None) -> None:
        """Quotas for pid (a child the caller has not reaped); keys not given keep theirs."""
        if files and files >= FD_LIMIT:
            raise base.BackendError(f"ebpf quotas count up to {FD_LIMIT - 1} descriptors; "
                                    f"a file quota of {files} is past that",
                                    hint="use --backend lkm")
        key = ct.c_uint32(pid)
        try:
            q = self.table[key]
        except KeyError:
            q = _Quota()
        if heap:
            q.heap_quota = heap
        if files:
            q.files_quota = files
        self.table[key] = q

    def clear(self, pid: int) -> None:
        with contextlib.suppress(KeyError):
            del self.table[ct.c_uint32(pid)]

    def entries(self) -> dict[int, QuotaRow]:
        """The map's entries: quotas and state; the live values and comm are not in it."""
        return {k.value: QuotaRow(pid=k.value, start_ns=v.start_ns, comm=None, heap=None,
                                  heap_quota=v.heap_quota, files=None,
                                  files_quota=v.files_quota, state=_state(v.killed))
                for k, v in self.table.items()}

    def counts(self) -> dict[str, int]:
        c = self.bpf[b"tk_quota_counts"]
        return {name: c[ct.c_int(slot)].value for name, slot in schema.QUOTA_COUNTS.items()}

    def kills(self, timeout_ms: int = 0) -> list:
        """Kill records that arrived since the last call."""
        self.bpf.ring_buffer_poll(timeout_ms)
        out, self._kills = self._kills, []
        return out

    def reset(self) -> None:
        self.table.clear()

    def close(self) -> None:
        self.bpf.cleanup()          # every quota goes with the map


def _state(killed: int) -> str:
    """The map's killed (a TK_QUOTA_* kind, 0: none) as the module's state column."""
    return f"killed-{schema.QUOTA_NAMES.get(killed, killed)}" if killed else "tracking"
