"""The package's plan holds: layers import only downstream, no cycles, the
CLI alone knows Click, one module names the run directory's files.

Read from the source with `ast`, so these checks import nothing.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).parents[1] / "kerastl"

# The data flow, left to right: a module imports only from its own layer or
# a layer to its left. `kerastl/__init__.py` names its lazy attributes by
# string and imports only `utils`.
LAYERS = (
    ("kerastl", "kerastl._moved", "kerastl.errors", "kerastl.utils"),
    ("kerastl.data",),
    ("kerastl.models",),
    ("kerastl.train",),
    ("kerastl.evaluate",),
    ("kerastl.deploy",),
    ("kerastl.runs",),
    ("kerastl.cli", "kerastl.bench"),
)
# The run directory's file names, spelt out by `kerastl.runs.rundir` only.
RUN_FILES = (
    '"model.keras"',
    '"metrics.json"',
    '"recipe.json"',
    '"history.csv"',
    '"report.md"',
    '"run.json"',
    '"skipped_files.txt"',
)


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path):
    """The kerastl modules and other top-level packages `path` imports,
    at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # `from kerastl.train import stages` imports a module.
            found.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if f"{node.module}.{alias.name}" in MODULES
            )
    return found


def layer(name):
    matches = [
        (len(prefix), rank)
        for rank, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if name == prefix or name.startswith(prefix + ".")
    ]
    return max(matches)[1]


def test_layers_import_only_downstream():
    upstream = [
        f"{name} ({LAYERS[layer(name)][0]}) imports {other}"
        for name, path in MODULES.items()
        for other in imports(path)
        if other in MODULES and layer(other) > layer(name)
    ]
    assert upstream == []


def test_no_import_cycles():
    graph = {
        name: {other for other in imports(path) if other in MODULES}
        for name, path in MODULES.items()
    }
    # A package's `__init__` runs before its modules; an edge to a parent
    # package is not a cycle through the child.
    for name, targets in graph.items():
        targets.discard(name)
        targets -= {p for p in targets if name.startswith(p + ".")}
    state = {}

    def visit(name, trail):
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                return trail + [name, other]
            if other not in state:
                cycle = visit(other, trail + [name])
                if cycle:
                    return cycle
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            assert visit(name, []) is None


def test_only_the_cli_imports_click():
    importers = sorted(
        name
        for name, path in MODULES.items()
        if any(m == "click" or m.startswith("click.") for m in imports(path))
    )
    assert importers and all(
        name == "kerastl.cli" or name.startswith("kerastl.cli.")
        for name in importers
    ), importers


@pytest.mark.parametrize("file_name", RUN_FILES)
def test_one_module_names_the_run_files(file_name):
    spelling = [
        name
        for name, path in MODULES.items()
        if file_name in path.read_text() and name != "kerastl.runs.rundir"
    ]
    assert spelling == []
