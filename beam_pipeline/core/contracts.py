"""Registries of plug-in modules checked against a typing.Protocol (adapters, framings)."""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Callable, Optional


def members(protocol: type) -> list[str]:
    """The names a module must define to satisfy `protocol`: its annotated attributes and methods."""
    names = set(getattr(protocol, "__annotations__", {}))
    names |= {name for name, value in vars(protocol).items()
              if callable(value) and not name.startswith("_")}
    return sorted(names)


def plugin_modules(package: ModuleType, protocol: type,
                   complete: Optional[Callable[[ModuleType], None]] = None) -> list[ModuleType]:
    """Every module of `package` but `base` and private ones, each checked against `protocol`
    (after `complete` has given it the defaults its registry supplies)."""
    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if complete is not None:
            complete(module)
        missing = [name for name in members(protocol) if not hasattr(module, name)]
        if missing or not isinstance(module, protocol):
            raise TypeError(f"{module.__name__} does not satisfy {protocol.__name__}: lacks {missing}")
        found.append(module)
    return found
