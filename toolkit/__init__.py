"""toolkit: process lifecycle and RSS tracking, by a kprobe module and by eBPF, measured."""
__version__ = "0.1.0"
