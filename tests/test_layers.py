"""Imports point down the layers only, with no cycles (imports inside functions included).

    base        walt (its __init__), walt.utils, walt.runs, walt.weights
    leaves      walt.data, walt.autoencoder, walt.transformer, walt.diffusion, walt.metrics, walt.text
    config      walt.config                (the one raw Hydra -> typed RunConfig step)
    modules     walt.modules               (LightningModules take typed configs)
    eval        walt.eval
    pipeline    walt.pipeline              (fit, first stage, train)
    entry       walt.cli, walt.demo, walt.sample
    analysis    reads run directories (walt.runs) and the sweep presets that declare its tables (walt.config)

A Hydra `_target_` in the config tree is an import too: the module that instantiates the configs
(INSTANTIATOR) imports every walt target named in experiments/ and sweeps/.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [
    ("walt", "walt.utils", "walt.runs", "walt.weights"),  # "walt": the package's own __init__ only
    ("walt.data", "walt.autoencoder", "walt.transformer", "walt.diffusion", "walt.metrics", "walt.text"),
    ("walt.config",),
    ("walt.modules",),
    ("walt.eval",),
    ("walt.pipeline",),
    ("walt.cli", "walt.demo", "walt.sample"),
]
ANALYSIS_MAY_IMPORT = ("walt", "walt.runs", "walt.config")
INSTANTIATOR = "walt.pipeline.fit"  # hydra.utils.instantiate of trainer, logger, callbacks, strategies
CONFIG_TREES = ("experiments", "sweeps")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its body (functions, classes, try blocks)."""
    name = module_name(path) if path.is_relative_to(ROOT) else path.stem
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return {m for m in found if m.split(".")[0] in ("walt", "analysis")}


def config_targets() -> set[str]:
    """The walt / analysis objects the YAML config tree names as Hydra `_target_`s (dotted paths)."""
    import re

    found = set()
    for tree in CONFIG_TREES:
        for path in ROOT.joinpath(tree).rglob("*.yaml"):
            found.update(re.findall(r"_target_:\s*['\"]?((?:walt|analysis)\.[\w.]+)", path.read_text()))
    return found


def graph() -> dict[str, set[str]]:
    files = [*ROOT.joinpath("walt").rglob("*.py"), *ROOT.joinpath("analysis").rglob("*.py")]
    modules = {module_name(f): f for f in files}
    out = {}
    for name, path in modules.items():
        deps = set()
        for imp in imports_of(path) | (config_targets() if name == INSTANTIATOR else set()):
            while imp and imp not in modules:  # `from walt.x import Name`: the module is walt.x
                imp = imp.rpartition(".")[0]
            if imp and imp != name:
                deps.add(imp)
        out[name] = deps
    return out


def layer_of(module: str) -> int | None:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if module == p or (p != "walt" and module.startswith(p + ".")):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    return None if best is None else best[0]


def upward_edges(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, deps in edges.items():
        for dst in deps:
            if src.startswith("analysis"):
                if dst.startswith("walt") and dst not in ANALYSIS_MAY_IMPORT:
                    bad.append(f"{src} -> {dst} (analysis reads run directories and sweep presets only)")
                continue
            if dst.startswith("analysis") and src not in ("walt.cli", "walt.demo"):
                bad.append(f"{src} -> {dst}")
            ls, ld = layer_of(src), layer_of(dst)
            if ls is not None and ld is not None and ld > ls:
                bad.append(f"{src} (layer {ls}) -> {dst} (layer {ld})")
    return sorted(bad)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    assert [m for m in graph() if not m.startswith("analysis") and layer_of(m) is None] == []


def test_config_targets_are_edges_of_the_instantiator():
    """Every `_target_` names an existing module, and counts as an import of the module that instantiates it."""
    modules = graph()
    targets = config_targets()
    assert targets and all(t.rpartition(".")[0] in modules for t in targets), sorted(targets)
    assert {t.rpartition(".")[0] for t in targets} <= modules[INSTANTIATOR]
    assert "instantiate(" in ROOT.joinpath(*INSTANTIATOR.split(".")).with_suffix(".py").read_text()


def test_imports_point_down_only():
    assert upward_edges(graph()) == []


def test_no_import_cycles():
    # a package importing its own submodules is not a cycle worth reporting; modules importing each other is
    edges = {k: {d for d in v if not k.startswith(d + ".")} for k, v in graph().items()}
    assert cycles(edges) == []


@pytest.mark.parametrize("edges,expect_upward", [
    # the cycle the architecture issue found: config -> evaluate -> train -> first_stage -> train,
    # first_stage -> modules' private helper; each edge closed by an import inside a function
    ({"walt.config.schema": {"walt.eval.evaluate"}, "walt.eval.evaluate": {"walt.pipeline.train"},
      "walt.pipeline.train": {"walt.pipeline.first_stage"}, "walt.pipeline.first_stage": {"walt.pipeline.train"}}, True),
    ({"analysis.tables": {"walt.pipeline.fit"}}, True),
    ({"walt.pipeline.train": {"walt.eval.evaluate"}, "walt.eval.evaluate": {"walt.modules.build"}}, False),
])
def test_checker_catches_the_old_cycle(edges, expect_upward):
    assert bool(upward_edges(edges)) == expect_upward
    if "walt.pipeline.first_stage" in edges:
        assert cycles(edges) == [["walt.pipeline.first_stage", "walt.pipeline.train"]]


def test_function_level_imports_are_seen(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from walt.pipeline.train import train\n    import walt.eval.evaluate\n")
    assert {"walt.pipeline.train", "walt.eval.evaluate"} <= imports_of(src)
