"""The eBPF backend's two engines and how `--engine auto` chooses between them.

bcc   BCC compiles ebpf/lifecycle.c at run time against the running kernel's headers
      (/lib/modules/<release>/build) with its own LLVM: any kernel with headers and
      kprobes, BTF or not.
core  one object compiled ahead of time (ebpf/core/*.bpf.o) that libbpf relocates with
      the kernel's BTF: any kernel with /sys/kernel/btf/vmlinux, no headers, no
      compiler.
auto  (the default) bcc where BCC can run, else core where the kernel has BTF: the
      engine that has run here longest first, so results stay comparable with earlier
      runs; the choice and its reason are printed and recorded in results.
"""
from __future__ import annotations

import os
from pathlib import Path

from .. import sysinfo
from ..errors import BackendError
from ..paths import EBPF_DIR

# The CO-RE engine's objects and what it needs of the kernel (ebpf_core.py loads them;
# here so that choosing an engine imports neither engine)
CORE_BUILD_DIR = EBPF_DIR / "core" / "build"
CORE_LIFECYCLE_OBJ = CORE_BUILD_DIR / "lifecycle.bpf.o"
BTF = Path("/sys/kernel/btf/vmlinux")
CORE_BUILD_HINT = "build the CO-RE objects: `make -C ebpf/core` (bin/setup does it)"

ENGINES = ("bcc", "core")
CHOICES = ("auto",) + ENGINES
# Engines whose transport --transport chooses (ring buffer or perf buffer); CO-RE has
# the ring buffer only
TRANSPORT_ENGINES = ("bcc",)
TARGETS = {"bcc": "toolkit.backends.ebpf:EbpfBackend",
           "core": "toolkit.backends.ebpf_core:EbpfCoreBackend"}


def bcc_blocker() -> str | None:
    """Why BCC cannot run on this kernel, or None."""
    try:
        import bcc  # noqa: F401  (Debian's python3-bpfcc)
    except Exception as e:
        return f"bcc does not import ({e})"
    rel = sysinfo.release()
    if not (Path("/lib/modules") / rel / "build").exists():
        return f"no kernel headers for {rel} (/lib/modules/{rel}/build)"
    return None


def core_blocker() -> str | None:
    """Why the CO-RE engine cannot run on this kernel, or None."""
    from .libbpf import lib
    if not BTF.exists():
        return f"no kernel BTF ({BTF})"
    try:
        lib()
    except BackendError as e:
        return str(e)
    if not CORE_LIFECYCLE_OBJ.exists():
        return f"{CORE_LIFECYCLE_OBJ} is not built ({CORE_BUILD_HINT})"
    return None


def blocker(engine: str) -> str | None:
    """Why `engine` cannot run on this kernel, or None."""
    return bcc_blocker() if engine == "bcc" else core_blocker()


def resolve(engine: str | None) -> tuple[str, str]:
    """(engine, reason) for --engine ENGINE (None: auto)."""
    engine = engine or "auto"
    if engine not in CHOICES:
        raise BackendError(f"ebpf backend: engine must be one of {', '.join(CHOICES)}, "
                           f"not {engine!r}")
    if engine != "auto":
        return engine, f"--engine {engine}"
    why_not_bcc = bcc_blocker()
    if why_not_bcc is None:
        return "bcc", "auto: BCC can run here (kernel headers present)"
    why_not_core = core_blocker()
    if why_not_core is None:
        return "core", f"auto: BCC cannot run here ({why_not_bcc}); the kernel has BTF"
    return "bcc", f"auto: neither engine can run here (bcc: {why_not_bcc}; core: {why_not_core})"


def label(engine: str) -> str:
    """The bench column of an engine: ebpf (BCC, as in every earlier run) or ebpf-core."""
    return "ebpf" if engine == "bcc" else f"ebpf-{engine}"


def euid_is_root() -> bool:
    return os.geteuid() == 0
