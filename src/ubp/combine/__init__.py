"""Profiles built from other profiles: the `combine@<profile>` stages and the choice of their sources.

    python -m ubp combine <profile>                  # writes combined/<profile>/ (params.yaml `combined:`)
    python -m ubp combine <profile> --source <name>  # the marker of one source (see `stage`)
    python -m ubp select                             # which sources the ensemble should combine

Methods (named by `method:` in a `combined:` entry, registered with the base methods in
`ubp.models`): `ensemble` (sources normalised one by one and concatenated, `ensemble.py`) and
`stacked` (a multi-task network over the sources, `stacked.py`). Their shared parts: where a
source's rows come from (`sources.py`: stored in embeddings/<source>/, or computed) and how one
source becomes its columns (`blocks.py`). `selection.py` chooses the ensemble's sources on the train
window's open tasks only. Settings: each a frozen dataclass `Config` built by `ubp.config.build`.
"""
from __future__ import annotations

# The modules of this package that are embedding methods (the others are their parts).
METHODS = ("ensemble", "stacked")
