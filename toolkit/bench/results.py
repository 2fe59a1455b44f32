"""One results format for every kind of run (forkstorm, memgrowth, quota), as pyperf keeps
its own: one version and its history, one writer of summary.json and of the CSV files,
one reader that refuses a kind or a version it does not know.

A run directory's summary.json starts with `kind` and `schema_version`; each CSV file's
first two columns are `kind` and `schema_version` (the run's kind, on every row: pandas
reads the file as it is, and a file taken out of its directory still says what it is).
The formats before version 3 had one version each (forkstorm `schema_version` 1 and 2,
memgrowth `format`/`version` 1, quota `csv_version` 1): the reader recognises them by
those fields, explicitly (LEGACY), so that the committed reference runs read as written.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ReportError

SCHEMA_VERSION = 3
SCHEMA_HISTORY = {
    1: "forkstorm: first format: metrics rounded when written (3 decimals, percentages 2)",
    2: "forkstorm: metrics stored raw (rounded only when rendered); per-round values "
       "(overhead_pct.per_round, forks_per_s_per_round); truth of exits = children the "
       "workload reaped (reap_ns > 0)",
    3: "one format for every kind of run: summary.json and each CSV name their kind "
       "(forkstorm, memgrowth, memgrowth-compare, quota) and this version; memgrowth's "
       "format/version and quota's csv_version go; quota's ebpf_counts becomes counts, "
       "the own counters of every kernel side by mechanism",
}
KINDS = ("forkstorm", "memgrowth", "memgrowth-compare", "quota")
# The formats before version 3, each recognised by its own fields: kind -> the test, and
# the version it is read as (in the summary's `schema_version` once loaded).
LEGACY = {
    "forkstorm": (lambda s: "kind" not in s and s.get("schema_version") in (1, 2)),
    "memgrowth": (lambda s: s.get("format") == "toolkit-memgrowth" and s.get("version") == 1),
    "memgrowth-compare": (lambda s: s.get("format") == "toolkit-memgrowth-compare"
                          and s.get("version") == 1),
    "quota": (lambda s: s.get("csv_version") == 1 and "enforcement" in s),
}
# The versions of this format the reader knows (1 and 2: forkstorm's, above).
KNOWN_VERSIONS = (1, 2, 3)
ACCEPTED = {"forkstorm": (1, 2, 3), "memgrowth": (3,), "memgrowth-compare": (3,),
            "quota": (3,)}


def summary_file(run: Path | str) -> Path:
    d = Path(run)
    return d / "summary.json" if d.is_dir() else d


def write_summary(run_dir: Path, kind: str, body: dict, indent: int = 1) -> dict:
    """summary.json of a run of @kind: `kind` and `schema_version` first, then @body."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of run {kind!r}")
    s = {"kind": kind, "schema_version": SCHEMA_VERSION,
         **{k: v for k, v in body.items() if k not in ("kind", "schema_version")}}
    (Path(run_dir) / "summary.json").write_text(json.dumps(s, indent=indent) + "\n")
    return s


def identify(s, where: str = "summary.json") -> tuple[str, int]:
    """(kind, version) of a loaded summary; ReportError for what this toolkit cannot
    read (an unknown kind, or a version it does not know for that kind)."""
    if not isinstance(s, dict):
        raise ReportError(f"{where}: not a results summary (a JSON object)")
    for kind, test in LEGACY.items():
        if test(s):
            return kind, s.get("schema_version") or 1
    hint = "re-render it with the toolkit version that wrote it"
    if "kind" not in s:     # a legacy format of a version not known here
        for field in ("format", "csv_version"):
            if field in s:
                raise ReportError(f"{where}: {field} {s[field]!r} (version "
                                  f"{s.get('version', s[field])!r}) is not one this toolkit "
                                  "knows", hint)
    kind, v = s.get("kind", "forkstorm"), s.get("schema_version")
    if kind not in KINDS:
        raise ReportError(f"{where}: kind {kind!r} is not one this toolkit knows "
                          f"({', '.join(KINDS)})",
                          "re-render it with the toolkit version that wrote it")
    if v not in ACCEPTED[kind]:
        raise ReportError(f"{where}: schema_version {v!r} is not one this toolkit knows "
                          f"for {kind} runs ({', '.join(map(str, ACCEPTED[kind]))})",
                          "re-render it with the toolkit version that wrote it")
    return kind, v


def load(run: Path | str) -> dict:
    """A run's summary.json, its kind and version checked; the summary with `kind` set
    (the legacy formats included)."""
    f = summary_file(run)
    if not f.exists():
        raise ReportError(f"{run}: no summary.json here; is this a `toolkit bench` run "
                          "directory?")
    try:
        s = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"{f}: not readable JSON ({e})") from None
    kind, _ = identify(s, str(f))
    return {**s, "kind": kind}


def kind_of(s: dict) -> str:
    return identify(s)[0]


# ---------------------------------------------------------------- CSV files
def write_csv(df, path: Path, kind: str) -> None:
    """A run's table (a DataFrame) as CSV, `kind` and `schema_version` its first columns."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of run {kind!r}")
    df = df.drop(columns=[c for c in ("kind", "schema_version") if c in df])
    df.insert(0, "kind", kind)
    df.insert(1, "schema_version", SCHEMA_VERSION)
    df.to_csv(path, index=False)


def check_csv(df, path, kind: str, legacy: tuple[str, tuple] | None = None):
    """@df read from @path, checked: a file of this format names @kind and a known
    version; one without (written before version 3) must carry the legacy version
    column @legacy = (column, versions) when given. ReportError otherwise."""
    if "kind" in df and len(df):
        kinds = set(df["kind"].astype(str))
        if kinds != {kind}:
            raise ReportError(f"{path}: a {', '.join(sorted(kinds))} file, not {kind}")
        versions = set(df["schema_version"].astype(int))
        if not versions <= set(ACCEPTED[kind]):
            raise ReportError(f"{path}: schema_version {sorted(versions)} is not one this "
                              f"toolkit knows for {kind} files "
                              f"({', '.join(map(str, ACCEPTED[kind]))})")
    elif legacy is not None and len(df):
        column, known = legacy
        got = set(df[column].astype(int)) if column in df else {None}
        if not got <= set(known):
            raise ReportError(f"{path}: {column} {sorted(got, key=str)} is not one this "
                              f"toolkit knows ({', '.join(map(str, known))})")
    return df
