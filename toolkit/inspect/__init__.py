"""`toolkit inspect`: one process's memory layout and top-level page table, read from
the kernel's own structures (task_struct -> mm_struct) by the module's /proc/toolkit/vm
or by ebpf/vm.c's BPF iterators, and compared with what /proc/PID says.

layout.py       the module's text -> a Layout (regions, counters, VMAs, page-table entries)
source.py       reading a Layout through a backend (lkm, or ebpf via ebpf_source.py)
ebpf_source.py  the BPF iterators' output -> the module's text, plus what BPF reads
                differently (notes)
check.py   a Layout against /proc/PID/{maps,status,stat}, field by field
render.py  tables and JSON
"""
from .layout import Layout, parse_layout

__all__ = ["Layout", "parse_layout"]
