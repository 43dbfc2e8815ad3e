"""The report of `python -m ubp select` (`reports/bench/ensemble_selection.md`): the steps of the
greedy search, every set scored, and optionally an earlier selection beside this one (`--before`)."""
from __future__ import annotations

import json
from pathlib import Path

from ubp import schema
from ubp.io import UbpError


def sample_note(settings: dict) -> str:
    size = settings.get("sample_clients")
    return "" if size is None else f"; a sample of {size} clients drawn with seed {settings['seed']}"


def load_note(result: dict) -> str:
    if "load" not in result:
        return ""
    return (f"; 1-minute load {result['load'][0]} at the start, {result['load'][1]} at the end, "
            f"on {result['cores']} cores")


def short(task: str) -> str:
    return task.replace("propensity_", "")


def comparison(result: dict) -> list[str]:
    """Report lines setting `result` beside the earlier selection stored in result["before"] (e.g. one
    made with another objective): per set, its objective, its scores of this run's tasks, and now."""
    before, tasks = result["before"], result.get("tasks", schema.TASKS)
    old_tasks = before.get("tasks", schema.TASKS)
    lines = ["", "## Compared with an earlier selection", "",
             f"`{before['file']}`: objective the sum of {', '.join(short(t) for t in old_tasks)}; selected "
             f"**{', '.join(before['selected']) or '(none)'}** (objective {before['objective']}). Columns: its "
             f"objective; its scores of {', '.join(short(t) for t in tasks)} summed; this run's objective "
             "(— : not scored by that run).", "",
             "| set | earlier objective | earlier, this run's tasks | now |", "|---|---:|---:|---:|"]
    now = result["scored"]
    names = sorted(set(now) | set(before["scored"]), key=lambda n: (-now[n]["objective"] if n in now else 0, n))
    for name in names:
        old, new = before["scored"].get(name), now.get(name)
        same_tasks = old is not None and all(t in old["tasks"] for t in tasks)
        cells = [f"{old['objective']:.4f}" if old else "—",
                 f"{sum(old['tasks'][t] for t in tasks):.4f}" if same_tasks else "—",
                 f"{new['objective']:.4f}" if new else "—"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict) -> str:
    tasks = result.get("tasks", schema.TASKS)  # a report made before the hidden tasks stopped choosing: all six
    s = result["settings"]
    lines = ["# Ensemble selection", "",
             f"Greedy forward selection then backward pruning over {len(result['candidates'])} candidates "
             f"({', '.join(result['candidates'])}), scored on an inner {s['folds']}-fold split of the train "
             f"window only (the validation window is never read{sample_note(s)}). Objective: the sum of the "
             f"inner scores of {', '.join(short(t) for t in tasks)}"
             + ("" if len(tasks) == len(schema.TASKS) else " (the open tasks; the hidden ones only measure)")
             + f"; a source is added only if it gains more than {s['min_gain']}. Made by `python -m ubp select"
             + (f" --before {result['before']['file']}" if result.get("before") else "") + "`.",
             "", f"**Selected:** {', '.join(result['selected']) or '(none)'} — inner objective {result['objective']}",
             f"({result['n_scored']} sets scored in {result['seconds']} s{load_note(result)}).", "",
             "## Steps", "", "| step | phase | from | tried | objective | gain | accepted |", "|---|---|---|---|---:|---:|---|"]
    for i, step in enumerate(result["steps"], 1):
        for name, value in sorted(step["tried"].items(), key=lambda kv: -kv[1]):
            picked = name == step["pick"]
            sign = "−" if step["phase"] == "backward" else "+"
            lines.append(f"| {i} | {step['phase']} | {'+'.join(step['base']) or '∅'} | {sign}{name} | "
                         f"{value:.4f} | {step['gain'] if picked and step['gain'] is not None else ''} | "
                         f"{('yes' if step['accepted'] else 'no') if picked else ''} |")
    lines += ["", "## Every set scored", "", "| set | dim | " + " | ".join(short(t) for t in tasks)
              + " | objective |", "|---|---:|" + "---:|" * (len(tasks) + 1)]
    for name, row in sorted(result["scored"].items(), key=lambda kv: -kv[1]["objective"]):
        lines.append(f"| {name} | {row['dim']} | " + " | ".join(f"{row['tasks'][t]:.4f}" for t in tasks)
                     + f" | {row['objective']:.4f} |")
    if result.get("before"):
        lines += comparison(result)
    return "\n".join(lines) + "\n"


def earlier(path: Path) -> dict:
    """What the report shows of an earlier selection's .json (`--before`)."""
    if not Path(path).is_file():
        raise UbpError(f"{path}: file not found (--before takes an earlier selection's .json)")
    result = json.loads(Path(path).read_text())
    return {"file": str(path), "tasks": result.get("tasks", list(schema.TASKS)),  # no "tasks": all six were scored
            "selected": result["selected"], "objective": result["objective"],
            "scored": {n: {"objective": r["objective"], "tasks": r["tasks"]} for n, r in result["scored"].items()}}
