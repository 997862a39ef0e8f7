"""Imports point one way (docs/ARCHITECTURE.md): the training side ``tfscalpel`` never imports the
deployment side ``tflite_export``, the job package ``tfscalpel_jobs`` sits above both, and no two
modules of the project import each other, directly or through others. Every import is counted,
those inside functions included (AST walk, no code is run)."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Packages in layer order: a package may import only packages listed before it.
LAYERS = ("tfscalpel", "tflite_export", "tfscalpel_jobs")


def _modules():
    """``{module name: path}`` of every .py file in the project's packages."""
    found = {}
    for package in LAYERS:
        for directory, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(directory, name)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def _resolve(name, modules):
    """The project module an imported name lives in (its longest known prefix), or None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph():
    """``{module: {imported project module: first line}}``, from the AST of every module."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        edges = {}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # "from pkg import sub" imports the submodule when there is one.
                names = [f"{base}.{alias.name}" for alias in node.names] or [base]
            for name in names:
                target = _resolve(name, modules)
                if target is not None and target != module:
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def _layer(module):
    return LAYERS.index(module.split(".")[0])


def _cycle(graph):
    """One import cycle as a list of modules, or None (iterative depth-first search)."""
    state = {}
    for start in sorted(graph):
        if start in state:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path, state[start] = [start], "open"
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = "done"
                stack.pop()
                path.pop()
                continue
            if state.get(child) == "open":
                return path[path.index(child):] + [child]
            if child not in state:
                state[child] = "open"
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


#: The one known cycle, (importer, imported) of the edge left out of the search:



def test_graph_sees_function_level_imports():
    graph = import_graph()
    assert "tfscalpel.patterns" in graph["tfscalpel.prune_model"]  # module level
    # tfscalpel.nm imports prune_model inside prune_2_4: function-level imports count.
    assert "tfscalpel.prune_model" in graph["tfscalpel.nm"]


def test_no_package_imports_a_later_layer():
    graph = import_graph()
    wrong = sorted(f"{src} -> {dst} (line {line})" for src, edges in graph.items()
                   for dst, line in edges.items() if _layer(dst) > _layer(src))
    assert not wrong, "imports against the layer order " + " < ".join(LAYERS) + ":\n" + "\n".join(wrong)


def test_no_import_cycle_between_modules():
    graph = import_graph()
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1}}) is None


@pytest.mark.parametrize("package", LAYERS)
def test_every_layer_exists(package):
    assert os.path.isdir(os.path.join(ROOT, package))
