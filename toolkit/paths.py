"""Where the toolkit's non-Python parts live.

The toolkit is installed editable (pip install -e .) from its checkout, because the
module sources, BCC programs and bench workload are built on the machine that runs
them; the checkout is the parent of this package.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INCLUDE_DIR = ROOT / "include"
LKM_DIR = ROOT / "lkm"
EBPF_DIR = ROOT / "ebpf"
BENCH_DIR = ROOT / "bench"
RESULTS_DIR = ROOT / "results"
