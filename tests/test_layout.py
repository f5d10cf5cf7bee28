"""The layout rules a newcomer relies on (README "Layout"): who may import whom, module size, one owner per format.

These read the source tree (ast), so they fail the moment a change breaks a rule, with the file and line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vits", "prep", "pipeline", "server", "studio", "monotonic_align")
TOP_MODULES = ("settings", "app")
MAX_LINES = 600


def _sources() -> list[Path]:
    files = [ROOT / f"{name}.py" for name in TOP_MODULES]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return [f for f in files if f.is_file()]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module))
            # `from pkg import submodule` imports the submodule too
            out += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return out


def _first_party(module: str, known: set[str]) -> str | None:
    while module:
        if module in known:
            return module
        module = module.rpartition(".")[0]
    return None


def test_no_module_is_over_600_lines():
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in _sources()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, "split these by concept (README Layout): " + "; ".join(long)


@pytest.mark.parametrize("library,forbidden", [
    ("vits", ("prep", "pipeline", "server", "studio", "settings", "app")),
    ("prep", ("pipeline", "server", "studio", "app")),
    ("server", ("studio", "app")),
    ("pipeline", ("studio", "app")),
])
def test_dependencies_point_one_way(library, forbidden):
    wrong = []
    for path in _sources():
        if _module_name(path).split(".")[0] != library:
            continue
        for line, module in _imports(path):
            if module.split(".")[0] in forbidden:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, f"{library}/ must not import {', '.join(forbidden)}: " + "; ".join(wrong)


def test_no_import_cycles():
    sources = _sources()
    known = {_module_name(p) for p in sources}
    graph: dict[str, set[str]] = {}
    for path in sources:
        here = _module_name(path)
        targets = set()
        for _, module in _imports(path):
            target = _first_party(module, known)
            # a package's __init__ importing its own submodules is not a cycle users trip over
            if target and target != here and not target.startswith(here + "."):
                targets.add(target)
        graph[here] = targets
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                # importing a parent package from its submodule is how Python packages work
                if not all(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(cycle, cycle[1:])):
                    cycles.append(" → ".join(cycle))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(cycles)


def _string_literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_voice_folder_names_have_one_owner():
    """Folder names of Data/<voice>/ are spelled in vits/voice_folder.py only (README Layout)."""
    owner = ROOT / "vits" / "voice_folder.py"
    names = {"configs", "configs/config.json", "filelists/train.list", "filelists/val.list"}
    found = [f"{p.relative_to(ROOT)}:{line} {value!r}" for p in _sources() if p != owner
             for line, value in _string_literals(p) if value in names]
    assert not found, "use vits.voice_folder (CONFIG, config_path, TRAIN_LIST ...): " + "; ".join(found)


def test_list_lines_are_parsed_in_one_place():
    """Only vits/lists.py splits a list line on '|' (esd.list, train.list, val.list)."""
    owner = ROOT / "vits" / "lists.py"
    other_formats = {ROOT / "vits" / "text" / "en" / "neural.py"}  # g2p_en's homograph table, not a list
    pattern = re.compile(r"""\.split\(\s*["']\|["']""")
    found = [f"{p.relative_to(ROOT)}:{n}" for p in _sources() if p != owner and p not in other_formats
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not found, "parse list lines with vits.lists: " + "; ".join(found)
