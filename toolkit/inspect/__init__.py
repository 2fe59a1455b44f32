"""`toolkit inspect`: one process's memory layout and top-level page table, read from
the kernel's own structures (task_struct -> mm_struct) by the module's /proc/toolkit/vm,
and compared with what /proc/PID says.

layout.py  the module's text -> a Layout (regions, counters, VMAs, page-table entries)
source.py  reading a Layout through a backend (lkm; ebpf says what it cannot do)
check.py   a Layout against /proc/PID/{maps,status,stat}, field by field
render.py  tables and JSON
"""
from .layout import Layout, parse_layout

__all__ = ["Layout", "parse_layout"]
