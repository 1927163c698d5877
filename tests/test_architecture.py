"""The layering rule of docs/ARCHITECTURE.md, read from the code: every import goes down (or stays in its layer's
package), and no two modules import each other, even through a chain or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Low to high. A module may import its own package and the layers below it, never above.
LAYERS = [
    ("errors", "toml", "logs", "threads"),
    ("data",),
    ("quant",),
    ("retrieval",),
    ("eval",),
    ("compress",),
    ("models",),
    ("train",),
    ("records",),
    ("export",),
    ("api", "serving"),
    ("experiments",),
    ("demo",),
    ("cli",),
]
RANK = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "qrec").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every qrec module ``module`` imports, at the top or inside a function (``from pkg import name``
    resolves to ``pkg.name`` when that is a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in found if m.split(".")[0] == "qrec" and m != module}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, set(mods)) & set(mods) for m, p in mods.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_package_has_a_layer():
    missing = {_layer(m) for m in _modules()} - set(RANK) - {None}
    assert not missing, f"packages without a layer in LAYERS (and docs/ARCHITECTURE.md): {sorted(missing)}"


def test_imports_only_go_down():
    upward = []
    for module, targets in _graph().items():
        here = _layer(module)
        for target in targets:
            there = _layer(target)
            if here and there and here != there and RANK[there] >= RANK[here]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the layering (docs/ARCHITECTURE.md):\n" + "\n".join(sorted(upward))


def test_no_module_cycles():
    graph, cycles = _graph(), []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    # a package's __init__ re-exporting its modules is not a cycle of logic
    cycles = [c for c in cycles if not _is_reexport(c, graph)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _is_reexport(cycle: str, graph) -> bool:
    nodes = cycle.split(" -> ")
    return any(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(nodes, nodes[1:])
               if (SRC / Path(*a.split("."))).is_dir() or (SRC / Path(*b.split("."))).is_dir())


@pytest.mark.parametrize("package", ["train", "eval", "export", "experiments", "records"])
def test_no_probing_of_models_outside_models(package):
    """The backbone protocol (``qrec.models.base.Recommender``) declares every hook: callers do not probe."""
    offenders = []
    for module, path in _modules().items():
        if _layer(module) != package and module != f"qrec.{package}":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                    and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "model"):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not offenders, offenders
