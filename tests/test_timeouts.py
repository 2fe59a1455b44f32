"""The suite's own time bounds, for real: a test made to hang (TOOLKIT_TEST_HANG) fails
within its timeout with its stack and the run goes on; one that the signal cannot
interrupt is ended by the backstop; the per-test log keeps what finished."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
PYPROJECT = HERE.parent / "pyproject.toml"
TESTS = """
import pytest
import bounded

pytestmark = pytest.mark.kernel

def test_a_first():
    pass

def test_b_hangs():
    bounded.hang_if_asked("test_b_hangs")

def test_c_after():
    pass
"""


def run_suite(tmp_path, *args, tests=TESTS, **env):
    for f in ("conftest.py", "bounded.py"):
        shutil.copy(HERE / f, tmp_path / f)
    (tmp_path / "test_hang.py").write_text(tests)
    log = tmp_path / "tests.log"
    e = {k: v for k, v in os.environ.items() if not k.startswith(("TOOLKIT_", "PYTEST_"))}
    e.update(TOOLKIT_TEST_NATIVE="1", TOOLKIT_TEST_LOG=str(log), **env)
    p = subprocess.run([sys.executable, "-m", "pytest", "-c", str(PYPROJECT), "-p",
                        "no:cacheprovider", "-q", *args, str(tmp_path / "test_hang.py")],
                       capture_output=True, text=True, env=e, cwd=tmp_path, timeout=60)
    rows = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    return p, [(r[0], r[2].rsplit("::", 1)[1]) for r in rows]


def test_kernel_test_made_to_hang_fails_with_its_stack_and_the_run_goes_on(tmp_path):
    p, rows = run_suite(tmp_path, TOOLKIT_TEST_HANG="1", TOOLKIT_TEST_KERNEL_TIMEOUT="2")
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "Timeout (>2.0s)" in out and "os.read(r, 1)" in out, out   # the stuck line
    assert "1 failed, 2 passed" in out, out
    assert ("failed", "test_b_hangs") in rows and ("passed", "test_c_after") in rows, rows


def test_hang_the_signal_cannot_break_is_ended_by_the_backstop(tmp_path):
    p, rows = run_suite(tmp_path, TOOLKIT_TEST_HANG="hard", TOOLKIT_TEST_KERNEL_TIMEOUT="1",
                        TOOLKIT_TEST_BACKSTOP_GRACE="2")
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "Stack of MainThread" in out and "time.sleep(3600)" in out, out
    # the log says what finished and what was running when pytest was ended
    assert rows == [("start", "test_a_first"), ("passed", "test_a_first"),
                    ("start", "test_b_hangs")], rows


SKIPS = """
import pytest

def test_needs_root():
    pytest.skip("the interfaces need root")

@pytest.mark.skipif(True, reason="needs root")
def test_marked_needs_root():
    pass

def test_other_reason():
    pytest.skip("tmux not installed")
"""


@pytest.mark.parametrize("ci", ["", "true"])
def test_under_ci_a_native_test_skipped_for_want_of_root_fails(tmp_path, ci):
    """A native (unmarked) test skipped because it needs root is a failure under CI=true
    (which runs as root); one skipped for another reason stays skipped."""
    p, rows = run_suite(tmp_path, "-rA", tests=SKIPS, CI=ci)
    out = p.stdout + p.stderr
    want = {"needs_root": "failed" if ci else "skipped",
            "marked_needs_root": "failed" if ci else "skipped", "other_reason": "skipped"}
    assert {name.removeprefix("test_"): o for o, name in rows if o != "start"} == want, out
    if ci:
        assert "test needing root skipped under CI=true" in out, out


def test_every_test_has_a_bound(request):
    """pytest-timeout is installed and gives this very test the unit-test bound."""
    assert request.config.pluginmanager.hasplugin("timeout")
    import pytest_timeout
    s = pytest_timeout._get_item_settings(request.node)
    assert s.timeout == 120 and s.method == "signal"


def unbounded_waits(root: Path) -> list[str]:
    """Calls in the tests that can wait forever: subprocess.run/call/check_* without a
    timeout, .wait()/.communicate() without one, a child's stdout.readline() or a loop
    over its lines (use bounded.readline and bounded.lines). A line that says `# bounded:`
    (and why) is exempt: a pump thread whose waits are bounded elsewhere."""
    import ast
    found = []
    for f in sorted(root.rglob("*.py")):
        if f.name == "bounded.py":
            continue
        text = f.read_text()
        optout = {i + 1 for i, line in enumerate(text.splitlines()) if "# bounded:" in line}
        for n in ast.walk(ast.parse(text)):
            if getattr(n, "lineno", None) in optout:
                continue
            if (isinstance(n, ast.For) and isinstance(n.iter, ast.Attribute)
                    and n.iter.attr in ("stdout", "stderr")):
                found.append(f"{f.relative_to(root)}:{n.lineno}: for line in .{n.iter.attr}")
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)):
                continue
            kws = {k.arg for k in n.keywords}
            owner = n.func.value
            name = n.func.attr
            bad = False
            if (name in ("run", "call", "check_call", "check_output")
                    and isinstance(owner, ast.Name) and owner.id == "subprocess"):
                bad = "timeout" not in kws and None not in kws      # None: **kw passed on
            elif name in ("wait", "communicate"):
                bad = not n.args and "timeout" not in kws
            elif name == "readline":
                bad = isinstance(owner, ast.Attribute) and owner.attr == "stdout"
            if bad:
                found.append(f"{f.relative_to(root)}:{n.lineno}: {name}()")
    return found


def test_no_test_waits_without_a_bound():
    assert unbounded_waits(HERE) == []


def test_bin_test_summary_counts_a_run_killed_half_way_from_its_per_test_log(tmp_path):
    """bin/test's closing line: a run with its JUnit XML, one killed half-way (no XML, its
    per-test log), one the time bound left no room for."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    p, _ = run_suite(tmp_path / "a", f"--junitxml={out / 'native.xml'}")
    assert p.returncode == 0, p.stdout + p.stderr
    run_suite(tmp_path / "b", TOOLKIT_TEST_HANG="hard", TOOLKIT_TEST_KERNEL_TIMEOUT="1",
              TOOLKIT_TEST_BACKSTOP_GRACE="1")
    (tmp_path / "b" / "tests.log").rename(out / "kernel-6.1.tests")
    p = subprocess.run([sys.executable, str(HERE.parent / "bin" / "test-summary"), str(out),
                        "1", "0", "4500", "native:0:12", "kernel-6.1:124:2500",
                        "kernel-6.12:budget:0"], capture_output=True, text=True, timeout=60)
    lines = p.stdout.splitlines()
    assert p.returncode == 1, p.stdout
    assert lines[0] == "test: native: 3 passed, 0 failed, 0 skipped in 12 s"
    assert lines[1].startswith("test: kernel-6.1: ended early (exit 124 after 2500 s): "
                               "1 passed, 1 failed, 0 skipped (from kernel-6.1.tests); "
                               "running at the end (counted failed): "), lines[1]
    assert lines[1].endswith("::test_b_hangs")
    assert "bin/test's time bound (4500 s) was reached" in lines[2]
    assert lines[-1] == "4 passed, 2 failed, 0 skipped"
