"""Handcrafted behavioural features (SPEC §9.2): the `features` stage and the table its users share.

`build_features(...)` computes the table; `load_or_build(ctx, cfg)` returns it for an
EmbedContext, from `ctx.features_path` when the stage already wrote it (the `features`, rcae,
dcn and LightGBM-reference methods all start from it).
"""
from ubp.features.build import FEATURE_DOCS, build_features, feature_docs, write_catalogue
from ubp.features.table import load_features, load_or_build

__all__ = ["FEATURE_DOCS", "build_features", "feature_docs", "write_catalogue", "load_features", "load_or_build"]
