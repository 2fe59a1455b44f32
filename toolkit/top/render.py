"""The full-screen dashboard, drawn with rich (rich.live.Live on the alternate screen).

Keys are read from stdin in cbreak mode (termios) with select(), so a key acts at once
while records keep being read between refreshes. The terminal is restored by try/finally
on every way out: q, Ctrl-C (SIGINT while in cbreak still arrives as KeyboardInterrupt,
as ISIG stays on), and errors. The size is measured on every draw and SIGWINCH forces a
redraw, so a resize takes effect at once.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import termios
import tty

KEYS = {"c": "cpu", "m": "rss", "p": "pid", "n": "peak", "a": "age"}
HELP = "q quit  c cpu  m rss  n peak  p pid  a age  u uid  space pause"


def fmt_kib(kib: int | None) -> str:
    if kib is None:
        return "-"          # a field the backend cannot provide
    for unit, div in (("G", 1 << 20), ("M", 1 << 10)):
        if kib >= div:
            return f"{kib / div:.1f}{unit}"
    return f"{kib}K"


def fmt_cpu_time(ns: int) -> str:
    s = ns / 1e9
    m, s = divmod(s, 60)
    return f"{int(m)}:{s:05.2f}" if m < 60 else f"{int(m // 60)}h{int(m % 60):02d}"


def fmt_age(s: float) -> str:
    return f"{s:.0f}s" if s < 100 else f"{s / 60:.0f}m" if s < 6000 else f"{s / 3600:.0f}h"


def header(frame, backend_label: str, release: str, state: dict):
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text
    m = frame.meminfo
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    grid.add_column(justify="right", no_wrap=True)
    status = "PAUSED  " if state["paused"] else ""
    uid = f"uid {state['uid']}  " if state["uid"] is not None else ""
    grid.add_row(Text(f"toolkit top  {release}  backend {backend_label}", style="bold"),
                 Text(f"{status}{uid}sort {state['sort']}  {frame.t_s:.0f}s",
                      style="bold yellow" if state["paused"] else ""))
    used = m.used_kib / m.total_kib if m.total_kib else 0.0
    bar = Table.grid(expand=True, padding=(0, 1))
    bar.add_column(width=4)
    bar.add_column(ratio=1)
    bar.add_column(justify="right")
    bar.add_row("mem", ProgressBar(total=100, completed=used * 100),
                f"{fmt_kib(m.used_kib)}/{fmt_kib(m.total_kib)}")
    mem = Text(f"avail {fmt_kib(m.available_kib)}  free {fmt_kib(m.free_kib)}  "
               f"buffers {fmt_kib(m.buffers_kib)}  cached {fmt_kib(m.cached_kib)}")
    ev = Text("events ")
    for k, v in frame.totals.items():
        ev.append(f"{k} {v} ({frame.per_s[k]:.1f}/s)  ")
    dr = Text()
    for k, v in frame.drops.items():
        lost = k != "seen" and v
        dr.append(f"{k} {v}", style="bold white on red" if lost else "dim")
        dr.append("  ")
    for t in (mem, ev, dr):
        t.no_wrap, t.overflow = True, "ellipsis"
    return [grid, bar, mem, ev, dr]


def short_panel(frame):
    from rich.text import Text
    if frame.unseen_forks is not None:
        return Text(f"short-lived: polling cannot see them; kernel counted "
                    f"{frame.unseen_forks} forks ps never listed", style="magenta",
                    no_wrap=True, overflow="ellipsis")
    t = Text(f"short-lived {frame.short_count} this interval, {frame.short_total} total",
             style="magenta", no_wrap=True, overflow="ellipsis")
    for title, items in (("cpu", frame.short_by_cpu), ("peak", frame.short_by_peak)):
        if items:
            t.append(f"\n top {title}: " + ", ".join(
                f"{s.comm}[{s.pid}] {s.lifetime_ms:.0f}ms {s.cpu_ms:.0f}ms cpu "
                f"{fmt_kib(s.peak_kib)} exit {s.exit}" for s in items))
    return t


def process_table(rows, height: int, sort: str):
    from rich.table import Table
    cols = [("pid", "right"), ("user", "left"), ("ppid", "right"), ("thr", "right"),
            ("s", "left"), ("cpu%", "right"), ("time", "right"), ("rss", "right"),
            ("peak", "right"), ("age", "right"), ("comm", "left")]
    sort_col = {"cpu": "cpu%", "rss": "rss", "peak": "peak", "pid": "pid", "age": "age"}[sort]
    t = Table(box=None, padding=(0, 1), expand=True, header_style="bold reverse")
    for name, just in cols:
        label = name + ("v" if name == sort_col else "")
        t.add_column(label, justify=just, no_wrap=True,
                     max_width=8 if name == "user" else None,
                     ratio=1 if name == "comm" else None)
    for r in rows[:max(0, height)]:
        t.add_row(str(r.pid), r.user, str(r.ppid), str(r.threads), r.state,
                  "" if r.cpu_pct is None else f"{r.cpu_pct:.1f}", fmt_cpu_time(r.cpu_ns),
                  fmt_kib(r.rss_kib), fmt_kib(r.peak_kib), fmt_age(r.age_s), r.comm)
    return t


def draw(console, frame, backend_label: str, release: str, state: dict):
    from rich.console import Group
    from rich.text import Text
    from .model import sort_rows
    parts = header(frame, backend_label, release, state)
    short = short_panel(frame)
    foot = Text(state["message"] or HELP, style="reverse", no_wrap=True, overflow="ellipsis")
    used = len(parts) + 1 + str(short).count("\n") + 1 + 1   # + table header + footer
    rows = sort_rows(frame.rows, state["sort"])
    return Group(*parts, short, process_table(rows, console.size.height - used,
                                              state["sort"]), foot)


def run(session, sort: str, backend_label: str) -> None:
    from rich.console import Console
    from rich.live import Live
    from .. import sysinfo
    console = Console()
    release = sysinfo.release()
    state = {"sort": sort, "paused": False, "uid": session.uid, "message": "",
             "typing": None}
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    resized = []
    old_winch = signal.signal(signal.SIGWINCH, lambda *_: resized.append(1))
    frame = None
    try:
        tty.setcbreak(fd)
        with Live(console=console, screen=True, auto_refresh=False,
                  transient=True) as live:
            live.update(_waiting(backend_label), refresh=True)
            while True:
                redraw = False
                if session.due_in() <= 0:
                    new = session.refresh()
                    if not state["paused"]:
                        frame = new
                        redraw = True
                r, _, _ = select.select([fd], [], [], max(0.0, min(0.05, session.due_in())))
                if r:
                    key = os.read(fd, 32).decode(errors="replace")
                    for ch in key:
                        if _key(ch, state, session) == "quit":
                            return
                    redraw = True
                else:
                    session.pump(0.05)
                if resized:
                    resized.clear()
                    redraw = True
                if redraw and frame is not None:
                    _measure(console)
                    live.update(draw(console, frame, backend_label, release, state),
                                refresh=True)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, old_winch)


def _measure(console) -> None:
    """The terminal's size now, from the tty itself (not COLUMNS/LINES, which a parent
    may have exported and which would pin rich to a stale size after a resize)."""
    try:
        w, h = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return
    console.size = (w, h)


def _waiting(label: str):
    from rich.text import Text
    return Text(f"toolkit top: {label} attached; first refresh after one interval...")


def _key(ch: str, state: dict, session) -> str | None:
    """Apply one key; 'quit' to leave. `u` reads a uid (digits, Enter applies, an empty
    one clears the filter, Esc cancels)."""
    if state["typing"] is not None:
        if ch in "\r\n":
            text, state["typing"] = state["typing"], None
            uid = int(text) if text else None
            session.set_uid(uid)
            state["uid"] = uid
            state["message"] = f"uid filter {'cleared' if uid is None else uid}"
        elif ch == "\x1b":
            state["typing"], state["message"] = None, ""
        elif ch in ("\x7f", "\b"):
            state["typing"] = state["typing"][:-1]
            state["message"] = f"uid (Enter applies, empty clears): {state['typing']}"
        elif ch.isdigit():
            state["typing"] += ch
            state["message"] = f"uid (Enter applies, empty clears): {state['typing']}"
        return None
    if ch == "q":
        return "quit"
    if ch in KEYS:
        state["sort"], state["message"] = KEYS[ch], ""
    elif ch == "u":
        state["typing"] = ""
        state["message"] = "uid (Enter applies, empty clears): "
    elif ch == " ":
        state["paused"] = not state["paused"]
        state["message"] = ""
    return None
