"""The engine's import graph, read from the sources with ``ast``: no import loops (also through
imports inside functions), and no engine module reaching up into the command-line layer."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "AsymSeg" / "asymseg"
#: The command-line layer: the only modules that may import ``asymseg.cli`` or ``asymseg.commands``.
CLI_LAYER = ("asymseg.cli", "asymseg.__main__", "asymseg.commands")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports anywhere in its source (top level or inside functions).

    ``from pkg import sub`` depends on ``pkg.sub`` only (Python runs ``pkg/__init__`` first, but that
    is the package's own business); ``from pkg import name`` depends on ``pkg``.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            subs = {f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in modules}
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(module)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_loop():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_engine_has_no_import_loops():
    graph = _graph()
    assert len(graph) > 50 and "asymseg.modelfile" in graph["asymseg.registry"]  # the graph was read
    assert _cycles(graph) == []


def test_no_engine_module_imports_the_command_line_layer():
    def in_cli(module: str) -> bool:
        return any(module == layer or module.startswith(layer + ".") for layer in CLI_LAYER)

    offenders = sorted(f"{name} imports {target}" for name, targets in _graph().items() if not in_cli(name)
                       for target in targets if in_cli(target))
    assert offenders == []


def test_load_model_by_name_lives_in_the_registry(tmp_path):
    import pytest

    from asymseg.errors import ModelError
    from asymseg.modelfile import load_model as load_directory
    from asymseg.registry import load_model

    assert load_model("asymseg-starter-deepmedic").card.name == "asymseg-starter-deepmedic"
    with pytest.raises(ModelError, match="to load a model by name, use asymseg.registry.load_model"):
        load_directory("asymseg-starter-deepmedic")
