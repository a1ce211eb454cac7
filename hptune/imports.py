"""User code named by import path: ``"module:callable"``, as entry points and uvicorn name it.

A study file names a model factory (``model.factory``) or a data loader (``data.loader``) this
way, so the same string works in ``--workers`` processes and on other machines: nothing is
pickled by value. The module is looked up first in the study file's folder, then on
``sys.path`` (installed packages, ``PYTHONPATH``). From Python, a callable may be given instead
of a string; it then works in this process only.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hptune.errors import ConfigError

UserCallable = str | Callable[..., Any]


def spec_text(spec: UserCallable) -> str:
    """The import path of ``spec``: the string itself, or ``module:qualname`` of a callable."""
    if isinstance(spec, str):
        return spec
    module = getattr(spec, "__module__", None) or "?"
    return f"{module}:{getattr(spec, '__qualname__', type(spec).__name__)}"


def resolve(spec: UserCallable, folder: Path | None, where: str) -> Callable[..., Any]:
    """The callable that ``spec`` names, imported if it is a ``module:callable`` string.

    Args:
        spec: ``"package.module:name"`` (``name`` may be dotted: ``"mod:Class.build"``) or a
            callable.
        folder: looked in before ``sys.path`` (the study file's folder), or None.
        where: ``"<file>: <key>"`` for error messages.

    Raises:
        ConfigError: malformed string, module not found, attribute missing, not callable.
    """
    if not isinstance(spec, str):
        if not callable(spec):
            raise ConfigError(f"{where}: expected 'module:callable' or a callable, got {spec!r}")
        return spec
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"{where}: expected 'module:callable', e.g. 'mymodels:build': {spec!r}")
    module = _import(module_name, folder, where)
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"{where}: module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
                f"attribute {attribute!r}"
            ) from None
    if not callable(target):
        raise ConfigError(
            f"{where}: {spec!r} is not callable (found {type(target).__name__} {target!r})"
        )
    return target


def _import(module_name: str, folder: Path | None, where: str) -> Any:
    """Import ``module_name`` with ``folder`` first on the path for the import (only)."""
    added = folder is not None and str(folder.resolve()) not in sys.path
    if added:
        sys.path.insert(0, str(folder.resolve()))  # type: ignore[union-attr]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or module_name
        if module_name != missing and not module_name.startswith(missing + "."):
            raise ConfigError(f"{where}: importing {module_name!r} failed: {error}") from None
        looked = f"{folder.resolve()} and sys.path" if folder is not None else "sys.path"
        raise ConfigError(
            f"{where}: module {module_name!r} not found (looked in {looked})"
        ) from None
    finally:
        if added:
            sys.path.remove(str(folder.resolve()))  # type: ignore[union-attr]


def accepted_names(function: Callable[..., Any]) -> tuple[set[str], bool]:
    """The keyword names ``function`` takes, and whether it also takes ``**kwargs``."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: assume it takes anything
        return set(), True
    names = {
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def signature_text(function: Callable[..., Any]) -> str:
    """``name(a, b=1, **kwargs)`` for messages and ``hptune validate``."""
    try:
        return f"{getattr(function, '__name__', 'callable')}{inspect.signature(function)}"
    except (TypeError, ValueError):
        return f"{getattr(function, '__name__', 'callable')}(...)"
