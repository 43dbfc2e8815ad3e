"""Embedding methods: one module per method, each with `embed(ctx, cfg) -> np.ndarray` and its `Config`.

A profile in params.yaml (`models.<name>`) names its method with `method:`, so one method can back
several profiles (e.g. two variants). What a method is (tabular? as of a date? what it reads) is
declared on its module and read here (`traits`), never listed elsewhere: see `ubp.models.base`.
The methods that build a profile from other profiles (`combined:`) live in `ubp.combine`
(`ubp.combine.METHODS`); this registry serves both.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from types import ModuleType

from ubp import combine
from ubp.io import UbpError
from ubp.models import base


def available_methods() -> list[str]:
    own = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_") and m.name != "base"]
    return sorted(own + list(combine.METHODS))


def package_of(method: str) -> str:
    return combine.__name__ if method in combine.METHODS else __name__


def get_method(method: str) -> ModuleType:
    if method not in available_methods():
        raise UbpError(f"params.yaml: unknown embedding method '{method}' (have: {', '.join(available_methods())})")
    return importlib.import_module(f"{package_of(method)}.{method}")


def config_class(method: str) -> type:
    """The method's settings dataclass (`<module>.Config`)."""
    cls = getattr(get_method(method), "Config", None)
    if not dataclasses.is_dataclass(cls):
        raise UbpError(f"embedding method '{method}' declares no Config dataclass (see ubp.models.base)")
    return cls


def method_of(cfg) -> str:
    """The method a Config belongs to: the module that declares its class."""
    package, _, method = type(cfg).__module__.rpartition(".")
    if method not in available_methods() or package != package_of(method):
        raise UbpError(f"{type(cfg).__qualname__} is not the Config of an embedding method")
    return method


@dataclasses.dataclass(frozen=True)
class Traits:
    reads: tuple[str, ...]  # names of base.INPUTS
    tabular: bool
    as_of: bool

    @property
    def combined(self) -> bool:
        """Built from other profiles (a `combined:` profile, never an ensemble source)."""
        return "embeddings" in self.reads


def traits(method: str) -> Traits:
    """The method module's READS / TABULAR / AS_OF, or base's defaults for those it leaves out."""
    module = get_method(method)
    reads = tuple(getattr(module, "READS", base.READS))
    unknown = [r for r in reads if r not in base.INPUTS]
    if unknown:
        raise UbpError(f"ubp.models.{method}.READS: unknown inputs {unknown} (have: {', '.join(base.INPUTS)})")
    return Traits(reads, bool(getattr(module, "TABULAR", base.TABULAR)), bool(getattr(module, "AS_OF", base.AS_OF)))
