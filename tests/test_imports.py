"""Imports between the suite's modules go one way: no import circles, and every module in its layer.

The graph is read from the source with :mod:`ast`, not by importing anything: every ``import`` and
``from ... import`` statement, at the top of a module *and* inside functions (an import inside a function
still closes a circle, it only hides it until the call), plus ``importlib.import_module("<constant>")``.
``baselines`` is part of the graph too, so that a circle through it (``cgdm.x -> baselines.y -> cgdm.x``)
counts. Third-party imports are not edges: a heavy package imported lazily inside a function (torch,
pyiqa, ...) cannot close a circle.

Layers (:data:`LAYERS`, every module of ``cgdm`` and ``baselines`` placed in one)::

    core  <-  harness  <-  baselines, evaluation  <-  cli (and the workflow)

* core: the networks, sampler, bitstream, zoo and trainers, plus self-contained utilities they use
  (:mod:`cgdm.download`, :mod:`cgdm.hashing`, :mod:`cgdm.weights`). Imports only core.
* harness: the codec interface and CGDM's workflow codecs (:mod:`cgdm.harness`), the results format,
  datasets, the encode workflow step and the workflow's state files.
* baselines (:mod:`baselines`) and evaluation (:mod:`cgdm.evaluation`): built on core and harness,
  never on each other, never on the command line.
* cli: ``cgdm <command>``: the ``.cgdm`` command lines, ``cgdm train`` and the zoo steps.
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
    assert "cgdm.cli_cgdm" in graph["cgdm.cli_codec"]  # importlib.import_module("cgdm.cli_cgdm")
    assert "cgdm.online" in graph["cgdm.model"]       # inside CGDM.compress
    assert "cgdm.bitstream" in graph["cgdm.model"]    # `from cgdm import bitstream as bs`
    # and a circle made of such edges is found
    fake = {"a": {"b": [1]}, "b": {"c": [2]}, "c": {"a": [3]}, "d": {"a": [4]}}
    assert circles(fake) == [["a", "b", "c"]]


# -- layers ---------------------------------------------------------------------------------------------
CORE, HARNESS, EVALUATION, BASELINES, CLI = "core", "harness", "evaluation", "baselines", "cli"

#: the layer of every module; a new module fails test_every_module_has_a_layer until it is placed here
LAYERS: dict[str, str] = {
    # core: networks, sampler, bitstream, zoo, trainers
    "cgdm": CORE,  # the package: __version__ only
    "cgdm.bitstream": CORE,
    "cgdm.boundary": CORE,
    "cgdm.codec": CORE,
    "cgdm.coder": CORE,
    "cgdm.consistency": CORE,
    "cgdm.crops": CORE,
    "cgdm.decode_checks": CORE,
    "cgdm.diffusion": CORE,
    "cgdm.diffusion.resshift": CORE,
    "cgdm.diffusion.scheduler": CORE,
    "cgdm.diffusion.unet": CORE,
    "cgdm.diffusion_decoder": CORE,
    "cgdm.discriminator": CORE,
    "cgdm.fusion": CORE,
    "cgdm.imageio": CORE,
    "cgdm.model": CORE,
    "cgdm.online": CORE,
    "cgdm.rans_guard": CORE,
    "cgdm.redecode": CORE,  # a .cgdm file's decoding settings (bitstream level); `cgdm redecode` maps to its main
    "cgdm.sampling_options": CORE,  # a .cgdm file's decoding settings and their bytes; no torch
    "cgdm.syntax": CORE,
    "cgdm.tensors": CORE,
    "cgdm.train": CORE,  # the trainer; `cgdm train` is cgdm.cli_train
    "cgdm.train_diffusion": CORE,
    "cgdm.training": CORE,
    "cgdm.variants": CORE,
    "cgdm.zoo": CORE,
    # core utilities: self-contained (standard library, numpy/PIL; torch/pyiqa only lazily), no suite concepts
    "cgdm.download": CORE,  # verified HTTP download (sha256 before a file is kept): the zoo and the weights use it
    "cgdm.hashing": CORE,  # config_hash: the trainers' resume checks and the results' provenance
    "cgdm.weights": CORE,  # weight-file table + no-download guard: metrics and the decoder's LPIPS-VGG loss
    # harness: the codec interface, CGDM's workflow codecs, results format, data, workflow steps
    "cgdm.harness": HARNESS,
    "cgdm.harness.codecs": HARNESS,
    "cgdm.harness.cgdm_codecs": HARNESS,
    "cgdm.availability": HARNESS,
    "cgdm.dataset_checksums": HARNESS,
    "cgdm.dataset_registry": HARNESS,
    "cgdm.datasets": HARNESS,
    "cgdm.pipeline": HARNESS,
    "cgdm.results": HARNESS,
    # evaluation: metrics, tables, plots, the report
    "cgdm.evaluation": EVALUATION,
    "cgdm.evaluation.aggregate": EVALUATION,
    "cgdm.evaluation.bdrate": EVALUATION,
    "cgdm.evaluation.crops": EVALUATION,
    "cgdm.evaluation.fid": EVALUATION,
    "cgdm.evaluation.metrics": EVALUATION,
    "cgdm.evaluation.paired": EVALUATION,
    "cgdm.evaluation.plots": EVALUATION,
    "cgdm.evaluation.realism": EVALUATION,
    "cgdm.evaluation.report": EVALUATION,
    "cgdm.evaluation.studies": EVALUATION,
    "cgdm.evaluation.tables": EVALUATION,
    "cgdm.evaluation.tidy": EVALUATION,
    "cgdm.evaluation.weights": EVALUATION,  # `python -m cgdm.evaluation.weights` (the command of cgdm.weights)
    # baselines: the codecs CGDM is compared with
    "baselines": BASELINES,
    "baselines.classical": BASELINES,
    "baselines.generative": BASELINES,
    "baselines.learned": BASELINES,
    "baselines.learned_training": BASELINES,  # the trainer of baselines.learned.CompressAITrained
    "baselines.published": BASELINES,
    # command line
    "cgdm.__main__": CLI,
    "cgdm.cli": CLI,
    "cgdm.cli_cgdm": CLI,
    "cgdm.cli_codec": CLI,
    "cgdm.cli_datasets": CLI,
    "cgdm.cli_train": CLI,  # `cgdm train` (any trainer, from a file or the workflow's spec), zoo-ship, zoo-extend
    "cgdm.cli_util": CLI,
}

#: the layers each layer may import (its own included)
ALLOWED: dict[str, set[str]] = {
    CORE: {CORE},
    HARNESS: {CORE, HARNESS},
    BASELINES: {CORE, HARNESS, BASELINES},
    EVALUATION: {CORE, HARNESS, EVALUATION},
    CLI: {CORE, HARNESS, BASELINES, EVALUATION, CLI},
}

#: the codec adapters of the harness: the evaluation reaches codecs only through the codec interface
CODEC_ADAPTERS = {"cgdm.harness.cgdm_codecs"}


def _violations(layer: str, allowed: set[str], forbidden_modules: set[str] = frozenset()) -> list[str]:
    graph = import_graph()
    return [f"{module} (line {', '.join(map(str, lines))}) imports {target} ({LAYERS.get(target, '?')})"
            for module in sorted(graph) if LAYERS.get(module) == layer
            for target, lines in sorted(graph[module].items())
            if LAYERS.get(target) not in allowed or target in forbidden_modules]


def test_every_module_has_a_layer():
    """A new module is placed in a layer consciously (and a removed one leaves the table)."""
    modules = set(_modules())
    assert not modules - set(LAYERS), f"modules without a layer (add them to LAYERS): {sorted(modules - set(LAYERS))}"
    assert not set(LAYERS) - modules, f"LAYERS names modules that do not exist: {sorted(set(LAYERS) - modules)}"
    assert set(LAYERS.values()) == set(ALLOWED)


def test_core_imports_only_core():
    """The CGDM core imports neither the harness, the evaluation, the baselines nor the command line."""
    bad = _violations(CORE, {CORE})
    assert not bad, "core modules import outside the core:\n" + "\n".join(bad)


def test_evaluation_imports_no_baselines_and_no_codec_adapters():
    bad = _violations(EVALUATION, ALLOWED[EVALUATION], CODEC_ADAPTERS)
    assert not bad, "evaluation imports outside its layers:\n" + "\n".join(bad)


def test_baselines_import_no_command_line_and_no_evaluation():
    bad = _violations(BASELINES, ALLOWED[BASELINES])
    assert not bad, "baselines import outside their layers:\n" + "\n".join(bad)


def test_harness_imports_only_core_and_harness():
    bad = _violations(HARNESS, ALLOWED[HARNESS])
    assert not bad, "harness modules import outside core and harness:\n" + "\n".join(bad)


def test_layer_check_sees_a_violation(monkeypatch):
    """The layer check is not blind: a core module importing the harness is reported with its line."""
    graph = import_graph()
    fake = {**graph, "cgdm.zoo": {**graph["cgdm.zoo"], "cgdm.harness.codecs": [27]}}
    monkeypatch.setitem(globals(), "import_graph", lambda: fake)
    bad = _violations(CORE, {CORE})
    assert bad == ["cgdm.zoo (line 27) imports cgdm.harness.codecs (harness)"]
