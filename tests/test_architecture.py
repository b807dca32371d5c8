"""The rules of docs/architecture.md, checked from the source: the import graph and the size limits.

Every ``.py`` file of the toolkit (``echogains/``), the nnU-Net plugin (``nnunet_ext/``) and the Echo-DND bundle's
scripts (``bundles/echo_dnd/scripts/``, imported by MONAI as the package ``scripts``) is parsed, nothing is imported.
Module-level and function-level imports count alike (a lazy import is still a dependency), relative imports are
resolved against the importing module's package, and ``importlib.import_module("literal")`` counts as an import. An
edge goes to the longest known module the import names (``from echogains.data import labels`` -> the module
``echogains.data.labels``; ``from echogains.data.labels import LABELS`` -> the same module).

The checks (a)-(e): no import cycle, ``echogains`` imports neither the plugin nor the bundle, ``echogains.data``
imports neither ``echogains.evaluation`` nor ``echogains.augment``, no file over 700 lines outside tests, no function
over 80 lines of body (the first statement after the docstring to the last line: ``ruff format`` puts one parameter
per line in a signature that does not fit on one, and a docstring documenting each argument is not complexity).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: import name of each scanned package -> its folder
PACKAGES = {
    "echogains": ROOT / "echogains",
    "nnunet_ext": ROOT / "nnunet_ext",
    "scripts": ROOT / "bundles" / "echo_dnd" / "scripts",
}
MAX_FILE_LINES = 700
MAX_FUNCTION_LINES = 80
#: folders never scanned for sizes (tests are exempt; the others are not ours or not source)
SKIPPED_DIRS = {"tests", ".venv", "build", ".git", "node_modules", "__pycache__"}


@dataclass(frozen=True)
class Import:
    """One import statement's dependency: ``importer`` (a module) names ``target`` (absolute dotted name)."""

    importer: str
    target: str
    path: Path
    line: int


def discover_modules(packages: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under each package folder (``__init__`` names the package)."""
    modules: dict[str, Path] = {}
    for name, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [name, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from {'.' * level}{name} import ...`` written in ``module``."""
    if level == 0:
        return name or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level > len(package):
        raise ValueError(f"{module}: relative import beyond the top-level package")
    base = package[: len(package) - level + 1]
    return ".".join([*base, name] if name else base)


def imports_in(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(absolute dotted name, line) of every import in the file, at any depth (functions, classes, if-blocks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.level, node.module)
            for alias in node.names:  # ``from pkg import sub`` may name a submodule; resolved against the module set
                yield (f"{base}.{alias.name}" if alias.name != "*" else base), node.lineno
        elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield arg.value, node.lineno


def _is_import_module(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


def all_imports(modules: dict[str, Path]) -> list[Import]:
    return [
        Import(module, target, path, line)
        for module, path in modules.items()
        for target, line in imports_in(module, path)
    ]


def resolve(target: str, modules: Iterable[str]) -> str | None:
    """The longest known module that ``target`` names (itself or a parent package), else None (a third-party name)."""
    known = set(modules)
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def import_graph(modules: dict[str, Path], imports: list[Import]) -> dict[str, dict[str, Import]]:
    """importer -> {imported module -> the first import statement making that edge}; only edges between our modules."""
    graph: dict[str, dict[str, Import]] = {module: {} for module in modules}
    for imp in imports:
        target = resolve(imp.target, modules)
        if target is not None and target != imp.importer:
            graph[imp.importer].setdefault(target, imp)
    return graph


def find_cycles(graph: dict[str, Iterable[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_through(graph, component) for component in sorted(components)]


def _cycle_through(graph: dict[str, Iterable[str]], component: list[str]) -> list[str]:
    """A shortest cycle from the component's first module back to itself, staying inside the component."""
    start, members = component[0], set(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph.get(node, ())):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if succ in members and succ not in parent:
                    parent[succ] = node
                    following.append(succ)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # cannot happen in a strongly connected component


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, Import]]) -> str:
    """``a -> b (file:line) ; b -> a (file:line)``: each step with the import statement that makes it."""
    return " ; ".join(f"{a} -> {b} ({_rel(graph[a][b].path)}:{graph[a][b].line})" for a, b in zip(cycle, cycle[1:]))


def forbidden_imports(imports: list[Import], importer_prefix: str, forbidden: tuple[str, ...]) -> list[Import]:
    """Imports by ``importer_prefix`` (a package and its modules) of a name in (or under) one of ``forbidden``."""

    def within(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    return [
        imp
        for imp in imports
        if within(imp.importer, importer_prefix) and any(within(imp.target, prefix) for prefix in forbidden)
    ]


def source_files(root: Path) -> list[Path]:
    """Every ``.py`` file under ``root`` outside tests, virtual environments, build output and hidden folders."""
    return [
        path
        for path in sorted(root.rglob("*.py"))
        if not any(
            part in SKIPPED_DIRS or part.startswith(".") or part.endswith(".egg-info")
            for part in path.relative_to(root).parts[:-1]
        )
    ]


def oversized_files(files: list[Path], limit: int = MAX_FILE_LINES) -> list[tuple[Path, int]]:
    sizes = [(path, len(path.read_text(encoding="utf-8").splitlines())) for path in files]
    return [(path, n) for path, n in sizes if n > limit]


def long_functions(files: list[Path], limit: int = MAX_FUNCTION_LINES) -> list[tuple[Path, int, str, int]]:
    """(file, line, name, lines) of every function or method whose body is longer than ``limit`` lines (nested ones
    included); the body runs from the first statement after the docstring to the function's last line."""
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    body = body[1:]  # the docstring
                length = node.end_lineno - body[0].lineno + 1
                if length > limit:
                    found.append((path, node.lineno, node.name, length))
    return found


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# --- the repository -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repo() -> tuple[dict[str, Path], list[Import], dict[str, dict[str, Import]]]:
    modules = discover_modules(PACKAGES)
    imports = all_imports(modules)
    return modules, imports, import_graph(modules, imports)


def test_no_import_cycles(repo) -> None:
    _, _, graph = repo
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(describe_cycle(c, graph) for c in cycles)


def test_echogains_imports_neither_the_plugin_nor_the_bundle(repo) -> None:
    _, imports, _ = repo
    bad = forbidden_imports(imports, "echogains", ("nnunet_ext", "bundles", "scripts"))
    assert not bad, "echogains imports a deliverable it must not know:\n" + "\n".join(
        f"{_rel(i.path)}:{i.line}: {i.target}" for i in bad
    )


def test_data_knows_no_metrics_and_no_augmentation(repo) -> None:
    _, imports, _ = repo
    bad = forbidden_imports(imports, "echogains.data", ("echogains.evaluation", "echogains.augment"))
    assert not bad, "echogains.data imports evaluation or augmentation:\n" + "\n".join(
        f"{_rel(i.path)}:{i.line}: {i.target}" for i in bad
    )


def test_no_file_over_700_lines_outside_tests() -> None:
    big = oversized_files(source_files(ROOT))
    assert not big, "files over 700 lines:\n" + "\n".join(f"{_rel(p)}: {n} lines" for p, n in big)


def test_no_function_over_80_lines() -> None:
    long = long_functions(source_files(ROOT))
    assert not long, "functions over 80 lines:\n" + "\n".join(
        f"{_rel(p)}:{line} {name}: {n} lines" for p, line, name, n in long
    )


def test_the_scan_sees_the_known_edges(repo) -> None:
    """Guard against a scan that finds nothing: edges that exist today (module-level, relative, lazy) are found."""
    modules, imports, graph = repo
    assert len(modules) > 40 and len(imports) > 300
    assert "echogains.utils" in graph["echogains.cli"]
    assert "scripts.common" in graph["scripts"]  # ``from .common import ...`` in the bundle's __init__


# --- the checks themselves, on synthetic packages -------------------------------------------------------------------
def _package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _graph(root: Path, name: str = "pkg") -> tuple[list[Import], dict[str, dict[str, Import]]]:
    modules = discover_modules({name: root / name})
    imports = all_imports(modules)
    return imports, import_graph(modules, imports)


def test_cycle_found_through_lazy_and_relative_imports(tmp_path) -> None:
    _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from .sub import b\n",  # relative, names the submodule pkg.sub.b
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "def f():\n    from ..c import thing\n    return thing\n",  # function-level, two dots
            "pkg/c.py": "import pkg.a\nthing = 1\n",
            "pkg/d.py": "import numpy\nfrom pkg.c import thing\n",  # outside the cycle; numpy is not ours
        },
    )
    imports, graph = _graph(tmp_path)
    assert graph["pkg.a"].keys() == {"pkg.sub.b"} and graph["pkg.sub.b"].keys() == {"pkg.c"}
    assert graph["pkg.d"].keys() == {"pkg.c"}
    cycles = find_cycles(graph)
    assert cycles == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    text = describe_cycle(cycles[0], graph)
    assert "pkg.sub.b -> pkg.c" in text and "b.py:2" in text


def test_clean_package_has_no_cycle_and_no_violation(tmp_path) -> None:
    _package(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.data import load\n",
            "pkg/clinical.py": "import math\n",
            "pkg/data/__init__.py": "from .io import load\n",
            "pkg/data/io.py": "from pkg import clinical\n\ndef load():\n    import importlib\n"
            "    return importlib.import_module('pkg.clinical')\n",
            "pkg/evaluation.py": "from pkg.data.io import load\nfrom pkg.clinical import *\n",
        },
    )
    imports, graph = _graph(tmp_path)
    assert find_cycles(graph) == []
    assert graph["pkg.data.io"].keys() == {"pkg.clinical"}  # ``from pkg import clinical`` and import_module alike
    assert forbidden_imports(imports, "pkg.data", ("pkg.evaluation",)) == []
    assert forbidden_imports(imports, "pkg", ("nnunet_ext", "scripts")) == []


def test_layering_violation_found_at_any_depth(tmp_path) -> None:
    _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/data/__init__.py": "",
            "pkg/data/phantom.py": (
                "def volume():\n    from pkg.evaluation.clinical import simpson\n    return simpson\n"
            ),
            "pkg/data/runner.py": "import importlib\nplugin = importlib.import_module('nnunet_ext.trainers')\n",
            "pkg/evaluation/__init__.py": "",
            "pkg/evaluation/clinical.py": "simpson = 1\n",
            "pkg/evaluationx.py": "",  # a name that only starts like a forbidden package is allowed
            "pkg/data/other.py": "import pkg.evaluationx\n",
        },
    )
    imports, _ = _graph(tmp_path)
    bad = forbidden_imports(imports, "pkg.data", ("pkg.evaluation",))
    assert [(i.importer, i.target, i.line) for i in bad] == [("pkg.data.phantom", "pkg.evaluation.clinical.simpson", 2)]
    bad = forbidden_imports(imports, "pkg", ("nnunet_ext",))
    assert [(i.importer, i.line) for i in bad] == [("pkg.data.runner", 2)]


def test_size_limits(tmp_path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(80))  # 80 lines of body: allowed
    _package(
        tmp_path,
        {
            "pkg/ok.py": f'@decorator\ndef fits(\n    a,\n    b,\n):\n    """Long\n\n    docstring.\n    """\n{body}',
            "pkg/long.py": (
                f"class A:\n    def too_long(self):\n    {body.replace(chr(10), chr(10) + '    ')}    y = 0\n"
            ),
            "pkg/big.py": "\n" * 701,
            "pkg/tests/huge_test.py": "\n" * 800,  # tests are exempt
            "build/lib/big.py": "\n" * 800,
        },
    )
    files = source_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["pkg/big.py", "pkg/long.py", "pkg/ok.py"]
    assert [(p.name, n) for p, n in oversized_files(files)] == [("big.py", 701)]
    assert [(p.name, line, name, n) for p, line, name, n in long_functions(files)] == [("long.py", 2, "too_long", 81)]
