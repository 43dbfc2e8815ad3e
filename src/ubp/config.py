"""Typed settings: one frozen dataclass per params.yaml section or method, the only place defaults live.

`build(Config, mapping, "models.dcn")` makes a Config from a params mapping before any work starts:
an unknown key is refused naming the key, its section and the close matches (so `-S model.hiden=512`
fails at once instead of re-running every neural profile with the default width), and a value of the
wrong type is refused naming the key, the expected type and the value. Ints are accepted for floats
(YAML writes `1` for 1.0); bools are never accepted for numbers; lists become tuples (frozen
dataclasses stay hashable and cannot be changed behind a method's back).
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from ubp.io import UbpError

C = TypeVar("C")

# Keys that place a profile in the graph (its method, the section it inherits, the data its stage
# depends on) rather than configure its method.
STRUCTURAL = ("method", "inherits", "reads")


def build(cls: type[C], values: Mapping | None, where: str, origin: Mapping[str, str] | None = None) -> C:
    """cls(**values), checked. `where` names the section in messages (e.g. "models.dcn"); `origin`
    maps a key to the section it really came from (a shared `model:` key seen through a profile)."""
    values = dict(values or {})
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key in STRUCTURAL:
            continue
        section = (origin or {}).get(key, where)
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UbpError(f"params.yaml: unknown key '{section}.{key}'{hint} "
                           f"(known for {where}: {', '.join(sorted(known))})")
        kwargs[key] = coerce(value, hints[key], f"{section}.{key}")
    missing = [n for n, f in known.items()
               if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UbpError(f"params.yaml: {where} needs {', '.join(repr(m) for m in missing)}")
    return cls(**kwargs)


def coerce(value: Any, kind: Any, key: str) -> Any:
    """value as `kind` (a type hint), or UbpError naming the key."""
    ok, out = _coerce(value, kind, key)
    if not ok:
        raise UbpError(f"params.yaml: {key} must be {describe(kind)}, got {value!r} ({type(value).__name__})")
    return out


def _coerce(value: Any, kind: Any, key: str) -> tuple[bool, Any]:
    if kind is Any:
        return True, value
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        for arm in args:
            ok, out = _coerce(value, arm, key)
            if ok:
                return True, out
        return False, None
    if kind is type(None):
        return value is None, None
    if origin is Literal:
        return value in args and type(value) in {type(a) for a in args}, value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, None
        arm = args[0] if args else Any
        items = [_coerce(v, arm, key) for v in value]
        return all(ok for ok, _ in items), tuple(out for _, out in items)
    if origin in (dict, Mapping) or kind is dict:
        if not isinstance(value, Mapping):
            return False, None
        key_kind, value_kind = args or (Any, Any)
        items = {k: (_coerce(k, key_kind, key), _coerce(v, value_kind, f"{key}.{k}")) for k, v in value.items()}
        if not all(a[0] and b[0] for a, b in items.values()):
            return False, None
        return True, types.MappingProxyType({a[1]: b[1] for a, b in items.values()})
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, Mapping):
            return False, None
        return True, build(kind, value, key)
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if kind is str:
        return isinstance(value, str), value
    return isinstance(value, kind), value


def describe(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if kind is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        return "a list of " + (plural(args[0]) if args else "values")
    if origin in (dict, Mapping) or kind is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, getattr(kind, "__name__", str(kind)))


def plural(kind: Any) -> str:
    """What a list of `kind` holds, in words: 'integers', 'strings', 'integers or nulls'."""
    if typing.get_origin(kind) in (Union, types.UnionType):
        return " or ".join(plural(a) for a in typing.get_args(kind))
    names = {bool: "true/false values", int: "integers", float: "numbers", str: "strings", type(None): "nulls"}
    return names.get(kind) or f"values each {describe(kind)}"


def as_dict(cfg: Any) -> dict:
    """A Config as plain data (tuples as lists, mappings as dicts): for meta.json and logs."""
    def plain(v):
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        if dataclasses.is_dataclass(v):
            return as_dict(v)
        return v
    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
