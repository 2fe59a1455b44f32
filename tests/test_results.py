"""The one results format (toolkit/bench/results.py): every kind of run written and read
through it, unknown kinds and versions refused, and every committed run readable by
`toolkit report`."""
import json
import shutil

import pandas as pd
import pytest
from click.testing import CliRunner

from toolkit.bench import memgrowth as M
from toolkit.bench import quota as bq
from toolkit.bench import results
from toolkit.cli import main
from toolkit.errors import ReportError
from toolkit.paths import RESULTS_DIR

REFERENCE = RESULTS_DIR / "reference"
COMMITTED = sorted(str(p.parent.relative_to(REFERENCE))
                   for p in REFERENCE.rglob("summary.json"))


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


def test_every_kind_of_run_is_committed():
    kinds = {results.load(REFERENCE / d)["kind"] for d in COMMITTED}
    assert kinds == set(results.KINDS)


@pytest.mark.parametrize("run_dir", COMMITTED)
def test_toolkit_report_reads_every_committed_run(run_dir, tmp_path):
    # a copy: `toolkit report` rewrites report.md
    d = tmp_path / "run"
    shutil.copytree(REFERENCE / run_dir, d)
    r = run("report", d)
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output and f"report.md re-rendered in {d}" in r.output
    r = run("report", d, "--markdown")
    assert r.exit_code == 0 and r.output.startswith("# "), r.output[:300]


@pytest.mark.parametrize("run_dir", ["memgrowth-tcg", "memgrowth-lkm-ebpf-tcg", "quota-tcg"])
def test_memgrowth_and_quota_reports_re_render_as_committed(run_dir, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(REFERENCE / run_dir, d)
    assert run("report", d).exit_code == 0
    assert (d / "report.md").read_text() == (REFERENCE / run_dir / "report.md").read_text()


def test_two_runs_of_one_kind_side_by_side_and_kinds_do_not_mix(tmp_path):
    q = tmp_path / "q"
    shutil.copytree(REFERENCE / "quota-tcg", q)
    s = json.loads((q / "summary.json").read_text())
    s["enforcement"][0]["outcome"] = "refused"
    (q / "summary.json").write_text(json.dumps(s))
    r = run("report", REFERENCE / "quota-tcg", q)
    assert r.exit_code == 0, r.output
    assert "killed → refused" in r.output
    r = run("report", REFERENCE / "memgrowth-tcg", REFERENCE / "memgrowth-tcg")
    assert r.exit_code == 0 and "→" not in r.output.split("\n", 1)[1], r.output
    r = run("report", REFERENCE / "memgrowth-tcg", REFERENCE / "quota-tcg")
    assert r.exit_code == 2 and "only runs of one kind compare" in r.output


def test_the_writer_names_kind_and_version_first(tmp_path):
    s = results.write_summary(tmp_path, "quota", {"enforcement": [], "kind": "x"})
    assert list(s)[:2] == ["kind", "schema_version"] and s["kind"] == "quota"
    assert json.loads((tmp_path / "summary.json").read_text()) == s
    assert results.load(tmp_path)["schema_version"] == results.SCHEMA_VERSION
    results.write_csv(pd.DataFrame({"a": [1, 2]}), tmp_path / "t.csv", "quota")
    assert (tmp_path / "t.csv").read_text().splitlines()[:2] == [
        "kind,schema_version,a", f"quota,{results.SCHEMA_VERSION},1"]
    with pytest.raises(ValueError):
        results.write_summary(tmp_path, "nope", {})


@pytest.mark.parametrize("summary,words", [
    ({"kind": "nope", "schema_version": 3}, "kind 'nope' is not one"),
    ({"kind": "quota", "schema_version": 2}, "schema_version 2 is not one"),
    ({"kind": "memgrowth", "schema_version": 99}, "schema_version 99 is not one"),
    ({"format": "toolkit-memgrowth", "version": 2}, "(version 2) is not one"),
    ({"csv_version": 2, "enforcement": []}, "csv_version 2 (version 2) is not one"),
    ([1, 2], "not a results summary"),
])
def test_the_reader_refuses_what_it_does_not_know(tmp_path, summary, words):
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ReportError) as e:
        results.load(tmp_path)
    assert words in str(e.value)
    r = run("report", tmp_path)
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_the_legacy_formats_read_as_their_kind():
    got = {d: results.load(REFERENCE / d)["kind"] for d in
           ("memgrowth-tcg", "memgrowth-lkm-ebpf-tcg", "quota-tcg", "forkstorm-default-tcg")}
    assert got == {"memgrowth-tcg": "memgrowth", "memgrowth-lkm-ebpf-tcg": "memgrowth-compare",
                   "quota-tcg": "quota", "forkstorm-default-tcg": "forkstorm"}


def test_memgrowth_steps_round_trip_and_a_foreign_csv_is_refused(tmp_path):
    steps = M.read_csv(REFERENCE / "memgrowth-tcg" / "steps.csv")   # legacy: format_version 1
    M.write_csv(steps, tmp_path / "steps.csv")
    assert pd.read_csv(tmp_path / "steps.csv")["kind"].eq("memgrowth").all()
    assert M.read_csv(tmp_path / "steps.csv") == steps
    results.write_csv(pd.DataFrame([{"a": 1}]), tmp_path / "q.csv", "quota")
    with pytest.raises(ReportError, match="a quota file, not memgrowth"):
        M.read_csv(tmp_path / "q.csv")
    df = pd.read_csv(tmp_path / "steps.csv").assign(schema_version=7)
    df.to_csv(tmp_path / "s7.csv", index=False)
    with pytest.raises(ReportError, match="schema_version"):
        M.read_csv(tmp_path / "s7.csv")


def test_quota_files_are_in_the_one_format(tmp_path):
    trials = [bq.Trial("lkm", "files", 0, 10, "killed", 1, 5.0, 11)]
    cost = [{"mechanism": "lkm", "round": 0, "state": s, **{op: 1.0 for op in bq.COST_OPS}}
            for s in ("off", "on")]
    summary = bq.summarize(trials, cost)
    bq._write_files(tmp_path, summary, trials, cost)
    s = results.load(tmp_path)
    assert (s["kind"], s["schema_version"]) == ("quota", results.SCHEMA_VERSION)
    for f in ("trials.csv", "cost.csv"):
        df = results.check_csv(pd.read_csv(tmp_path / f), f, "quota")
        assert list(df.columns[:2]) == ["kind", "schema_version"] and len(df)
    # the kill record's value stays an int (not 11.0)
    assert (tmp_path / "trials.csv").read_text().splitlines()[1] == \
        f"quota,{results.SCHEMA_VERSION},lkm,files,0,10,killed,1,5.0,11"


def test_forkstorm_options_write_the_parameters_the_committed_runs_have():
    # the options dataclass (toolkit/bench/options.py) replaced 22 loose parameters:
    # environment.parameters keeps its keys, in order
    from toolkit.bench.options import ForkstormOptions
    o = ForkstormOptions(names=["ps"], engines=["auto"], exec_all=True)
    p = o.parameters("native", engines=[], intervals=[1.0], lifetimes=[0], rates=[0.0],
                     count=1, repeat=1)
    old = results.load(REFERENCE / "forkstorm-native-6.18")["environment"]["parameters"]
    assert list(p) == list(old)
    assert p["exec_every"] == 1 and p["rate"] == 0.0 and p["part"] == "native"
