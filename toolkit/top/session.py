"""One running dashboard: the backend, the clock and the Model. Both the TUI and batch
mode drive it: pump() reads records until the next refresh is due, refresh() takes the
snapshot and the stats and returns the Frame of the interval that just ended."""
from __future__ import annotations

import time

from .. import sysinfo
from .model import Model


class Session:
    def __init__(self, backend, interval: float, uid: int | None = None):
        self.backend = backend
        self.interval = interval
        self.polling = backend.polling
        t0 = time.monotonic_ns()
        self.model = Model(t0, uid=uid, fields=backend.snapshot_fields)
        self.records: list = []
        # baseline: CPU times and the kernel's fork counter at start, so the first
        # frame's deltas cover the first interval only
        snap = backend.snapshot()
        self.source = snap.source
        self.model.update(snap, [], backend.stats(), time.monotonic_ns(),
                          self._kernel_forks())
        self.next_due = time.monotonic() + interval

    def _kernel_forks(self) -> int | None:
        return sysinfo.forks_since_boot() if self.polling else None

    @property
    def uid(self) -> int | None:
        return self.model.uid

    def set_uid(self, uid: int | None) -> None:
        """In the kernel for lkm and ebpf (their set_uid_filter), in user space for ps;
        the table is filtered here too (snapshots list every process)."""
        self.backend.set_uid_filter(uid)
        self.model.uid = uid

    def due_in(self) -> float:
        return self.next_due - time.monotonic()

    def pump(self, timeout: float) -> None:
        """Read records for up to `timeout` s (never past the next refresh)."""
        self.records.extend(self.backend.read(max(0.0, min(timeout, self.due_in()))))

    def refresh(self):
        snap = self.backend.snapshot()
        stats = self.backend.stats()
        frame = self.model.update(snap, self.records, stats, time.monotonic_ns(),
                                  self._kernel_forks())
        self.records = []
        self.next_due = max(self.next_due + self.interval, time.monotonic())
        return frame

    def next_frame(self):
        """Block until the next refresh is due; return its Frame (batch mode)."""
        while self.due_in() > 0:
            self.pump(0.25)
        return self.refresh()
