"""Batch mode, like `top -b`: one block per refresh, each stamped with its wall-clock time
(ISO 8601, UTC) and its time since start.

- table: a header line, the counters, the short-lived line, then the process table
  (tabulate), for people reading a log;
- jsonl: one JSON object per refresh (FORMAT_VERSION), everything the screen shows;
- csv: one row per process per refresh, with the refresh's time in the first columns.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import json

FORMAT_VERSION = 1
CSV_FIELDS = ["time", "t_s", "pid", "user", "uid", "ppid", "threads", "state", "cpu_pct",
              "cpu_ns", "rss_kib", "peak_kib", "comm", "age_s"]


def stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def frame_dict(frame, backend: str, when: str, limit: int = 0) -> dict:
    rows = frame.rows[:limit] if limit else frame.rows
    return {"format": FORMAT_VERSION, "time": when, "t_s": round(frame.t_s, 3),
            "interval_s": round(frame.interval_s, 3), "backend": backend,
            "meminfo": dataclasses.asdict(frame.meminfo), "source": frame.source,
            "totals": frame.totals, "per_s": {k: round(v, 2) for k, v in frame.per_s.items()},
            "drops": frame.drops,
            "short_lived": {"count": frame.short_count, "total": frame.short_total,
                            "by_cpu": [dataclasses.asdict(s) for s in frame.short_by_cpu],
                            "by_peak": [dataclasses.asdict(s) for s in frame.short_by_peak],
                            "unseen_forks": frame.unseen_forks},
            "processes": [dataclasses.asdict(r) for r in rows]}


def write_table(out, frame, backend: str, when: str, limit: int) -> None:
    from tabulate import tabulate
    from .render import fmt_kib, fmt_cpu_time
    m = frame.meminfo
    out.write(f"--- {when}  t={frame.t_s:.1f}s  backend {backend}  mem used "
              f"{fmt_kib(m.used_kib)} / {fmt_kib(m.total_kib)}, available "
              f"{fmt_kib(m.available_kib)}\n")
    out.write("events " + "  ".join(f"{k} {frame.totals[k]} ({frame.per_s[k]:.1f}/s)"
                                    for k in frame.totals)
              + "   " + "  ".join(f"{k} {v}" for k, v in frame.drops.items()) + "\n")
    if frame.unseen_forks is not None:
        out.write(f"short-lived: polling cannot see them; the kernel counted "
                  f"{frame.unseen_forks} forks ps never listed\n")
    else:
        out.write(f"short-lived: {frame.short_count} this interval ({frame.short_total} total)"
                  + "".join(f"  {s.comm}[{s.pid}] {s.lifetime_ms:.0f}ms exit {s.exit}"
                            for s in frame.short_by_cpu) + "\n")
    rows = frame.rows[:limit] if limit else frame.rows
    out.write(tabulate([[r.pid, r.user, r.ppid, r.threads, r.state,
                         "" if r.cpu_pct is None else f"{r.cpu_pct:.1f}",
                         fmt_cpu_time(r.cpu_ns), fmt_kib(r.rss_kib), fmt_kib(r.peak_kib), r.comm]
                        for r in rows],
                       headers=["pid", "user", "ppid", "thr", "s", "cpu%", "time", "rss",
                                "peak", "comm"]) + "\n\n")


def run(session, out, fmt: str, iterations: int | None, sort: str, limit: int) -> None:
    """Print `iterations` frames (None: until interrupted)."""
    from .model import sort_rows
    writer = None
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
        writer.writeheader()
    n = 0
    while iterations is None or n < iterations:
        frame = session.next_frame()
        frame.rows = sort_rows(frame.rows, sort)
        when = stamp()
        name = session.backend.name
        if fmt == "jsonl":
            out.write(json.dumps(frame_dict(frame, name, when, limit)) + "\n")
        elif fmt == "csv":
            for r in frame.rows[:limit] if limit else frame.rows:
                writer.writerow({"time": when, "t_s": round(frame.t_s, 3),
                                 **dataclasses.asdict(r)})
        else:
            write_table(out, frame, name, when, limit)
        out.flush()
        n += 1
