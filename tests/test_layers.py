"""The package's layers import only downward (DESIGN.md, section 2):

    core model files  <-  data/  <-  training/  <-  hub_cards/ and the CLIs

Every module under ``mmoe/`` is parsed with ``ast`` and every import is checked, including imports inside functions
and under ``if TYPE_CHECKING:`` (a lazy or type-only import is still a dependency). Nothing is imported or executed,
so the check also covers modules whose optional dependencies are absent.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "mmoe"

CORE, DATA, TRAINING, TOP = 0, 1, 2, 3
LAYER_NAMES = {CORE: "core", DATA: "data/", TRAINING: "training/", TOP: "hub_cards/ and CLIs"}
CLI_MODULES = {"mmoe.training.cli", "mmoe.training.categorize_cli", "mmoe.hub_cards.cli"}
"""Command-line entry points sit on top: ``mmoe-train`` may write a model card."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


MODULES = all_modules()


def layer(module: str) -> int:
    """The package namespace ``mmoe`` is on top; its top-level files and ``metrics/`` are core; then data, training,
    hub_cards/CLIs."""
    # `mmoe/__init__` is the public namespace: it re-exports every layer (imports training.trainer and hub_cards).
    if module in CLI_MODULES or module == "mmoe":
        return TOP
    parts = module.split(".")
    sub = parts[1] if len(parts) > 1 else ""
    return {"data": DATA, "training": TRAINING, "hub_cards": TOP}.get(sub, CORE)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """``id`` of every node under an ``if TYPE_CHECKING:`` block."""
    nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            nodes.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return nodes


def imports_of(module: str, type_only: bool = True) -> list[tuple[int, str]]:
    """``(line, imported mmoe module)`` for every import in ``module``: ``from x import name`` counts as an import
    of ``x.name`` when that is a module (``from . import formatting``), else of ``x``. ``type_only=False`` leaves
    out the imports under ``if TYPE_CHECKING:``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped = set() if type_only else _type_checking_nodes(tree)
    found = []
    for node in ast.walk(tree):  # every node: imports in functions, classes and TYPE_CHECKING blocks too
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == "__init__.py", node)
            for alias in node.names:
                found.append((node.lineno, f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target))
    return [(line, name) for line, name in found if name == "mmoe" or name.startswith("mmoe.")]


def upward_imports() -> list[str]:
    problems = []
    for module, path in MODULES.items():
        for line, target in imports_of(module):
            if layer(target) > layer(module):
                problems.append(
                    f"{path}:{line}: {module} ({LAYER_NAMES[layer(module)]}) imports "
                    f"{target} ({LAYER_NAMES[layer(target)]})"
                )
    return problems


def import_cycles() -> list[list[str]]:
    """Cycles of the import graph between mmoe modules, imports inside functions and under ``if TYPE_CHECKING:``
    included: a lazy import is a hidden cycle, and a type-only import is still a dependency (it runs under a type
    checker, and ``typing.get_type_hints`` or a removed ``TYPE_CHECKING`` guard make it real), as the layer check
    counts it too. A package's ``__init__`` re-exporting its submodules is no edge back from them (they do not
    import it)."""
    graph = {m: {t for _, t in imports_of(m, type_only=True) if t in MODULES and t != m} for m in MODULES}
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for module in MODULES:
        if module not in state:
            visit(module)
    return cycles


def test_the_modules_are_found():
    assert {"mmoe.modeling_mmoe", "mmoe.data.mustard", "mmoe.training.trainer", "mmoe.hub_cards.card_data"} <= set(
        MODULES
    )
    assert "mmoe.training.pipeline" not in MODULES  # split into arguments, stages/, trainer, ... (a stale name fails)
    assert layer("mmoe") == TOP and layer("mmoe.version") == CORE and layer("mmoe.training.stages.router") == TRAINING
    assert layer("mmoe.fusion") == CORE and layer("mmoe.data.predictions") == DATA
    assert layer("mmoe.training.unimodal.cross_fit") == TRAINING and layer("mmoe.hub_cards.model_card") == TOP


def test_no_module_imports_a_higher_layer():
    problems = upward_imports()
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_no_import_cycles():
    cycles = import_cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("mmoe.data.mustard", "from ..training.unimodal import read_prediction_file\n", "mmoe.training.unimodal"),
        ("mmoe.training.trainer", "def f():\n    from ..hub_cards import ModelCardCallback\n", "mmoe.hub_cards"),
        ("mmoe.fusion", "import mmoe\n", "mmoe"),  # the package namespace re-exports every layer
        ("mmoe.fusion", "if TYPE_CHECKING:\n    from mmoe.data import collators\n", "mmoe.data.collators"),
    ],
)
def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch, module, source, expected):
    """The check can fail: a planted upward import (top level, in a function, type-only) is reported by name."""
    path = tmp_path / "planted.py"
    path.write_text(source)
    monkeypatch.setitem(MODULES, module, path)
    problems = upward_imports()
    assert any(f"{module} (" in p and f"imports {expected} (" in p for p in problems), problems


def test_the_checker_catches_a_cycle(monkeypatch, tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from . import b\n")
    b.write_text("def f():\n    from .a import x\n")
    monkeypatch.setitem(MODULES, "mmoe.hub_cards.a", a)
    monkeypatch.setitem(MODULES, "mmoe.hub_cards.b", b)
    assert ["mmoe.hub_cards.a", "mmoe.hub_cards.b", "mmoe.hub_cards.a"] in import_cycles()


def test_the_checker_catches_a_type_checking_only_cycle(monkeypatch, tmp_path):
    """A cycle closed only by an ``if TYPE_CHECKING:`` import is still reported."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from . import b\n")
    b.write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .a import x\n")
    monkeypatch.setitem(MODULES, "mmoe.hub_cards.a", a)
    monkeypatch.setitem(MODULES, "mmoe.hub_cards.b", b)
    assert ["mmoe.hub_cards.a", "mmoe.hub_cards.b", "mmoe.hub_cards.a"] in import_cycles()
    b.write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .c import x\n")
    assert not any("mmoe.hub_cards.a" in cycle for cycle in import_cycles())  # no cycle without that import
