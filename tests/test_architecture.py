"""The layering of the project's packages, checked on the source with `ast` (nothing is imported).

    common                      storage, manifests, the pack format, special tokens, CLI shape, ports
      ^-- pipelines             the Beam data jobs
      ^-- pretraining           the trainer (reads packs through common.packformat, never pipelines)
            ^-- evaluation      fine-tuning and reports (pretraining's cost model and sizes for the FLOPs)
      ^-- flows                 Prefect: calls all of the above through their typed configs

Every import counts, also the ones inside functions (a loop hidden in a function is still a loop: whoever
changes one side has to know the other); imports under `if TYPE_CHECKING:` do not run and are skipped.
docs/architecture.md draws the same picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "pipelines", "pretraining", "evaluation", "flows")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> list[str]:
    """Dotted names of the modules this one imports: `from X import Y` is X.Y when that is a module, else X."""
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join(here + ([base] if base else []))
            out.extend(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports, for every .py file under the given packages."""
    files = {module_name(root, p): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        names = _imports(ast.parse(path.read_text(), str(path)), mod, path.name == "__init__.py", set(files))
        graph[mod] = {n for n in names if n in files and n != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def layer_violations(graph: dict[str, set[str]], importer: str, forbidden: str) -> list[str]:
    return sorted(f"{m} -> {d}" for m, deps in graph.items() if m.split(".")[0] == importer
                  for d in deps if d.split(".")[0] == forbidden)


# ----------------------------------------------------------------------------- the project


def test_no_import_cycle_among_project_modules():
    graph = import_graph(REPO)
    assert len(graph) > 100  # the whole tree was read
    assert cycles(graph) == []


def test_pretraining_imports_nothing_from_pipelines():
    assert layer_violations(import_graph(REPO), "pretraining", "pipelines") == []


# Which package may import which (besides itself); anything else is a layer broken.
ALLOWED = {
    "common": set(),
    "pipelines": {"common"},
    "pretraining": {"common"},
    "evaluation": {"common", "pretraining"},
    "flows": {"common", "pipelines", "pretraining", "evaluation"},
}


def test_each_layer_imports_only_the_layers_below_it():
    graph = import_graph(REPO)
    broken = [v for pkg, ok in ALLOWED.items() for other in PACKAGES if other != pkg and other not in ok
              for v in layer_violations(graph, pkg, other)]
    assert broken == []


# ----------------------------------------------------------------------------- the checker can fail


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    root = _tree(tmp_path, {
        "pipelines/__init__.py": "",
        "pipelines/inspect.py": "from pipelines.packing import inspect as pack_inspect\n",
        "pipelines/packing/__init__.py": "",
        "pipelines/packing/inspect.py": "def summarize():\n    from pipelines.inspect import generic_summary\n",
        "pipelines/tokenizer/__init__.py": "from . import load\n",
        "pipelines/tokenizer/load.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                       "    from pipelines.tokenizer import load\n",
    })
    graph = import_graph(root, ("pipelines",))
    assert graph["pipelines.tokenizer"] == {"pipelines.tokenizer.load"}  # relative import resolved
    assert graph["pipelines.tokenizer.load"] == set()  # TYPE_CHECKING only
    assert cycles(graph) == [["pipelines.inspect", "pipelines.packing.inspect"]]


def test_the_checker_finds_pretraining_importing_pipelines(tmp_path):
    root = _tree(tmp_path, {
        "pipelines/__init__.py": "", "pipelines/packformat.py": "",
        "pretraining/__init__.py": "",
        "pretraining/data.py": "def reader():\n    from pipelines.packformat import PackReader\n",
    })
    graph = import_graph(root, ("pipelines", "pretraining"))
    assert layer_violations(graph, "pretraining", "pipelines") == ["pretraining.data -> pipelines.packformat"]
