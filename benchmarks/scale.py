"""Every stage of the graph at a fraction of the real data's size: wall time, peak RSS, disk written.

    python benchmarks/scale.py run --scale 0.01 [--workdir DIR] [--set key=value ...] [targets ...]
    python benchmarks/scale.py report

`run` keeps one checkout per scale (default /work/scale/<scale>, a clone of this commit), sets
`data.synthetic.scale` and the --set params in its params.yaml, runs `dvc repro [targets]` there and
merges the figures of every stage that ran into reports/bench/scale.json, each with the commit it ran at
(so a real-scale run can be split over sessions: one target at a time, figures appended, the checkout
pinned with --at to the commit the run began at).
The real-size run as it is being made (README "Your own data"'s params; DuckDB spills to a temp
directory, which must exist), one target at a time, each appended to the JSON:

    python benchmarks/scale.py run --scale 1.0 --at a5f3c57 --cache-type symlink \
        --set features.memory_limit=6GB --set features.temp_directory=/work/scale/tmp \
        --set sequences.memory_limit=6GB --set sequences.temp_directory=/work/scale/tmp \
        --set sequences.chunk_clients=50000 --set model.fit_clients=100000 \
        --set selection.sample_clients=50000 evaluate@gru_ae_day

`report` writes reports/bench/scale.md and scale.png from that JSON: one row per stage, one column per
scale, and the slope of cost against events on a log-log fit (1.0 = linear).
Peak RSS is the summed RSS of the stage's whole process tree (sampled every 0.2 s); disk written
is the growth of the checkout (outputs plus their copies in the DVC cache) during the stage.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cross_cpu import cpu_model  # noqa: E402
from repro_costs import STAGE_LINE, Sampler  # noqa: E402
from runs import set_dotted  # noqa: E402

from ubp.io import save_json, save_text  # noqa: E402

REPORT = Path("reports/bench/scale.json")
ROOT = Path("/work/scale")
CORES = os.cpu_count() or 1
REAL_EVENTS = 169_000_000  # SPEC §2: the scale 1.0 the generator's preset aims at


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        if "/.git" in dirpath:
            continue
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass
    return total


def parse_value(text: str):
    return yaml.safe_load(text)


def prepare(workdir: Path, scale: float, overrides: list[str], at: str = "HEAD", cache_type: str | None = None) -> str:
    """A checkout of commit `at` at `workdir` with the scale's params; returns its commit."""
    here = git("rev-parse", at)
    if not (workdir / ".git").is_dir():
        workdir.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", str(Path.cwd()), str(workdir)], check=True)
        subprocess.run(["git", "checkout", "-q", "--detach", here], cwd=workdir, check=True)
    else:  # move the checkout to this commit, keeping its data and DVC cache
        subprocess.run(["git", "checkout", "-q", "--", "params.yaml"], cwd=workdir, check=True)
        # HEAD and every branch: `at` may be a commit off main (e.g. the run's commit with a fix picked)
        subprocess.run(["git", "fetch", "-q", str(Path.cwd()), "HEAD", "+refs/heads/*:refs/remotes/here/*"],
                       cwd=workdir, check=True)
        subprocess.run(["git", "checkout", "-q", "--detach", here], cwd=workdir, check=True)
    params_path = workdir / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    # The preset alone decides the sizes: the default's own keys (n_relevant, ...) would override it.
    params["data"]["synthetic"] = {"seed": (params["data"].get("synthetic") or {}).get("seed", 2025), "scale": scale}
    for item in overrides:
        key, _, value = item.partition("=")
        set_dotted(params, key, parse_value(value))
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    if cache_type:  # untracked .dvc/config.local: the checkout's tracked files stay the commit's
        subprocess.run(["dvc", "config", "--local", "cache.type", cache_type], cwd=workdir, check=True)
    return git("rev-parse", "--short", "HEAD", cwd=workdir)


def data_size(workdir: Path) -> dict:
    """Events in the raw files and relevant clients (parquet metadata only: cheap at any size); the raw
    files are the checkout's `data.raw_dir` (the generator's output, or a user's directory)."""
    import pyarrow.parquet as pq

    raw = workdir / yaml.safe_load((workdir / "params.yaml").read_text())["data"]["raw_dir"]
    events = sum(pq.ParquetFile(raw / f"{name}.parquet").metadata.num_rows
                 for name in ("product_buy", "add_to_cart", "remove_from_cart", "page_visit", "search_query")
                 if (raw / f"{name}.parquet").exists())
    relevant = raw / "input" / "relevant_clients.npy"
    clients = int(np.load(relevant, mmap_mode="r").shape[0]) if relevant.exists() else 0
    return {"events": int(events), "clients": clients}


def run(args) -> None:
    workdir = args.workdir or ROOT / str(args.scale)
    commit = prepare(workdir, args.scale, args.set, args.at, args.cache_type)
    command = ["dvc", "repro", *args.targets]
    log_path = workdir / "scale_run.log"
    # The checkout's own code, whichever checkout `pip install -e` last pointed ubp at.
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(workdir / "src")}
    print(f"scale {args.scale}: {' '.join(command)} in {workdir} (commit {commit}); log {log_path}", flush=True)
    start = time.time()
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    sampler = Sampler(proc.pid)
    sampler.start()
    marks: list[tuple[str, float, int]] = []
    with log_path.open("a", buffering=1) as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)} at {commit}\n")
        for line in proc.stdout:
            log.write(f"{time.time() - start:9.1f} {line}")
            found = STAGE_LINE.search(line)
            if found:
                marks.append((found.group(1), time.time(), tree_bytes(workdir)))
                sampler.stage = found.group(1)
                print(f"{time.time() - start:9.1f} s  {found.group(1)}", flush=True)
    code = proc.wait()
    end, end_bytes = time.time(), tree_bytes(workdir)
    sampler.done.set()
    stages, here, failed = {}, machine(), {}
    for i, (name, began, bytes_before) in enumerate(marks):
        finished, bytes_after = (marks[i + 1][1], marks[i + 1][2]) if i + 1 < len(marks) else (end, end_bytes)
        st = {"seconds": round(finished - began, 1), "peak_rss_mb": round(sampler.peaks.get(name, 0.0)),
              "commit": commit, "machine": here, "params": args.set}
        if i + 1 == len(marks) and code != 0:  # the failing stage: not a measurement, but kept as a failure
            failed = {name: {**st, "exit": code, "log": stage_failure(log_path)}}
            break
        stages[name] = {**st, "disk_mb": round((bytes_after - bytes_before) / 2**20, 1), "load": sampler.load(name)}
    record(args.report, args.scale, data_size(workdir), stages, scores(workdir, commit, stages), failed)
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed ({code}) in {workdir}; see {log_path}")


def scored_profile(stage: str) -> str | None:
    """The profile whose metrics/<profile>.json a stage writes: evaluate@p and evaluate_combined@p -> p,
    reference -> lightgbm; None for the other stages."""
    kind, _, profile = stage.partition("@")
    return "lightgbm" if kind == "reference" else profile if kind in ("evaluate", "evaluate_combined") else None


def network(name: str, st: dict) -> str | None:
    """The downstream network size (params eval.profile) an evaluation stage ran with; None for the
    other stages (the reference has no network)."""
    if name == "reference" or scored_profile(name) is None:
        return None
    sets = [item.partition("=") for item in st.get("params", [])]
    return next((value for key, _, value in sets if key == "eval.profile"), "default")


def scores(workdir: Path, commit: str, stages: dict) -> dict:
    """Six-task scores of the profiles this run evaluated (metrics/<profile>.json), with the commit. Only
    those: the checkout's other metrics files may be another run's (a fresh clone's are the default
    data's, from git)."""
    out = {}
    for profile in filter(None, map(scored_profile, stages)):
        path = workdir / "metrics" / f"{profile}.json"
        if path.exists():
            metrics = json.loads(path.read_text())
            if "sum" in metrics:
                out[profile] = {"sum": metrics["sum"], "tasks": {t: v["score"] for t, v in metrics["tasks"].items()},
                                "commit": commit}
    return out


def name_machines(data: dict) -> None:
    """Figures recorded before each stage named its machine ran on the one the JSON named."""
    for entry in data.get("scales", {}).values():
        for st in entry["stages"].values():
            st.setdefault("machine", data["machine"])


def loaded(st: dict) -> bool:
    """Other work shared the cores while the stage ran: its wall time is an upper bound."""
    return st.get("load", 0) > CORES + 0.5


def stage_failure(log_path: Path) -> str:
    """The last `ERROR:` line dvc wrote to the run's log (e.g. '... exited with -9': killed, as the
    kernel's OOM killer does)."""
    errors = [line.split("ERROR:", 1)[1].strip() for line in log_path.read_text().splitlines() if "ERROR:" in line]
    return errors[-1] if errors else ""


def record(path: Path, scale: float, size: dict, stages: dict, scored: dict, failed: dict | None = None) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    name_machines(data)
    here = machine()
    data["commit"] = git("rev-parse", "--short", "HEAD")
    data["machine"] = here
    entry = data.setdefault("scales", {}).setdefault(str(scale), {"stages": {}})
    entry.update(size)
    for name, st in stages.items():  # a stage measured on another machine first keeps that figure in the
        old = entry["stages"].get(name)  # tables; this machine's goes beside it (sums stay per machine)
        if old is not None and old["machine"] != here:
            entry.setdefault("other_machines", {}).setdefault(here, {})[name] = st
        else:
            entry["stages"][name] = st
    entry.setdefault("scores", {}).update(scored)
    for name, st in (failed or {}).items():  # every failed attempt, kept: a stage killed for memory misses part 7
        entry.setdefault("failures", {}).setdefault(name, []).append(st)
    save_json(path, data)
    print(f"{len(stages)} stage(s) recorded in {path}")


def machine() -> str:
    model = cpu_model()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GB RAM, {platform.system()}"


STAGE_ORDER = ["generate", "ingest", "split", "targets", "features", "sequences", "embed@", "ensemble_sources@",
               "stacked_sources@", "combine@", "evaluate@", "evaluate_combined@", "reference", "report"]
DATA_STAGES = ("ingest", "split", "targets", "features", "sequences")  # part 7's first target, with the tabular embeds
DATA_TARGET_S, GRAPH_TARGET_S, MEMORY_TARGET_MB = 45 * 60, 8 * 3600, 16 * 1024
SYNTHETIC_ONLY = ("generate", "embed@oracle", "evaluate@oracle")  # not run on a user's own data
# The evaluations of the real-size profiles with another evaluator, made by benchmarks/eval_calibration.py
# on the same checkouts' embeddings (its rows "<size>|<seed>|<profile>" carry the evaluation's seconds):
# the compact network on all clients, on a seeded sample of 200,000 (eval.sample_clients), and on all
# clients for one epoch (eval.epochs).
OTHER_EVALUATORS = {"1.0": tuple((size, Path("reports/bench/eval_compact_1m.json"))
                                 for size in ("compact", "compact@200000", "compact:e1"))}


def evaluator_name(size: str) -> str:
    """`compact@200000` or `compact:e1` (benchmarks/eval_calibration.py's names) -> the params that make
    that evaluator, as the report names it."""
    from eval_calibration import parse_size  # benchmarks/ is this script's directory

    network, sample, epochs = parse_size(size)
    return (f"`eval.profile: {network}`" + (f", `eval.sample_clients: {sample:,}`" if sample else "")
            + (f", `eval.epochs: {epochs}`" if epochs else ""))


def stage_rank(name: str) -> tuple[int, str]:
    for i, prefix in enumerate(STAGE_ORDER):
        if name == prefix or (prefix.endswith("@") and name.startswith(prefix)):
            return i, name
    return len(STAGE_ORDER), name


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(cost) against log(events); None with fewer than two scales."""
    points = [(e, c) for e, c in points if e > 0 and c > 0]
    if len(points) < 2:
        return None
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def report(args) -> None:
    data = json.loads(args.report.read_text())
    scales = sorted(data["scales"], key=float)
    names = sorted({n for s in scales for n in data["scales"][s]["stages"]}, key=stage_rank)
    name_machines(data)
    counts = {}
    for s in scales:
        for st in data["scales"][s]["stages"].values():
            counts[st["machine"]] = counts.get(st["machine"], 0) + 1
    main_machine = max(counts, key=counts.get)  # figures from any other machine are marked
    machines = f"{main_machine}" + "".join(f"; {m} for {n} figure(s), marked †" for m, n in counts.items()
                                           if m != main_machine)
    head = " | ".join(f"{float(s):g}" for s in scales)
    sizes = " | ".join(f"{data['scales'][s]['events']:,} events, {data['scales'][s]['clients']:,} relevant" for s in scales)
    lines = [
        "# Every stage at 1%, 10% and 100% of the real data's size",
        "",
        f"Made by `python benchmarks/scale.py` (report from commit {data['commit']}; each figure carries the commit "
        f"it ran at in `reports/bench/scale.json`). Machine: {machines}. Data: the generator's real-shape preset "
        "(`data.synthetic.scale`); 1.0 is the real dataset's size (SPEC §2).",
        "",
        f"| scale | {head} |",
        f"|---|{'---:|' * len(scales)}",
        f"| data | {sizes} |",
        "",
    ]

    def table(title: str, key: str, fmt: str, per_event: bool = False) -> list[str]:
        extra = 0 if per_event else 1  # the slope of a per-event cost is the stage's slope minus one
        rows = [f"## {title}", "", f"| stage | {head} |{' slope |' * extra}", f"|---|{'---:|' * (len(scales) + extra)}"]
        for name in names:
            cells, points = [], []
            for s in scales:
                st = data["scales"][s]["stages"].get(name)
                if st is None:
                    cells.append("")
                    continue
                value = st[key] / (data["scales"][s]["events"] / 1e6) if per_event else st[key]
                busy = key == "seconds" and loaded(st)
                other = ("ᶜ" if network(name, st) == "compact" else "") + ("†" if st["machine"] != main_machine else "")
                cells.append(format(value, fmt) + ("*" if busy else "") + other)
                points.append((data["scales"][s]["events"], st[key]))
            b = slope(points)
            tail = "" if per_event else f" {'' if b is None else f'{b:.2f}'} |"
            rows.append(f"| {name} | {' | '.join(cells)} |{tail}")
        return rows + [""]

    lines += score_table(data, scales)
    lines += machines_table(data, scales, main_machine)
    lines += targets_section(data, scales[-1], expected_stages(Path("params.yaml")))
    lines += table("Wall time (s)", "seconds", ".1f")
    lines += [f"\\* the machine's mean load was above {CORES} while the stage ran (other work shared the cores): "
              "its wall time is an upper bound. ᶜ an evaluation with `eval.profile: compact`.", ""]
    lines += table("Seconds per million events", "seconds", ".2f", per_event=True)
    lines += table("Peak RSS of the stage's process tree (MB)", "peak_rss_mb", ".0f")
    lines += table("Disk written (MB, outputs and their DVC cache copy)", "disk_mb", ".1f")
    lines += ["The checkout's growth while the stage ran: about 0 where a stage re-ran and wrote the bytes its "
              "outputs already had in the DVC cache (a run repeated at a later commit), and for evaluations "
              "(metrics only).", ""]
    save_text(args.report.with_suffix(".md"), "\n".join(lines))
    plot(data, scales, names, args.report.with_suffix(".png"))
    print("\n".join(lines))


def machines_table(data: dict, scales: list[str], main_machine: str) -> list[str]:
    """The stages measured on another machine too (kept beside the tables' figures in `other_machines`):
    both wall times, each with the commit it ran at, and their ratio."""
    rows, others = [], {}
    for s in scales:
        for other, stages in data["scales"][s].get("other_machines", {}).items():
            others[other] = None
            for name in sorted(stages, key=stage_rank):
                a, b = data["scales"][s]["stages"][name], stages[name]
                rows.append(f"| {float(s):g} | {name} | {a['seconds']:.1f}{'*' * loaded(a)} ({a['commit']}) | "
                            f"{b['seconds']:.1f}{'*' * loaded(b)} ({b['commit']}) | {b['seconds'] / a['seconds']:.2f} |")
    if not rows:
        return []
    return ["## Stages measured on two machines", "",
            f"The tables give each stage's first machine ({main_machine}); the same stages later ran on "
            f"{'; '.join(others)}, each at the commit in brackets (* loaded). A session may start on another machine: "
            "compare sums only within one machine.", "",
            "| scale | stage | first machine (s) | other machine (s) | ratio |", "|---|---|---:|---:|---:|",
            *rows, ""]


def score_table(data: dict, scales: list[str]) -> list[str]:
    """Six-task sums per profile at each scale beside the default 12k-client data (metrics/ here)."""
    default = {p.stem: json.loads(p.read_text()).get("sum") for p in sorted(Path("metrics").glob("*.json"))}
    profiles = sorted({n for s in scales for n in data["scales"][s].get("scores", {})} | set(default),
                      key=lambda n: -(default.get(n) or 0))
    rows = ["## Six-task sum per profile", "",
            "The default dataset (12,000 relevant clients, denser histories; `metrics/`) beside each scale of the "
            "real-shape preset. The preset is sparser (SPEC §2), so its absolute scores are not comparable with the "
            "default's; the order of the profiles is.", "",
            f"| profile | default | {' | '.join(f'{float(s):g}' for s in scales)} |",
            f"|---|---:|{'---:|' * len(scales)}"]
    def scored(scale: str, name: str) -> str:
        """The sum only where this scale's run scored the profile (a fresh checkout carries the
        default data's metrics/ from git until its evaluate stage runs); ᶜ: the compact network."""
        stages = data["scales"][scale]["stages"]
        ran = [st_name for st_name in stages if scored_profile(st_name) == name]
        if not ran:
            return ""
        mark = "ᶜ" if network(ran[0], stages[ran[0]]) == "compact" else ""
        return str(data["scales"][scale].get("scores", {}).get(name, {}).get("sum", "")) + mark

    calibrated = calibration_sums(scales[-1])  # {size: {profile: sum}}: the same embeddings, other evaluators
    rows[-2] += "".join(f" {float(scales[-1]):g}, {evaluator_name(size)} |" for size in calibrated)
    rows[-1] += "---:|" * len(calibrated)
    for name in profiles:
        cells = [scored(s, name) for s in scales] + [f"{sums[name]:.4f}" if name in sums else ""
                                                     for sums in calibrated.values()]
        rows.append(f"| {name} | {default.get(name) or ''} | {' | '.join(cells)} |")
    return rows + ["", "ᶜ evaluated with `eval.profile: compact` (the 128/256 network README \"Your own data\" sets "
                   "at the real size on 2 cores); the other sums with the default 256/512 network."
                   + (" The last columns: the largest scale's embeddings scored by benchmarks/eval_calibration.py "
                      "with another evaluator (seed 1278, its JSON in part 7)." if calibrated else ""), ""]


def calibration_runs(scale: str) -> dict[str, tuple[Path, dict]]:
    """{evaluator size: (its JSON, that JSON's runs)} of OTHER_EVALUATORS at `scale` whose JSON exists,
    each file read once."""
    sizes = OTHER_EVALUATORS.get(scale, ())
    read = {path: json.loads(path.read_text()) for path in {path for _, path in sizes} if path.exists()}
    return {size: (path, read[path]) for size, path in sizes if path in read}


def calibration_sums(scale: str) -> dict[str, dict[str, float]]:
    """{evaluator size: {profile: six-task sum}} of the calibration runs at `scale` (seed 1278) for the
    sizes other than the networks the graph's own stages ran (`compact`, `default`: those are the scale's column)."""
    from ubp import schema

    out: dict[str, dict[str, float]] = {}
    for size, (_, runs) in calibration_runs(scale).items():
        if size in ("compact", "default"):
            continue
        sums = {key.split("|")[2]: sum(r[t] for t in schema.TASKS) for key, r in runs.items()
                if key.startswith(f"{size}|1278|")}
        if sums:
            out[size] = sums
    return out


def expected_stages(params_path: Path) -> dict[str, list[str]]:
    """The default graph's stages (`dvc stage list` here), grouped: `data` (the data stages, features,
    sequences and the embeds of profiles inheriting `embedding`: part 7's first target), `rest`."""
    models = yaml.safe_load(params_path.read_text())["models"]
    listed = subprocess.run(["dvc", "stage", "list", "--name-only"], capture_output=True, text=True, check=True,
                            env={**os.environ, "DVC_NO_ANALYTICS": "1"}).stdout.split()
    data = [*DATA_STAGES, *(f"embed@{m}" for m, entry in models.items() if entry.get("inherits") == "embedding")]
    return {"data": data, "rest": [name for name in listed if name not in data]}


def machine_stages(entry: dict) -> dict[str, dict[str, dict]]:
    """One scale's figures per machine, {machine: {stage: figure}}, the machines with most stages first:
    the stages it measured first (the tables') and the ones it re-ran after another machine (`other_machines`)."""
    out: dict[str, dict[str, dict]] = {}
    for name, st in entry["stages"].items():
        out.setdefault(st["machine"], {})[name] = st
    for here, stages in entry.get("other_machines", {}).items():
        out.setdefault(here, {}).update(stages)
    return dict(sorted(out.items(), key=lambda kv: -len(kv[1])))


def targets_section(data: dict, scale: str, expected: dict[str, list[str]]) -> list[str]:
    """Part 7's targets at the largest scale, one table per machine (a sum never adds two machines'
    figures): the sums of the measured stages, what is not measured yet."""
    everything = expected["data"] + expected["rest"]

    def row(label: str, names: list[str], target: float, stages: dict) -> str:
        measured = [n for n in names if n in stages]
        busy = [n for n in measured if loaded(stages[n])]
        seconds, missing = sum(stages[n]["seconds"] for n in measured), [n for n in names if n not in stages]
        own = sum(stages[n]["seconds"] for n in measured if n not in SYNTHETIC_ONLY)
        state = "within" if seconds <= target else "over"
        return (f"| {label} | {len(names) - len(missing)} of {len(names)} | {seconds:,.0f} s ({seconds / 3600:.2f} h) | "
                f"{own:,.0f} s ({own / 3600:.2f} h) | {target / 3600:.2f} h | {state} so far | {len(busy)} | "
                f"{', '.join(missing) or 'none'} |")

    def table(here: str, stages: dict) -> list[str]:
        rows = [row("data stages, features, sequences, tabular embeds", expected["data"], DATA_TARGET_S, stages),
                row("the whole default graph", everything, GRAPH_TARGET_S,
                    {n: st for n, st in stages.items() if network(n, st) in (None, "default")})]
        for size, (_, all_runs) in calibrated.items():
            runs = {k: r for k, r in all_runs.items() if r.get("machine") == here}
            swapped = {}
            for name in everything:  # an evaluation: this machine's stage if it ran with `size`, else its calibration run
                st, run = stages.get(name), runs.get(f"{size}|1278|{scored_profile(name)}")
                if st is not None and network(name, st) in (None, size):
                    swapped[name] = st
                elif run is not None and network(name, {}) is not None:
                    swapped[name] = run
            rows.append(row(f"the whole default graph, evaluations with {evaluator_name(size)}", everything,
                            GRAPH_TARGET_S, swapped))
        commits = sorted({st["commit"] for st in stages.values()})
        return [f"### {here}", "", f"Commits {', '.join(commits)}.", "",
                "| stages | measured | sum | sum on a user's own data | target | | of them loaded | not measured yet |",
                "|---|---:|---:|---:|---:|---|---:|---|", *rows, ""]

    calibrated = calibration_runs(scale)
    per_machine = machine_stages(data["scales"][scale])
    peak = max(((n, st) for stages in per_machine.values() for n, st in stages.items()),
               key=lambda kv: kv[1]["peak_rss_mb"])
    sources = "; ".join(f"{evaluator_name(size)} from `{path}`" for size, (path, _) in calibrated.items())
    return ["## Part 7's targets at scale " + f"{float(scale):g}", "",
            "Sums of the stages measured at this scale, one table per machine (a session may start on another "
            "machine, and the two differ by up to 3x on a stage: a sum never mixes them), against the targets of "
            "issue #13; the default graph's stages are this commit's `params.yaml`. A stage measured while other "
            "work shared the cores counts with its loaded (upper-bound) time. 'Tabular' embeds: the profiles "
            "inheriting `embedding` (no network). 'On a user's own data': the same sum without "
            + ", ".join(SYNTHETIC_ONLY) + ", which run only on the synthetic data (with `data.source: dir` the "
            "generate stage writes nothing and the oracle profile is skipped, README 'Your own data').", "",
            *(["The rows with another evaluator take each evaluation's seconds from benchmarks/eval_calibration.py "
               f"on the same embeddings and the same machine ({sources}: the evaluation alone, a stage adds a few "
               "seconds of start-up) and every other stage from that machine's figures; evaluations not run with "
               "that evaluator there count as not measured.", ""] if sources else []),
            *(line for here, stages in per_machine.items() for line in table(here, stages)),
            f"Largest peak RSS: {peak[0]}, {peak[1]['peak_rss_mb']:,} MB on {peak[1]['machine']} (target: no stage "
            f"above {MEMORY_TARGET_MB:,} MB and none killed for memory).", "",
            *failures_lines(data["scales"][scale])]


def failures_lines(entry: dict) -> list[str]:
    """The stages that failed at this scale (each attempt: when it died, how, on which machine), and
    whether a later run of the stage completed on that machine (a measured stage at another commit)."""
    rss = lambda st: f"{st['peak_rss_mb']:,} MB" if st.get("peak_rss_mb") else "not kept"  # noqa: E731

    def since(name: str, st: dict) -> str:
        done = entry["stages"].get(name)
        if done is None or done["machine"] != st["machine"] or done["commit"] == st["commit"]:
            return "not yet"
        return f"at {done['commit']}: {done['seconds']:,.0f} s, peak {done['peak_rss_mb']:,} MB"

    rows = [f"| {name} | {st['seconds']:,.0f} s | {rss(st)} | {st['exit']} | {st['log']} | "
            f"{st['machine']} | {st['commit']} | {since(name, st)} |"
            for name, attempts in entry.get("failures", {}).items() for st in attempts]
    if not rows:
        return ["No stage failed at this scale.", ""]
    return ["Failed attempts (not measurements; a stage killed for memory misses the target until a run of it "
            "completes):", "", "| stage | died after | peak RSS sampled | exit | dvc's error | machine | commit | "
            "completed since |", "|---|---:|---:|---:|---|---|---|---|", *rows, ""]


def plot(data: dict, scales: list[str], names: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ubp.io import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for name in names:
        pts = [(data["scales"][s]["events"], data["scales"][s]["stages"][name]) for s in scales
               if name in data["scales"][s]["stages"]]
        if len(pts) < 1:
            continue
        ev = [p[0] for p in pts]
        axes[0].plot(ev, [max(p[1]["seconds"], 0.1) for p in pts], marker="o", label=name)
        axes[1].plot(ev, [max(p[1]["peak_rss_mb"], 1) for p in pts], marker="o", label=name)
    for ax, label in zip(axes, ("wall time (s)", "peak RSS (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].axhline(16 * 1024, color="red", linestyle="--", label="16 GB target")
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run `dvc repro [targets]` at a scale and record each stage")
    p_run.add_argument("--scale", type=float, required=True)
    p_run.add_argument("--workdir", type=Path)
    p_run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="a params.yaml override for this scale (e.g. model.fit_clients=100000)")
    p_run.add_argument("--at", default="HEAD", metavar="REV",
                       help="the commit to run at (pin one for a run split over sessions: a later commit's "
                            "changed code would re-run the stages already measured)")
    p_run.add_argument("--cache-type", metavar="TYPE", help="the checkout's DVC cache.type (symlink at 100%%)")
    p_run.add_argument("targets", nargs="*")
    p_rep = sub.add_parser("report", help="write reports/bench/scale.md and .png from reports/bench/scale.json")
    for p in (p_run, p_rep):
        p.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args()
    run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    main()
