"""Embedding methods: one module per method, each with `embed(ctx, cfg) -> np.ndarray`.

A profile in params.yaml (`models.<name>`) names its method with `method:` (default: the
profile's own name), so one method can back several profiles (e.g. two variants).
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from ubp.io import UbpError


def available_methods() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_") and m.name != "base")


def get_method(method: str) -> ModuleType:
    if method not in available_methods():
        raise UbpError(f"params.yaml: unknown embedding method '{method}' (have: {', '.join(available_methods())})")
    return importlib.import_module(f"{__name__}.{method}")
