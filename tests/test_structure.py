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
