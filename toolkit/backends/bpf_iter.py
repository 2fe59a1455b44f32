"""BPF iterators through BCC: run a `BPF_ITER(target)` program and read what it wrote.

A BPF iterator (kernel >= 5.8; task_vma >= 5.12) is a tracing program the kernel calls
once per object while it walks its own list (every task, every VMA of every task, ...),
under the same locks and reference counts a /proc reader would take; the program emits
bytes with bpf_seq_write()/bpf_seq_printf() into a seq_file that user space reads.
This is the eBPF counterpart of the module's seq_file walks.

BCC 0.26's Python has no attach_iter. libbcc exports what its C++ API uses,
`bcc_iter_attach(prog_fd, link_info, link_info_len)` (BPF_LINK_CREATE with
BPF_TRACE_ITER) and `bcc_iter_create(link_fd)` (BPF_ITER_CREATE); they are called here
through ctypes. The program is loaded with `BPF.load_func("bpf_iter__<target>",
BPF.TRACING)`: BCC sets the attach type and BTF id from the name.

The C side declares the context itself (its layout is the kernel's, kernel/bpf/
task_iter.c; the verifier checks accesses against the kernel's BTF, not ours):

    struct bpf_iter_meta { struct seq_file *seq; u64 session_id; u64 seq_num; };
    struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; };

Every read creates a new iterator (a new walk), so two reads never share a position.
"""
from __future__ import annotations

import ctypes as ct
import os

from .. import sysinfo
from ..errors import BackendError

MIN_KERNEL = {"task": (5, 8), "task_vma": (5, 12), "task_file": (5, 8)}
# the task iterators take a tid/pid/pid_fd in bpf_iter_link_info from 6.1 on; earlier
# kernels ignore the field, so the programs filter by pid themselves as well
LINK_INFO_TASK_KERNEL = (6, 1)

_LIB = None


class IterLinkInfoTask(ct.Structure):
    """union bpf_iter_link_info's task member (include/uapi/linux/bpf.h, 6.1+)."""
    _fields_ = [("tid", ct.c_uint32), ("pid", ct.c_uint32), ("pid_fd", ct.c_uint32)]


def _lib():
    global _LIB
    if _LIB is None:
        try:
            lib = ct.CDLL("libbcc.so.0", use_errno=True)
            lib.bcc_iter_attach.argtypes = [ct.c_int, ct.c_void_p, ct.c_uint32]
            lib.bcc_iter_attach.restype = ct.c_int
            lib.bcc_iter_create.argtypes = [ct.c_int]
            lib.bcc_iter_create.restype = ct.c_int
        except (OSError, AttributeError) as e:
            raise BackendError(f"libbcc has no BPF iterator support ({e}); "
                               "BCC >= 0.16 (python3-bpfcc) is needed") from None
        _LIB = lib
    return _LIB


def supported(target: str = "task") -> bool:
    """Whether the running kernel has the `target` iterator (by version)."""
    return sysinfo.kernel_version() >= MIN_KERNEL[target]


def task_link_info(pid: int | None):
    """Link info that restricts a task/task_vma/task_file iterator to one process
    (6.1+), or None to walk every task."""
    if pid is None or sysinfo.kernel_version() < LINK_INFO_TASK_KERNEL:
        return None
    return IterLinkInfoTask(tid=0, pid=pid, pid_fd=0)


def read(bpf, target: str, link_info=None, chunk: int = 1 << 16) -> bytes:
    """Attach `bpf_iter__<target>` from the compiled BCC module `bpf`, walk once and
    return every byte the program wrote. Raises BackendError with the kernel's reason."""
    from bcc import BPF
    lib = _lib()
    fn = bpf.load_func(f"bpf_iter__{target}".encode(), BPF.TRACING)
    info_p = ct.byref(link_info) if link_info is not None else None
    info_len = ct.sizeof(link_info) if link_info is not None else 0
    link = lib.bcc_iter_attach(fn.fd, info_p, info_len)
    if link < 0:
        err = ct.get_errno()
        raise BackendError(f"cannot attach the BPF {target} iterator: "
                           f"{os.strerror(err) if err else 'error ' + str(-link)}"
                           f" (needs kernel >= {'.'.join(map(str, MIN_KERNEL.get(target, (5, 8))))}"
                           " with CONFIG_BPF_SYSCALL and BTF)")
    try:
        it = lib.bcc_iter_create(link)
        if it < 0:
            raise BackendError(f"cannot create the BPF {target} iterator: "
                               f"{os.strerror(ct.get_errno())}")
        try:
            parts = []
            while True:
                try:
                    data = os.read(it, chunk)
                except InterruptedError:
                    continue
                if not data:
                    break
                parts.append(data)
            return b"".join(parts)
        finally:
            os.close(it)
    finally:
        os.close(link)
