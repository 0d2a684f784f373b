"""How the test suite is laid out, checked with `ast` so it stays that way: fixtures in conftest.py, plain helpers
in modules without the test_ prefix, every test_ module holds tests, and no test changes the process's
environment or import path by hand (a session-long leak into every later test); monkeypatch restores them."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
TEST_FILES = sorted(TESTS.glob("test_*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imported_modules(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _dotted(node: ast.AST) -> str:
    """`os.environ.update` for the expression that names it ("" for anything else)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


# Calls and assignment targets that change process-wide state for the rest of the session.
MUTATING_CALLS = {"os.environ.update", "os.environ.pop", "os.environ.setdefault", "os.environ.clear", "os.putenv",
                  "os.unsetenv", "os.chdir", "sys.path.insert", "sys.path.append", "sys.path.extend"}
MUTATED_TARGETS = {"os.environ", "sys.path"}


def _hand_mutations(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _dotted(node.func) in MUTATING_CALLS:
            found.append(f"line {node.lineno}: {_dotted(node.func)}(...)")
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AugAssign) else node.targets if isinstance(node, ast.Delete) else []
        for t in targets:
            base = t.value if isinstance(t, ast.Subscript) else t
            if _dotted(base) in MUTATED_TARGETS:
                found.append(f"line {node.lineno}: {_dotted(base)} assigned or deleted")
    return found


def test_the_rules_see_what_they_forbid():
    """The checks below must be able to fail: each finds its offence in a made-up module."""
    bad = ast.parse("import os, sys\nfrom test_other import helper\nos.environ['A'] = '1'\ndel os.environ['B']\n"
                    "os.environ.update(C='1')\nsys.path.insert(0, '.')\n")
    assert "test_other" in _imported_modules(bad)
    assert len(_hand_mutations(bad)) == 4
    assert _hand_mutations(ast.parse("import os\nenv = dict(os.environ, A='1')\nx = os.environ['A']\n")) == []


def test_no_test_module_imports_another():
    """Shared fixtures belong in conftest.py and shared helpers in a non-test module: importing a test module
    runs its module-level set-up a second time and hides where a fixture comes from."""
    names = {p.stem for p in TEST_FILES}
    offenders = {p.name: sorted(_imported_modules(_tree(p)) & (names - {p.stem})) for p in TEST_FILES}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_test_module_has_tests():
    """A helper module named test_* is collected for nothing and looks like a place for tests."""
    def has_tests(tree: ast.Module) -> bool:
        return any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name.startswith(("test_", "Test"))
                   for n in ast.walk(tree))

    assert [p.name for p in TEST_FILES if not has_tests(_tree(p))] == [], "give helper modules a name without test_"


def test_no_hand_made_changes_to_environment_or_import_path():
    """os.environ and sys.path through monkeypatch (or pytest.MonkeyPatch.context() in a wider-scoped fixture)."""
    offenders = {p.name: _hand_mutations(_tree(p)) for p in [*TEST_FILES, TESTS / "conftest.py"]}
    assert {k: v for k, v in offenders.items() if v} == {}
