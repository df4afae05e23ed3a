"""The package's layers: imports run one way, down, and no module or folder imports in a circle.

The order of the layers is declared once, here; docs/architecture.md explains it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "icckd_cli"

# top to bottom; a folder may import its own modules and any folder on a lower rank. Folders
# on one rank are peers and import none of each other. The package's face (__init__,
# __main__, and losses.py, the reference API of docs/method.md) stands above every layer.
LAYERS: list[tuple[str, ...]] = [
    ("cli",),
    ("commands",),
    ("presentation",),
    ("training",),
    ("settings",),
    ("methods",),
    ("models", "data", "metrics"),
    ("base",),
]
FACE = {"icckd_cli", "icckd_cli.__main__", "icckd_cli.losses"}
RANK = {folder: rank for rank, folders in enumerate(LAYERS) for folder in folders}


def module_name(path: Path) -> str:
    """icckd_cli/commands/runs.py -> icckd_cli.commands.runs; a package's __init__ is itself."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every icckd_cli module a file imports, at the top or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    known = {module_name(p) for p in ROOT.rglob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = node.module or ""
            if node.level:
                module = ".".join(p for p in (base, module) if p)
            # `from pkg import mod` imports the module pkg.mod where one exists
            targets = [
                f"{module}.{a.name}" if f"{module}.{a.name}" in known else module
                for a in node.names
            ]
        found.update(t for t in targets if t.split(".")[0] == "icckd_cli")
    found.discard(name)
    return found


def modules() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports."""
    return {module_name(p): imports(p) for p in sorted(ROOT.rglob("*.py"))}


def folder(module: str) -> str | None:
    """The layer folder a module lives in, None for the package's face."""
    if module in FACE:
        return None
    return module.split(".")[1]


def test_every_folder_has_a_declared_layer() -> None:
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(RANK), "declare each folder's layer in LAYERS (tests/test_layers.py)"
    loose = sorted(p.name for p in ROOT.glob("*.py") if module_name(p) not in FACE)
    assert loose == [], f"modules outside every layer: {loose}"


def test_imports_run_down_the_layers() -> None:
    upward = []
    for module, targets in modules().items():
        here = folder(module)
        if here is None:
            continue
        for target in targets:
            there = folder(target)
            if there is None:
                if target != "icckd_cli":  # the package root holds the version alone
                    upward.append(f"{module} -> {target} (the package's face)")
            elif there != here and RANK[there] <= RANK[here]:
                upward.append(f"{module} -> {target}")
    assert upward == []


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _sub_folder(module: str) -> str:
    """The folder a module sits in: icckd_cli.commands.runs -> icckd_cli.commands."""
    path = ROOT.parent / module.replace(".", "/")
    return module if path.is_dir() else module.rsplit(".", 1)[0]


def test_no_circle_between_modules() -> None:
    graph = modules()
    # a package's __init__ that gathers its own modules is its face, not a party to a circle
    graph = {
        m: {t for t in ts if not (t in graph and m.startswith(t + "."))} for m, ts in graph.items()
    }
    assert _cycle(graph) is None


def test_no_circle_between_folders() -> None:
    graph: dict[str, set[str]] = {}
    for module, targets in modules().items():
        src = _sub_folder(module)
        for t in targets:
            dst = _sub_folder(t)
            # a folder importing its own parent package's face is not a folder edge
            if dst != src and not src.startswith(dst + "."):
                graph.setdefault(src, set()).add(dst)
    assert _cycle(graph) is None


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from icckd_cli.base.errors import UsageError\n", {"icckd_cli.base.errors"}),
        ("from icckd_cli.training import engine\n", {"icckd_cli.training.engine"}),
        ("def f():\n    from icckd_cli.commands import runs\n", {"icckd_cli.commands.runs"}),
    ],
)
def test_imports_are_read_at_the_top_and_inside_functions(
    tmp_path: Path, source: str, expected: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = ROOT / "methods" / "_probe_layers.py"
    probe.write_text(source)
    try:
        assert imports(probe) == expected
    finally:
        probe.unlink()


def test_an_upward_import_and_a_circle_are_caught() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert RANK["base"] > RANK["models"] > RANK["methods"] > RANK["settings"] > RANK["training"]
