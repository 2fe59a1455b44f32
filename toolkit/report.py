"""Render a bench run directory: the side-by-side table, report.md and the sweep plot.

`toolkit report DIR` re-renders a saved run from its files (the table printed at the end
of the run, and report.md); `toolkit report DIR1 DIR2` compares two runs of one kind.
Every kind of run (forkstorm, memgrowth, quota) is read through toolkit/bench/results.py,
which refuses a kind or a schema_version it does not know, as pyperf does. The forkstorm
tables are here; memgrowth and quota render through their own modules (render_run).
"""
from __future__ import annotations

from pathlib import Path

from .bench import results
from .errors import ReportError


def load(run_dir: Path | str) -> dict:
    """A run's summary.json of any kind (results.load: kind and version checked)."""
    return results.load(run_dir)


# ---------------------------------------------------------------- cells
def _pct(x, nd=1):
    return "-" if x is None else f"{x * 100:.{nd}f}%"


def _num(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)


def _range(d, a, b, fmt="{:.2f}"):
    if not d or d.get(a) is None:
        return "-"
    return f"{fmt.format(d[a])} / {fmt.format(d[b])}"


def _overhead(o):
    if not o or o.get("median") is None:
        return "-"
    return f"{o['median']:+.1f}% [{o['ci95_low']:+.1f}, {o['ci95_high']:+.1f}]"


def _misses(b):
    m = b.get("missed", {})
    return "/".join(str(m[t]) if t in m else "-" for t in ("fork", "exec", "exit"))


def _polling(b) -> bool:
    """Was this column's backend a poller (its misses are what it never polled, not
    drops)? Asked of the registered backend class; a name no longer registered: no."""
    from .backends.base import REGISTRY, registered_class
    name = b.get("backend")
    return name in REGISTRY and registered_class(name).polling


def _never_seen(b):
    ns = b.get("never_seen", 0)
    if _polling(b):
        return f"{ns} (polling)"
    return f"{ns} !" if ns else "0"


def _model(m, key="predicted_fork_capture"):
    """The model's point prediction and, when known, its [low, high] bounds."""
    if m.get(key) is None:
        return "-"
    if m.get("predicted_low") is None:
        return _pct(m[key])
    return f"{_pct(m[key])} [{_pct(m['predicted_low'])}, {_pct(m['predicted_high'])}]"


def _other_drops(b):
    d = b.get("dropped_other")
    if not d or _polling(b):
        return "-"
    return str(sum(max(0, v) for v in d.values()))


def _told(b):
    """Misses the backend's own counters account for (counted drops), of all misses."""
    m = sum((b.get("missed") or {}).values())
    told = max(0, m - b.get("never_seen", 0))
    return f"{told}/{m}" + (f" ({told / m * 100:.0f}%)" if m else "")


ROWS = [
    ("capture fork", lambda b: _pct(b["capture"]["fork"])),
    ("capture exec", lambda b: _pct(b["capture"]["exec"])),
    ("capture exit", lambda b: _pct(b["capture"]["exit"])),
    ("ps model: fork capture", lambda b: _model(b.get("ps_model") or {})),
    ("missed fork/exec/exit", _misses),
    ("counted drops", lambda b: str(b.get("dropped", 0))),
    ("  of other processes' events", _other_drops),
    ("never seen (not a drop)", _never_seen),
    ("misses it told you about", _told),
    ("exit code agrees", lambda b: _pct(b.get("exit_code_agreement"))),
    ("RSS err % vs VmRSS p50/p95", lambda b: _range(b.get("rss_error_pct"), "median", "p95",
                                                    "{:.1f}")),
    ("peak err % vs VmHWM p50/p95", lambda b: _range(b.get("peak_rss_error_pct"), "median",
                                                     "p95", "{:.1f}")),
    ("latency ms p50/p99", lambda b: _range(b.get("latency_ms"), "p50", "p99")),
    ("storm forks/s (median)", lambda b: _num(b.get("forks_per_s"), "{:.0f}")),
    ("slowdown % [95% CI]", lambda b: _overhead(b.get("overhead_pct"))),
    ("collector CPU s / 1k events", lambda b: _num(b.get("cpu_s_per_1k_events"), "{:.3f}")),
    ("in-kernel ns / event", lambda b: _num(b.get("ns_per_event"), "{:.0f}")),
    ("records received", lambda b: str(b.get("records", 0))),
]


def table_rows(s: dict) -> tuple[list[str], list[list[str]]]:
    labels = list(s["backends"])
    rows = []
    for name, fn in ROWS:
        cells = []
        for lb in labels:
            try:
                cells.append(fn(s["backends"][lb]))
            except (KeyError, TypeError):
                cells.append("-")
        if name.startswith("ps model") and all(c == "-" for c in cells):
            continue
        rows.append([name, *cells])
    return ["metric", *labels], rows


def table(s: dict, fmt: str = "simple") -> str:
    from tabulate import tabulate
    headers, rows = table_rows(s)
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True,
                    colalign=["left"] + ["right"] * (len(headers) - 1))


def headline(s: dict) -> str:
    e, t, p = s["environment"], s["truth"], s["environment"]["parameters"]
    return (f"kernel {e['kernel_release']} ({e['virtualization']}, {e['cpus']} CPUs); "
            f"{t['storms']} storms, {t['forks']} children ({t['execs']} exec'd), "
            f"lifetime {p.get('lifetime_ms')} ms, concurrency {p.get('concurrency')}, "
            f"repeat {p.get('repeat')}; baseline {_per_s(s['baseline']['forks_per_s'])} forks/s")


def _per_s(rate) -> str:
    """A median rate as people read it (5367, not 5366.8724999999995)."""
    return f"{rate:.0f}" if isinstance(rate, (int, float)) else str(rate)


def flags(s: dict) -> list[str]:
    """Things a reader must not miss: unexplained misses, drop/miss mismatches."""
    out = []
    for lb, b in s["backends"].items():
        if _polling(b):
            continue
        scope = s.get("environment", {}).get("parameters", {}).get("scope", "system")
        other, seen_other = b.get("dropped_other") or {}, b.get("seen_other") or {}
        if b.get("never_seen"):
            out.append(f"{lb}: {b['never_seen']} events missed that no drop counter explains")
        elif scope == "children" and sum(b.get("missed", {}).values()) != b.get("dropped", 0):
            out.append(f"{lb}: misses {sum(b['missed'].values())} != counted drops "
                       f"{b['dropped']} although only the storm's children were recorded")
        elif any(v > seen_other.get(t, 0) for t, v in other.items()):
            out.append(f"{lb}: more drops than misses plus other processes' events "
                       f"(drops beyond misses {other}, other events seen {seen_other})")
        if any(b.get("unmatched", {}).values()):
            out.append(f"{lb}: records of storm children matching no ledger row: "
                       f"{b['unmatched']}")
    return out


def sweep_table(s: dict, fmt: str = "simple") -> str | None:
    sw = s.get("sweep") or []
    if len(sw) < 2:
        return None
    from tabulate import tabulate
    labels = list(s["backends"])
    rows = []
    for e in sw:
        row = [e["lifetime_ms"]]
        for lb in labels:
            b = e["backends"].get(lb, {})
            cell = _pct(b.get("capture", {}).get("fork"))
            if "predicted_fork_capture" in b:
                cell += f" (model {_model(b)})"
            row.append(cell)
        rows.append(row)
    return tabulate(rows, headers=["lifetime ms: fork capture", *labels], tablefmt=fmt,
                    disable_numparse=True)


def rate_table(s: dict, fmt: str = "simple") -> str | None:
    """The rate sweep: per rate and collector, the worst capture over fork/exec/exit it
    reports, and its misses beside its counted drops."""
    rs = s.get("rate_sweep") or []
    if len(rs) < 2:
        return None
    from tabulate import tabulate
    labels = list(s["backends"])
    rows = []
    for e in rs:
        row = [f"{e['rate']:g}" + (f" ({e['forks_per_s']:.0f})" if e.get("forks_per_s")
                                   else "")]
        for lb in labels:
            b = e["backends"].get(lb, {})
            caps = [v for v in (b.get("capture") or {}).values() if v is not None]
            m = sum((b.get("missed") or {}).values())
            row.append(f"{_pct(min(caps) if caps else None)} miss {m} drop {b.get('dropped', 0)}")
        rows.append(row)
    return tabulate(rows, headers=["rate/s (achieved): capture", *labels], tablefmt=fmt,
                    disable_numparse=True)


def _captured_types(b: dict) -> list[str]:
    return [t for t, v in (b.get("capture") or {}).items() if v is not None]


def plot_rates(s: dict, path: Path) -> bool:
    """capture-vs-rate.png: capture per collector (left) and its misses beside its
    counted drops (right), against the storm's fork rate."""
    rs = s.get("rate_sweep") or []
    if len(rs) < 2:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xs = [e["forks_per_s"] or e["rate"] for e in rs]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = "soD^v<>"
    for i, lb in enumerate(s["backends"]):
        bs = [e["backends"].get(lb, {}) for e in rs]
        ys = [min([v for v in (b.get("capture") or {}).values() if v is not None] or [0]) * 100
              for b in bs]
        line, = ax.plot(xs, ys, marker=markers[i % len(markers)],
                        markersize=max(3, 9 - 2 * i), label=lb)
        miss = [sum((b.get("missed") or {}).values()) for b in bs]
        drop = [b.get("dropped", 0) for b in bs]
        ax2.plot(xs, miss, marker=markers[i % len(markers)], color=line.get_color(),
                 label=f"{lb} misses")
        ax2.plot(xs, drop, linestyle="--", marker="x", color=line.get_color(),
                 label=f"{lb} counted drops")
    cc = s.get("collector_cpu")
    from matplotlib.ticker import NullFormatter
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xticks(xs, [f"{x:.0f}" for x in xs])
        a.xaxis.set_minor_formatter(NullFormatter())
        a.set_xlabel("storm forks/s (achieved, median)")
        a.grid(True, alpha=0.3)
    ax.set_ylabel("captured (%, worst of fork/exec/exit)")
    ax.set_ylim(-3, 103)
    ax2.set_ylabel("events (misses solid, counted drops dashed)")
    ax2.set_yscale("symlog", linthresh=10)
    ax2.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax2.legend(fontsize=7, ncol=2)
    fig.suptitle(f"capture vs rate ({s['environment']['kernel_release']}"
                 + (f"; reader confined to {cc}" if cc else "") + ")", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def markdown(s: dict) -> str:
    e = s["environment"]
    p = e["parameters"]
    lines = ["# toolkit bench forkstorm", "", headline(s), "",
             table(s, "github"), ""]
    sw = sweep_table(s, "github")
    if sw:
        lines += ["## Capture vs child lifetime", "", sw, "",
                  "![capture vs lifetime](capture-vs-lifetime.png)", ""]
    rt = rate_table(s, "github")
    if rt:
        lines += ["## Capture vs rate", "", rt, "",
                  "![capture vs rate](capture-vs-rate.png)", ""]
    fl = flags(s)
    lines += ["## Flags", ""] + ([f"- {f}" for f in fl] or ["- none: every miss of a kernel "
                                                             "backend is a counted drop"]) + [""]
    lines += ["## How to read this", "",
              "- capture = ledger children whose event the backend reported / ledger children "
              "(a process is (pid, start time); see toolkit/bench/reconcile.py).",
              "- misses it told you about = misses its own drop counters account for / "
              "misses (ps has none: a poller cannot know what it missed).",
              "- \"-\" = the backend's interface does not carry that field (cnproc: no "
              "exit RSS, peak or uid; taskstats: no fork/exec, RSS at exit; acct: no "
              "fork/exec, no memory): unavailable, not zero.",
              "- never seen = misses not explained by the backend's own drop counters "
              "(for ps: everything that lived between two polls).",
              "- drops of other processes' events = counted drops beyond the ledger's misses: "
              "with --scope system a backend records the whole machine, and a full ring "
              "drops whatever comes (the storm process's own exec and exit, the harness, "
              "daemons). They must not exceed the other events the hooks saw (seen - ledger); "
              "with --scope children the other events are filtered in the kernel and "
              "misses == counted drops exactly.",
              "- ps model = mean over children of min(1, max(0, visible - scan) / poll "
              "period); visible from fork to exit (a zombie has no mm and ps shows VSZ 0); "
              "scan = ps wall time - `ps --version` wall time (the listing-to-read lag); "
              "[low, high] use scan = the whole wall time / 0.",
              "- RSS error compares the exit record's RSS with the child's own VmRSS read just "
              "before _exit; peak with VmHWM. ps reports the RSS of its last poll.",
              "- latency: kernel backends from the record's ts_ns to the harness's receipt "
              "(time.monotonic_ns() when read() returns); ps from the ledger's fork/exit time.",
              "- slowdown: 1 - forks/s with the backend attached / forks/s with nothing "
              "attached in the same round; median over rounds, 95% bootstrap CI.",
              "- collector CPU: the harness process's CPU while capturing (plus its ps "
              "children) per 1,000 records received; in-kernel ns: hook time / hook runs.",
              "", "## Environment", "",
              *(f"- {k}: {v}" for k, v in e.items() if k != "parameters"),
              "", "## Parameters", "",
              *(f"- {k}: {v}" for k, v in p.items()), ""]
    return "\n".join(lines)


def plot_sweep(s: dict, path: Path) -> bool:
    sw = s.get("sweep") or []
    if len(sw) < 2:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xs = [e["lifetime_ms"] for e in sw]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    markers = "soD^v<>"
    for i, lb in enumerate(s["backends"]):
        ys = [(e["backends"].get(lb, {}).get("capture", {}).get("fork") or 0) * 100 for e in sw]
        # distinct markers, shrinking: backends that agree (both at 100%) stay visible
        line, = ax.plot(xs, ys, marker=markers[i % len(markers)], markersize=max(3, 9 - 2 * i),
                        label=f"{lb} measured")
        if any("predicted_fork_capture" in e["backends"].get(lb, {}) for e in sw):
            ps = [(e["backends"][lb].get("predicted_fork_capture") or 0) * 100 for e in sw]
            ax.plot(xs, ps, linestyle="--", color=line.get_color(), label=f"{lb} model")
            lo = [e["backends"][lb].get("predicted_low") for e in sw]
            hi = [e["backends"][lb].get("predicted_high") for e in sw]
            if all(v is not None for v in lo + hi):
                ax.fill_between(xs, [v * 100 for v in lo], [v * 100 for v in hi],
                                color=line.get_color(), alpha=0.12, linewidth=0)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("child lifetime (ms)")
    ax.set_ylabel("forks captured (%)")
    ax.set_ylim(-3, 103)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"capture vs lifetime ({s['environment']['virtualization']}, "
                 f"{s['environment']['kernel_release']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(run_dir: Path, s: dict) -> None:
    plot_sweep(s, run_dir / "capture-vs-lifetime.png")
    plot_rates(s, run_dir / "capture-vs-rate.png")
    (run_dir / "report.md").write_text(markdown(s))


# ---------------------------------------------------------------- compare
def compare(a: dict, b: dict, name_a: str = "A", name_b: str = "B") -> str:
    from tabulate import tabulate
    ha, ra = table_rows(a)
    hb, rb = table_rows(b)
    labels = [lb for lb in ha[1:] if lb in hb[1:]] + \
        [lb for lb in ha[1:] if lb not in hb[1:]] + [lb for lb in hb[1:] if lb not in ha[1:]]
    ma = {r[0]: dict(zip(ha[1:], r[1:])) for r in ra}
    mb = {r[0]: dict(zip(hb[1:], r[1:])) for r in rb}
    metrics_order = [r[0] for r in ra] + [r[0] for r in rb if r[0] not in ma]
    rows = []
    for m in metrics_order:
        row = [m]
        for lb in labels:
            x, y = ma.get(m, {}).get(lb, "-"), mb.get(m, {}).get(lb, "-")
            row.append(x if x == y else f"{x} → {y}")
        rows.append(row)
    head = (f"{name_a}: {headline(a)}\n{name_b}: {headline(b)}\n"
            f"cells: {name_a} → {name_b} where they differ\n\n")
    return head + tabulate(rows, headers=["metric", *labels], tablefmt="simple",
                           disable_numparse=True)


# ---------------------------------------------------------------- every kind of run
def render_run(s: dict, run_dir: Path, rewrite: bool = True) -> str:
    """A memgrowth or quota run's report (markdown), re-rendered from its files; with
    @rewrite, report.md too. (forkstorm: table(), markdown(), write_report().)"""
    kind = results.kind_of(s)
    if kind in ("memgrowth", "memgrowth-compare"):
        from .bench import memgrowth
        text = memgrowth.rerender(run_dir, s)
    elif kind == "quota":
        from .bench import quota
        text = quota.report_md(s)
    else:
        text = markdown(s)
    if rewrite:
        (run_dir / "report.md").write_text(text)
    return text


def compare_any(a: dict, b: dict, name_a: str = "A", name_b: str = "B") -> str:
    """Two runs of one kind side by side (forkstorm: compare())."""
    ka, kb = results.kind_of(a), results.kind_of(b)
    if ka != kb:
        raise ReportError(f"{name_a} is a {ka} run and {name_b} a {kb} run: only runs of "
                          "one kind compare")
    if ka == "forkstorm":
        return compare(a, b, name_a, name_b)
    ra, rb = _rows_of(a), _rows_of(b)
    rows = [[k, *[x if x == y else f"{x} → {y}"
                  for x, y in zip(ra.get(k, ["-"] * 99), rb.get(k, ["-"] * 99))]]
            for k in [*ra, *(k for k in rb if k not in ra)]]
    from tabulate import tabulate
    width = max(len(r) for r in rows) - 1 if rows else 1
    return (f"{name_a} → {name_b} ({ka}), cells differing as A → B\n\n"
            + tabulate(rows, headers=["", *_value_headers(ka, width)], tablefmt="simple",
                       disable_numparse=True))


def _value_headers(kind: str, width: int) -> list[str]:
    if kind == "quota":
        return ["trials", "outcome", "overshoot median", "overshoot max", "unit",
                "death ms median", "95% CI"][:width]
    return ["value"][:width] + [""] * (width - 1)


def _rows_of(s: dict) -> dict[str, list[str]]:
    """One run's figures as labelled rows of cells: quota's enforcement and cost tables,
    memgrowth's findings."""
    if results.kind_of(s) == "quota":
        from .bench import quota
        enf, _, cost, _ = quota.tables(s)
        out = {f"{r[0]} {r[1]}": [str(c) for c in r[2:]] for r in enf}
        out.update({f"{r[0]} {r[1]} added ns": [f"{r[5]} [{r[6]}]"] for r in cost})
        return out
    return {k: [str(v)] for k, v in (s.get("findings") or {}).items()}
