"""Imports point one way: core <- transforms <- application, and no module imports in a cycle.

Read with `ast` (nothing is imported), so a violation is found even in a module no test imports.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("beam_pipeline", "transforms", "runners")

# Layer of a module, by dotted-name prefix (first match wins). A module may import its own layer
# and the layers below it, never one above.
LAYERS = [("beam_pipeline.core", 0), ("transforms", 1), ("beam_pipeline", 2), ("runners", 2)]


def _modules():
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def _layer(name: str):
    return next((layer for prefix, layer in LAYERS
                 if name == prefix or name.startswith(prefix + ".")), None)


def _imports(name: str, path: pathlib.Path):
    """Project modules `name` imports (at any depth of the file: lazy imports count too)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in PACKAGES + ("tests", "bench"):
                yield target


MODULES = dict(_modules())


def _resolve(target: str):
    """The project module a dotted import names (a `from x import name` may name an attribute)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


GRAPH = {name: {m for m in map(_resolve, _imports(name, path)) if m and m != name}
         for name, path in MODULES.items()}


def test_the_layers_are_known():
    assert {"beam_pipeline.core.sequencer", "transforms.sequence", "beam_pipeline.pipeline"} <= set(MODULES)
    assert all(_layer(name) is not None for name in MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_upward_import(name):
    upward = sorted(t for t in GRAPH[name] if _layer(t) > _layer(name))
    assert not upward, f"{name} (layer {_layer(name)}) imports a higher layer: {upward}"


def test_the_product_does_not_import_test_tooling():
    for name, path in MODULES.items():
        bad = [t for t in _imports(name, path) if t.split(".")[0] in ("tests", "bench")]
        assert not bad, f"{name} imports {bad}"


def test_the_core_does_not_import_beam():
    for name, path in MODULES.items():
        if _layer(name) == 0:
            tree = ast.parse(path.read_text())
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
            assert not [n for n in names if n.split(".")[0] == "apache_beam"], name


def test_no_import_cycle():
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
