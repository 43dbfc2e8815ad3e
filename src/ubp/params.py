"""Read `params.yaml`; each stage reads only its own section."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from ubp.io import UbpError

PARAMS_FILE = Path("params.yaml")


def load_params(path: str | Path = PARAMS_FILE) -> dict:
    path = Path(path)
    if not path.exists():
        raise UbpError(f"{path}: file not found (run from the repository root)")
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise UbpError(f"{path}: expected a mapping at the top level")
    return params


def section(params: dict, *keys: str) -> dict:
    """params[k1][k2]..., with a clear error naming the missing key."""
    node = params
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            raise UbpError(f"params.yaml: missing section '{'.'.join(keys[: i + 1])}'")
        node = node[key]
    return node


def model_config(params: dict, name: str) -> dict:
    """A profile's settings: the shared section it `inherits` (e.g. `model:` for neural profiles,
    `embedding:` for the rest) overridden by its own `models.<name>` entry.

    dvc.yaml makes each `embed@<name>` depend on exactly these two sections, so changing
    `model.hidden` re-runs the neural profiles and nothing else.
    """
    models = section(params, "models")
    if name not in models:
        raise UbpError(f"params.yaml: no model '{name}' under 'models' (have: {', '.join(models)})")
    own = models[name] or {}
    for key in ("method", "inherits"):
        if key not in own:
            raise UbpError(f"params.yaml: models.{name} needs '{key}:' (see the README's 'Adding a profile')")
    shared = section(params, *str(own["inherits"]).split("."))
    if not isinstance(shared, dict):
        raise UbpError(f"params.yaml: models.{name}.inherits names '{own['inherits']}', which is not a section")
    cfg = copy.deepcopy(shared)
    cfg.update(own)
    return cfg
