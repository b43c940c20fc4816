"""Imports between the suite's modules go one way: no import circles among the ``cgdm`` modules.

The graph is read from the source with :mod:`ast`, not by importing anything: every ``import`` and
``from ... import`` statement, at the top of a module *and* inside functions (an import inside a function
still closes a circle, it only hides it until the call), plus ``importlib.import_module("<constant>")``.
``baselines`` is part of the graph too, so that a circle through it (``cgdm.x -> baselines.y -> cgdm.x``)
counts. Third-party imports are not edges: a heavy package imported lazily inside a function (torch,
pyiqa, ...) cannot close a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("cgdm", "baselines")

#: circles that are known and accepted, as sorted tuples of module names, each with the reason (none now)
KNOWN_CIRCLES: dict[tuple[str, ...], str] = {}


def _modules() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of :data:`PACKAGES` (``pkg/__init__.py`` -> ``pkg``)."""
    mods = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names an import node may load (a name imported from a package may be a submodule)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: from the module's package, one level up per extra dot
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[:len(base) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        return [source] + [f"{source}.{alias.name}" for alias in node.names]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return [node.args[0].value]
    return []


def import_graph() -> dict[str, dict[str, list[int]]]:
    """``{module: {imported module: [line numbers]}}`` over the modules of :data:`PACKAGES`."""
    mods = _modules()
    graph: dict[str, dict[str, list[int]]] = {}
    for name, path in mods.items():
        edges = graph.setdefault(name, {})
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for target in _targets(node, name, path.name == "__init__.py"):
                if target not in mods:
                    continue  # third-party, or a name (not a submodule) imported from a module
                if target != name:
                    edges.setdefault(target, []).append(node.lineno)
    return graph


def circles(graph: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _describe(component: list[str], graph: dict[str, dict[str, list[int]]]) -> str:
    inside = set(component)
    return "; ".join(f"{a} -> {b} (line {', '.join(map(str, graph[a][b]))})"
                     for a in component for b in sorted(graph[a]) if b in inside)


def test_no_import_circles():
    graph = import_graph()
    unexpected = [c for c in circles(graph) if tuple(c) not in KNOWN_CIRCLES]
    assert not unexpected, "import circles:\n" + "\n".join(_describe(c, graph) for c in unexpected)


def test_known_circles_still_exist():
    """An accepted circle that is gone must leave KNOWN_CIRCLES too (so the list stays true)."""
    found = {tuple(c) for c in circles(import_graph())}
    assert set(KNOWN_CIRCLES) <= found


def test_graph_sees_imports_inside_functions():
    """The graph is not blind: lazy imports inside functions and import_module() calls are edges."""
    graph = import_graph()
    assert "cgdm.zoo" in graph["cgdm.coder"]          # `from cgdm.zoo import ...` inside BaseCoder methods
    assert "cgdm.model" in graph["cgdm.coder"]        # importlib.import_module("cgdm.model")
    assert "cgdm.online" in graph["cgdm.model"]       # inside CGDM.compress
    assert "cgdm.bitstream" in graph["cgdm.model"]    # `from cgdm import bitstream as bs`
    # and a circle made of such edges is found
    fake = {"a": {"b": [1]}, "b": {"c": [2]}, "c": {"a": [3]}, "d": {"a": [4]}}
    assert circles(fake) == [["a", "b", "c"]]


def test_moved_names_still_importable_from_their_old_modules():
    """Names that moved to one-way modules are still importable where callers found them before."""
    from cgdm import cli_util, coder, crops, decode_checks, model, tensors, train

    assert coder.image_to_tensor is model.image_to_tensor is tensors.image_to_tensor
    assert coder.tensor_to_image is model.tensor_to_image is tensors.tensor_to_image
    assert model.pad_to is tensors.pad_to
    assert coder.check_decode_resources is model.check_decode_resources is decode_checks.check_decode_resources
    assert coder.estimate_decode_bytes is decode_checks.estimate_decode_bytes
    assert coder.write_and_report is model.write_and_report is cli_util.write_and_report
    assert coder.add_max_pixels_argument is cli_util.add_max_pixels_argument
    assert coder.one_line is cli_util.one_line
    assert train.RandomCrops is crops.RandomCrops
