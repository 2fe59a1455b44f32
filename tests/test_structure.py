"""The codebase's shape, held by tests (docs/testing.md): functions of one screen, and no
code outside toolkit/backends that branches on a backend's name."""
import ast
from pathlib import Path

import toolkit

PACKAGE = Path(toolkit.__file__).parent
MAX_LINES = 60          # a function fits on a screen (the developers' guide)
# Functions allowed over MAX_LINES, each with the reason it could not be split yet
# (qualified name -> why). Keep it short; better: split the function.
LONG_ALLOWED: dict[str, str] = {}


def functions():
    """(file relative to toolkit/, qualified name, lines) of every function."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        stack = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        yield (str(path.relative_to(PACKAGE)), name,
                               child.end_lineno - child.lineno + 1)
                    stack.append((child, name + "."))
                else:
                    stack.append((child, prefix))


def test_functions_fit_on_a_screen():
    seen = list(functions())
    assert len(seen) > 500      # the walk found the package's functions
    long = sorted(f"{f}:{name} ({n} lines)" for f, name, n in seen
                  if n > MAX_LINES and f"{f}:{name}" not in LONG_ALLOWED)
    assert long == [], f"functions over {MAX_LINES} lines: split them into named steps"


def test_the_allow_list_names_only_long_functions():
    lengths = {f"{f}:{name}": n for f, name, n in functions()}
    stale = [k for k in LONG_ALLOWED if lengths.get(k, 0) <= MAX_LINES]
    assert stale == [], "no longer long (or gone): take them off LONG_ALLOWED"


# ---------------------------------------------------------------- capabilities, not names
# Places outside toolkit/backends allowed to compare a backend's or engine's name, each
# with its reason ("file:function" -> why). Parsing the user's choice is the one
# legitimate kind; anything else asks the backend class (toolkit/backends/base.py:
# registered_class, backend_class, backends_with and the capabilities they declare).
NAME_TESTS_ALLOWED = {
    "cli/common.py:bcc_engine_option.check":
        "parses the user's --engine: the commands on the BCC engine only refuse core",
}


def backend_names() -> set[str]:
    from toolkit.backends import engines
    from toolkit.backends.base import REGISTRY
    return set(REGISTRY) | set(engines.ENGINES) | {engines.label(e) for e in engines.ENGINES}


def name_tests(root=PACKAGE):
    """(file:function, line, name) of each ==, !=, in, not in against a literal backend or
    engine name (or a tuple, list or set of them) in toolkit/ outside backends/."""
    names = backend_names()

    def literals(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return set().union(*(literals(e) for e in node.elts)) if node.elts else set()
        return set()
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root))
        if rel.startswith("backends/"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        stack = [(tree, "")]
        while stack:
            node, where = stack.pop()
            for child in ast.iter_child_nodes(node):
                inner = where
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    inner = f"{where}.{child.name}" if where else child.name
                if isinstance(child, ast.Compare) and any(
                        isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                        for op in child.ops):
                    hit = (literals(child.left) | set().union(
                        *(literals(c) for c in child.comparators))) & names
                    for name in sorted(hit):
                        yield f"{rel}:{where}", child.lineno, name
                stack.append((child, inner))


def test_no_code_outside_backends_branches_on_a_backend_name():
    found = sorted(f"{w} line {n}: {name!r}" for w, n, name in name_tests()
                   if w not in NAME_TESTS_ALLOWED)
    assert found == [], ("ask the backend class what it can do (a capability) instead "
                         "of testing its name")


def test_the_name_test_sees_a_name_test(tmp_path):
    # the walk is real: comparisons written the way the old code did are found, and
    # toolkit/backends is left alone
    (tmp_path / "probe.py").write_text(
        'def f(b):\n    return b == "ps" or b in ("lkm", "x") or b != 3\n')
    (tmp_path / "backends").mkdir()
    (tmp_path / "backends" / "x.py").write_text('y = "ebpf" == "ebpf"\n')
    assert sorted((w, n) for w, _, n in name_tests(tmp_path)) == [
        ("probe.py:f", "lkm"), ("probe.py:f", "ps")]


def test_the_readme_layout_names_every_source_file():
    """The README's layout is where a newcomer sees the whole: every file of the code
    (toolkit/, ebpf/, lkm/, bench/, include/, bin/) is named there, by its name without
    .py (contrib/ by its folder)."""
    import subprocess
    root = PACKAGE.parent
    if not (root / ".git").exists():
        import pytest
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "toolkit", "ebpf", "bench", "lkm", "include",
                            "bin"], cwd=root, capture_output=True, text=True, timeout=30,
                           check=True).stdout.split()
    layout = (root / "README.md").read_text().split("## Layout", 1)[1]
    unnamed = [f for f in files if not f.endswith(("__init__.py", ".gitignore", ".md"))
               and Path(f).name.removesuffix(".py") not in layout]
    assert unnamed == [], "name them in the README's layout"
    assert "contrib/" in layout
