"""`toolkit inspect`: one process's memory layout and top-level page table, read from
the kernel's own structures (task_struct -> mm_struct) by the module's /proc/toolkit/vm
or by ebpf/vm.c's BPF iterators, and compared with what /proc/PID says.

layout.py       the module's text -> a Layout (regions, counters, VMAs, page-table entries)
source.py       a Layout through a backend's layout(pid) capability (the kernel I/O is
                the backends': lkm.read_layout, ebpf_vm.read_layout), parsed here
check.py   a Layout against /proc/PID/{maps,status,stat}, field by field
render.py  tables and JSON
"""
from .layout import Layout, parse_layout

__all__ = ["Layout", "parse_layout"]
