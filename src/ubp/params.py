"""Read `params.yaml`; each stage reads only its own section."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import yaml

from ubp import schema
from ubp.config import build
from ubp.io import UbpError

PARAMS_FILE = Path("params.yaml")
C = TypeVar("C")


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


def section_config(params: Mapping, cls: type[C], *keys: str) -> C:
    """The section params[k1][k2]... as the frozen dataclass `cls` (ubp.config.build: an unknown key or
    a wrong type is refused naming it); an absent or empty section gives cls's defaults."""
    node, where = params, ".".join(keys)
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    if node is not None and not isinstance(node, Mapping):
        raise UbpError(f"params.yaml: {where} must be a mapping, got {node!r}")
    return build(cls, node, where)


# Profiles live in two sections: `models` (computed from events: embed@ stages) and `combined` (built
# from other profiles by ubp.combine: combine@ stages, each depending on its own sources' embeddings
# through one marker stage per source, see dvc.yaml).
PROFILE_SECTIONS = {"models": schema.EMBEDDINGS_DIR, "combined": schema.COMBINED_DIR}


def profile_names(params: dict) -> list[str]:
    """Every profile, base ones first, in params.yaml's order."""
    return [name for sec in PROFILE_SECTIONS for name in (params.get(sec) or {})]


def profile_section(params: dict, name: str) -> str:
    for sec in PROFILE_SECTIONS:
        if name in (params.get(sec) or {}):
            return sec
    raise UbpError(f"params.yaml: no profile '{name}' under {' or '.join(PROFILE_SECTIONS)} "
                   f"(have: {', '.join(profile_names(params))})")


def profile_dir(params: dict, name: str) -> Path:
    """Where the profile's embedding lives: embeddings/<name> (base) or combined/<name>."""
    return PROFILE_SECTIONS[profile_section(params, name)] / name


def _entry(params: dict, name: str) -> tuple[str, dict]:
    """(section, own entry) of a profile, its structural keys checked."""
    sec = profile_section(params, name)
    own = params[sec][name] or {}
    if not isinstance(own, dict):
        raise UbpError(f"params.yaml: {sec}.{name} must be a mapping")
    for key in REQUIRED:
        if key not in own:
            raise UbpError(f"params.yaml: {sec}.{name} needs '{key}:' (see the README's 'Adding a profile')")
    return sec, own


REQUIRED = ("method", "inherits")
# A base profile's `reads:` names its embed stage's one data dependency (data/<reads>) beyond what every
# embed stage depends on: data/split (events before the cutoff, the cutoff) and data/canonical's relevant
# clients and product properties. DVC cannot put a list into a foreach stage's deps, hence one name
# (not required here: dvc.yaml's embed stage stops with "Could not find 'item.reads'" without it).
STAGE_DATA = ("features", "sequences", "targets", "synthetic")  # READS inputs that are a data/<name> stage


def stage_reads(method: str) -> str:
    """What `reads:` must be for a profile of `method`: the data directory its READS adds to the common ones."""
    from ubp.models import traits

    own = sorted(set(traits(method).reads) & set(STAGE_DATA))
    if len(own) > 1:
        raise UbpError(f"embedding method '{method}' reads {' and '.join(own)}: an embed stage depends on one "
                       f"data directory beyond data/split (declare READS in ubp.models.{method})")
    return own[0] if own else "split"


def check_reads(sec: str, name: str, own: dict) -> None:
    """A base profile's `reads:` (when given) is what its method's READS says."""
    if sec != "models" or "reads" not in own:
        return
    want = stage_reads(str(own["method"]))
    if own["reads"] != want:
        raise UbpError(f"params.yaml: models.{name}.reads is {own['reads']!r}, but method '{own['method']}' reads "
                       f"{want!r}: set `reads: {want}` (its embed stage then depends on data/{want})")


def check_section(sec: str, name: str, method: str) -> None:
    """A `combined:` profile has a method that builds it from other profiles, a `models:` one does not
    (each section has its own stage: embed@ or combine@, with the deps of its kind)."""
    from ubp.models import traits

    combined = traits(method).combined
    if combined != (sec == "combined"):
        kind, home = ("from other profiles", "combined") if combined else ("from events", "models")
        raise UbpError(f"params.yaml: {sec}.{name} has method '{method}', which builds a profile {kind}: "
                       f"put it under {home}:")


def profile_method(params: dict, name: str) -> str:
    return str(_entry(params, name)[1]["method"])


def model_config(params: dict, name: str):
    """A profile's typed settings: its method's `Config` built from the shared section it `inherits`
    (e.g. `model:` for neural profiles, `embedding:` for the rest) overridden by its own
    `models.<name>` (or `combined.<name>`) entry. An unknown key or a wrong type is an error naming
    where it was written (`model.hiden`, `models.dcn.dropuot`), before any work starts.

    dvc.yaml makes each profile's stage depend on exactly these two sections, so changing
    `model.hidden` re-runs the neural profiles and nothing else.
    """
    from ubp.models import config_class

    sec, own = _entry(params, name)
    check_reads(sec, name, own)
    inherits = str(own["inherits"])
    shared = section(params, *inherits.split("."))
    if not isinstance(shared, dict):
        raise UbpError(f"params.yaml: {sec}.{name}.inherits names '{inherits}', which is not a section")
    check_section(sec, name, str(own["method"]))
    origin = {key: inherits for key in shared if key not in own}
    return build(config_class(str(own["method"])), {**shared, **own}, f"{sec}.{name}", origin)


def profile_reads(params: dict, name: str) -> tuple[str, ...]:
    """The inputs (names of ubp.models.base.INPUTS) a profile's stage may open: its method's READS,
    and for a profile built from others (`sources`), what each source's method reads as well (a
    source is computed when no stored embedding fits)."""
    from ubp.models import traits

    reads = list(traits(profile_method(params, name)).reads)
    if "embeddings" in reads:
        for source in getattr(model_config(params, name), "sources", ()) or ():
            if source in (params.get("models") or {}):
                reads += [r for r in profile_reads(params, source) if r not in reads]
    return tuple(reads)
