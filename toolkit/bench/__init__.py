"""`toolkit bench`: a fork-storm workload with a ground-truth ledger, run under each
backend, reconciled record by record against the ledger, and turned into metrics.

  workload.py   build bench/*.c on first use, run forkstorm, read its ledger
  ledger.py     the ledger row and the events file (records + receipt time)
  reconcile.py  match records to ledger rows: a pandas merge on pid, then time windows
  metrics.py    capture, drops vs misses, RSS error, latency, overhead, ps model
  environment.py kernel, virtualization (native/kvm/tcg), CPUs, versions
  harness.py    the interleaved rounds, progress, the run directory
  results.py    the results format of every kind of run: one version, writer, reader
"""
from pathlib import Path

# The results format, for every kind of run (results.py): its version, the versions
# `toolkit report` reads, and what changed, in one place, as pyperf keeps them.
from .results import KNOWN_VERSIONS as ACCEPTED_SCHEMA_VERSIONS  # noqa: E402
from .results import SCHEMA_HISTORY, SCHEMA_VERSION  # noqa: E402,F401


def raw_file(path: Path | str) -> Path:
    """A run's raw file (ledger, events, steps) as it is on disk: `NAME.csv`, or
    `NAME.csv.gz` / `NAME.csv.xz` where it was compressed (the committed reference runs
    keep theirs compressed so that no committed file exceeds 1 MB: gzip, or xz where gzip
    is not enough; pandas reads all three, choosing by the suffix). The path as given
    when none exists, so that the error names what was asked for."""
    path = Path(path)
    if path.exists() or path.suffix != ".csv":
        return path
    for suffix in RAW_COMPRESSIONS:
        packed = path.with_name(path.name + suffix)
        if packed.exists():
            return packed
    return path


RAW_COMPRESSIONS = (".gz", ".xz")
