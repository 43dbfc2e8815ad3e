"""How the ensemble's per-source normalisation and weights score, on the train window's inner split only.

    python benchmarks/ensemble_norms.py [--repeats 3] [--threads 2] [--out reports/bench/ensemble_norms]
    python benchmarks/ensemble_norms.py --configs benchmarks/ensemble_affinity.yaml --out reports/bench/ensemble_affinity

Each configuration is an `ensemble:` section whose `sources` map each name to its settings (norm,
weight, pca, center; params.yaml's `per_source`), and `balance`. Its matrix is built from the stored
profiles exactly as the ensemble stage builds it (`ubp.combine.selection.source_blocks`, i.e.
`ubp.combine.blocks.block`) and scored by `ubp.combine.selection.InnerScorer`: the downstream protocol trained
on half the clients' train-window labels and scored on the other half's, averaged over the folds and
`repeats` re-drawn splits, on the three open tasks (churn, category, SKU propensity) only, with labels
built from the train window alone (`ubp.inner_labels`). Neither the validation window nor the hidden
tasks are read, so choosing the default from this table does not peek at what the leaderboard
measures. The first row is
the `features` profile itself, unchanged (not centred, not rescaled), for reference. With
`--sample-clients N` (default: params.yaml's `selection.sample_clients`) every row is scored on the
same seeded sample of N clients, and only their rows of each profile are read.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from ubp import schema
from ubp.combine import ensemble
from ubp.combine.selection import TASKS, inner_scorer, source_blocks
from ubp.combine.sources import stored
from ubp.config import build
from ubp.io import save_json, save_text
from ubp.params import load_params

log = logging.getLogger("benchmarks.ensemble_norms")

NEURAL = {"contrastive": {"weight": 0.5}, "gru_ae_day": {"weight": 0.5}}
CONFIGS = {
    "features, quantile (standardised)": {"sources": {"features": {}}},
    "features, as published (norm none)": {"sources": {"features": {"norm": "none"}}},
    "features quantile + contrastive .5 + gru_ae_day .5": {"sources": {"features": {}, **NEURAL}},
    "features none + contrastive .5 + gru_ae_day .5": {"sources": {"features": {"norm": "none"}, **NEURAL}},
    "features none + contrastive .25 + gru_ae_day .25": {
        "sources": {"features": {"norm": "none"}, "contrastive": {"weight": 0.25}, "gru_ae_day": {"weight": 0.25}}},
    "features none + contrastive .25": {"sources": {"features": {"norm": "none"}, "contrastive": {"weight": 0.25}}},
    "features none + dcn .5": {"sources": {"features": {"norm": "none"}, "dcn": {"weight": 0.5}}},
}
REFERENCE = "features profile, unchanged"
BALANCE = "source"  # every configuration's blocks get the same total variance (ensemble.balance)


def extra_profiles(params: dict, profiles: dict, workdir: Path) -> tuple[dict, Path]:
    """Variants of base profiles that params.yaml does not define (`profiles:` of a --configs file).

    Each is embedded with `ubp.embed.run` into `workdir`, beside links to every stored profile, so the
    configurations can name it like any other source. Returns the params with the variants added to
    `models` and the embeddings directory to read."""
    from ubp.embed import run as embed_run

    if not profiles:
        return params, schema.EMBEDDINGS_DIR
    clash = sorted(set(profiles) & set(params.get("models") or {}))
    if clash:
        raise SystemExit(f"--configs: profiles {clash} already exist in params.yaml's models")
    params = {**params, "models": {**(params.get("models") or {}), **profiles}}
    workdir.mkdir(parents=True, exist_ok=True)
    for source in schema.EMBEDDINGS_DIR.iterdir():
        if source.is_dir() and not (workdir / source.name).exists():
            (workdir / source.name).symlink_to(source.resolve())
    for name in profiles:
        embed_run(name, params, out_dir=workdir / name)
    return params, workdir


def typed(base: dict, cfg: dict) -> ensemble.Config:
    """params.yaml's ensemble section with a configuration's sources (a mapping name -> settings) and
    balance: its sources in order, each with exactly the configuration's settings."""
    section = {**base, **cfg, "sources": list(cfg["sources"]),
               "per_source": {name: opts or {} for name, opts in cfg["sources"].items()}}
    return build(ensemble.Config, section, "ensemble")


def score_configs(params: dict, repeats: int, threads: int | None, configs: dict | None = None,
                  embeddings_dir: Path = schema.EMBEDDINGS_DIR, previous: dict | None = None,
                  sample_clients: int | None = None) -> dict:
    """Inner scores of the features profile unchanged and of each configuration (CONFIGS by default).

    A configuration from a `--configs` file is a whole `ensemble:` section: its own `balance` (default
    BALANCE) and sources. `previous` (an earlier result of this function) supplies the rows whose name
    and configuration it already holds, scored with the same repeats and protocol: only new or
    changed rows are scored (valid while the stored profiles are the same). `sample_clients`: score
    on that many clients drawn with seed 0 (`ubp.combine.selection.sample_labels`), the same for every row."""
    scorer = inner_scorer(params, threads, folds=2, seed=0, repeats=repeats, sample_clients=sample_clients)
    config = scorer.config
    if previous and (previous.get("repeats") != repeats or previous.get("eval") != dataclasses.asdict(config)
                     or previous.get("sample_clients") != sample_clients or previous.get("tasks") != list(TASKS)):
        previous = None
    base = {**(params.get("ensemble") or {})}
    rows = {}
    x, rows_of, present = stored(Path(embeddings_dir) / "features", scorer.client_ids)
    if not present.all():
        raise SystemExit("features profile lacks relevant clients")
    todo = {REFERENCE: np.asarray(x[rows_of], dtype=np.float32), **(CONFIGS if configs is None else configs)}
    for name, cfg in todo.items():
        started = time.perf_counter()
        if isinstance(cfg, dict):
            # balance pinned to what the report's runs used, not whatever params.yaml's default is now
            cfg = {"balance": BALANCE, **cfg}
            ens = typed(base, cfg)
            if previous and previous["rows"].get(name, {}).get("config") == cfg:
                rows[name] = previous["rows"][name]
                log.info("%-55s sum %.4f (from the earlier run)", name, rows[name]["sum"])
                continue
            blocks = source_blocks(list(cfg["sources"]), params, scorer.client_ids, embeddings_dir, ens)
            matrix = np.concatenate([blocks[n] for n in cfg["sources"]], axis=1)
        else:
            if previous and REFERENCE in previous["rows"]:
                rows[name] = previous["rows"][REFERENCE]
                continue
            matrix = cfg
        tasks = scorer.score(matrix)
        rows[name] = {"config": cfg if isinstance(cfg, dict) else None, "dim": int(matrix.shape[1]), "tasks": tasks,
                      "sum": round(sum(tasks.values()), 4), "seconds": round(time.perf_counter() - started, 1)}
        log.info("%-55s sum %.4f (%.0f s)", name, rows[name]["sum"], rows[name]["seconds"])
    return {"repeats": repeats, "folds": 2, "eval": dataclasses.asdict(config), "sample_clients": sample_clients,
            "tasks": list(TASKS), "rows": rows}


def markdown(result: dict) -> str:
    tasks = result.get("tasks", schema.TASKS)  # a result made before the hidden tasks stopped choosing: all six
    short = [t.replace("propensity_", "") for t in tasks]
    ref, before = result["rows"][REFERENCE], result.get("before")
    title = result.get("title", "Ensemble normalisation on the inner split")
    lines = [f"# {title}", "",
             f"Inner split of the train window ({result['folds']} folds x {result['repeats']} re-drawn splits; "
             + (f"a sample of {result['sample_clients']} clients, seed 0; " if result.get("sample_clients") else "")
             + "the validation window is never read), scored on "
             + ("the open tasks only (the hidden ones only measure); sum = their sum. "
                if len(tasks) < len(schema.TASKS) else "all six tasks. ")
             + "Cells: mean inner score; last column: the sum's "
             "difference from the first row. The first row is the `features` profile unchanged, i.e. "
             "`features: {norm: none, center: false}` alone with `balance: none`, up to float16. "
             f"Made by `python benchmarks/ensemble_norms.py{result.get('args', '')}`.", "",
             "| configuration | balance | dim | " + " | ".join(short) + " | sum | vs first |"
             + (" earlier sum | earlier, these tasks |" if before else ""),
             "|---|---|---:|" + "---:|" * (len(short) + 2 + (2 if before else 0))]
    for name, row in result["rows"].items():
        balance = (row["config"] or {}).get("balance", BALANCE) if row["config"] else "—"
        old = before["rows"].get(name) if before else None
        extra = "" if not before else " — | — |" if old is None else (
            f" {sum(old.values()):.4f} | {sum(old[t] for t in tasks):.4f} |")
        lines.append(f"| {name} | {balance} | {row['dim']} | "
                     + " | ".join(f"{row['tasks'][t]:.4f}" for t in tasks)
                     + f" | {row['sum']:.4f} | {row['sum'] - ref['sum']:+.4f} |" + extra)
    if before:
        scored = ", ".join(t.replace("propensity_", "") for t in before["tasks"])
        lines += ["", f"Earlier: `{before['file']}`, which scored {scored}; its sum, and its scores of this run's "
                  "tasks summed (equal to this run's sum when the data, profiles and protocol are the same)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=schema.BENCH_DIR / "ensemble_norms")
    parser.add_argument("--configs", type=Path, default=None,
                        help="YAML file: {configuration name: ensemble section} (default: the built-in CONFIGS); "
                             "an optional `profiles:` entry defines variants of base profiles ({name: models entry})")
    parser.add_argument("--title", default=None, help="the report's heading")
    parser.add_argument("--sample-clients", type=int, default=None,
                        help="score on a seeded sample of this many clients (default: selection.sample_clients)")
    parser.add_argument("--no-run", action="store_true", help="only re-render the report from its .json")
    parser.add_argument("--before", type=Path, default=None,
                        help="an earlier result's .json (e.g. from git history): its sums beside this run's")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the rows of the existing .json whose configuration is unchanged")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    old = json.loads(args.before.read_text()) if args.before else None  # read first: a wrong path fails at once
    if args.no_run:
        result = json.loads(args.out.with_suffix(".json").read_text())
    else:
        configs = yaml.safe_load(args.configs.read_text()) if args.configs else None
        params, embeddings_dir = load_params(), schema.EMBEDDINGS_DIR
        with tempfile.TemporaryDirectory() as tmp:
            if configs and "profiles" in configs:
                params, embeddings_dir = extra_profiles(params, configs.pop("profiles"), Path(tmp))
            earlier = args.out.with_suffix(".json")
            previous = json.loads(earlier.read_text()) if args.resume and earlier.exists() else None
            sample = args.sample_clients or (params.get("selection") or {}).get("sample_clients")
            result = score_configs(params, args.repeats, args.threads, configs, embeddings_dir, previous, sample)
        if args.configs:
            result["args"] = f" --configs {args.configs} --repeats {args.repeats} --out {args.out}"
        if args.title:
            result["title"] = args.title
            result["args"] = result.get("args", "") + f' --title "{args.title}"'
        if args.sample_clients:
            result["args"] = result.get("args", "") + f" --sample-clients {args.sample_clients}"
        if old is not None:
            result["before"] = {"file": str(args.before), "tasks": old.get("tasks", list(schema.TASKS)),
                                "rows": {name: row["tasks"] for name, row in old["rows"].items()}}
            result["args"] = result.get("args", "") + f" --before {args.before}"
    save_json(args.out.with_suffix(".json"), result)
    save_text(args.out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
