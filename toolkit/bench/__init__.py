"""`toolkit bench`: a fork-storm workload with a ground-truth ledger, run under each
backend, reconciled record by record against the ledger, and turned into metrics.

  workload.py   build bench/*.c on first use, run forkstorm, read its ledger
  ledger.py     the ledger row and the events file (records + receipt time)
  reconcile.py  match records to ledger rows by (pid, time window)
  metrics.py    capture, drops vs misses, RSS error, latency, overhead, ps model
  environment.py kernel, virtualization (native/kvm/tcg), CPUs, versions
  harness.py    the interleaved rounds, progress, the run directory
"""
SCHEMA_VERSION = 1
