"""The package's layers, read from its source: imports flow one way (no module imports one that
imports it back, also inside functions), only the ``tracking`` package imports mlflow, and only
``optuna_private`` reaches into Optuna's private code."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "hptune"


def modules() -> dict[str, ast.Module]:
    """Each module of the package by its dotted name, parsed."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def imported(name: str, tree: ast.Module) -> set[str]:
    """Every module that ``name``'s code imports, at the top or inside a function."""
    package = name if name == "hptune" or tree_is_package(name) else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:  # a submodule (from hptune import data), or a name in base
                submodule = f"{base}.{alias.name}"
                names.add(submodule if is_module(submodule) else base)
    return names


def tree_is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


def is_module(name: str) -> bool:
    """Whether ``name`` is one of hptune's modules (others' names are left as they are)."""
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").exists() or tree_is_package(name)


def import_graph() -> dict[str, set[str]]:
    """hptune's modules and the hptune modules each imports. A module's own packages are left
    out: a package's ``__init__`` is the facade that lazily imports its modules, which may take
    a helper from it (``hptune.report.render`` from ``hptune.report``)."""
    parsed = modules()
    return {
        name: {
            other
            for other in imported(name, tree)
            if other in parsed and other != name and not name.startswith(f"{other}.")
        }
        for name, tree in parsed.items()
    }


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """An import path from ``start`` back to itself, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for other in graph[node]:
            if other == start:
                return [*path, start]
            if other not in seen:
                seen.add(other)
                stack.append((other, [*path, other]))
    return None


def test_no_module_imports_one_that_imports_it_back() -> None:
    # e.g. hptune.study starts workers through hptune.workers, so hptune.workers must not
    # call back into hptune.study (the worker process's own module does).
    graph = import_graph()
    assert "hptune.workers" in graph["hptune.study"]  # (the graph sees lazy imports)
    cycles = {name: cycle_through(graph, name) for name in graph}
    assert {name: path for name, path in cycles.items() if path} == {}


def test_only_tracking_imports_mlflow() -> None:
    importers = {
        name
        for name, tree in modules().items()
        if any(m == "mlflow" or m.startswith("mlflow.") for m in imported(name, tree))
    }
    # The tracking package's modules are what imports mlflow (seen: the check reads them)...
    assert {"hptune.tracking._store", "hptune.tracking._writer"} <= importers
    # ...and no module outside it (hptune.tracking_server is outside: it asks over HTTP).
    outside = {
        n for n in importers if n != "hptune.tracking" and not n.startswith("hptune.tracking.")
    }
    assert outside == set()


# Optuna's private names hptune has used (beyond the modules named with an underscore).
PRIVATE_ATTRIBUTES = {"_storage", "_trial_id", "_study_id", "_backend", "_CachedStorage"}


def test_only_optuna_private_touches_optunas_private_code() -> None:
    users = set()
    for name, tree in modules().items():
        private_modules = {
            m for m in imported(name, tree) if m.startswith("optuna.") and "._" in f".{m}"
        }
        attributes = {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES
        }
        if private_modules or attributes:
            users.add(name)
    assert users == {"hptune.optuna_private"}
