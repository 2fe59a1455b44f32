"""Collectors behind one interface; see base.py."""
from .base import (KERNEL_BACKENDS, REGISTRY, Backend, BackendError, EventCounters,  # noqa: F401
                   HookStats, MemInfo, ProcInfo, Snapshot, Stats, get_backend)
