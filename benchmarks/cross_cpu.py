"""Which library's CPU dispatch moves which profile's bytes: each profile embedded (and optionally
evaluated) under the native kernels and under each pin of #16 part 6, compared byte for byte.

    python benchmarks/cross_cpu.py [--profiles svd rcae next_event] [--evaluate features]

    python benchmarks/cross_cpu.py --profiles aggregated --evaluate --variants native all

    python benchmarks/cross_cpu.py --emulate Haswell --profiles svd --evaluate --variants native

--emulate runs every child under QEMU's user-mode emulator (`qemu-x86_64 -cpu Haswell`, Debian's
qemu-user), whose CPUID reports the named CPU model: torch, numpy and OpenBLAS then pick that model's
kernels themselves, as they would on such a machine, and QEMU computes each instruction's IEEE result
exactly. It is another CPU model's run without another machine (tens of times slower): its `native`
column is what that machine would give unpinned.

reports/bench/cross_cpu.json keeps one entry per CPU model and the rows of earlier runs, so profiles can
be added a run at a time and a run on another machine adds its column: whether the pinned bytes agree
across CPU models is read off that table, not assumed.

Another CPU model runs other kernels: torch's own vectorised ops (ATen: AVX-512 or AVX2), MKL's
BLAS under torch, oneDNN, numpy's SIMD loops and OpenBLAS under numpy/scipy/sklearn. Each sums
floats in its own order, so the last bits differ, and a network trained for epochs amplifies them.
On this machine the kernels of a plainer CPU can be forced one library at a time (the variables in
PINS); a profile whose bytes change under a pin is moved by that library. The variables are read
when the libraries load, so every run is its own process. Embeddings go to a temporary directory
(never the workspace); the report is reports/bench/cross_cpu.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from runs import head_commit  # noqa: E402  (benchmarks/ is this script's directory)
from ubp import portable  # noqa: E402
from ubp import schema  # noqa: E402
from ubp.io import save_json, save_text  # noqa: E402

OUT = schema.BENCH_DIR / "cross_cpu"
# One library at a time, then all of them (ubp.portable.ENV: what the stages set).
ALL = "all"
PINS = {name: {name: value} for name, value in portable.ENV.items()} | {ALL: dict(portable.ENV)}

CHILD = """
import hashlib, json, sys, time
from pathlib import Path
from ubp.params import load_params
name, out, evaluate = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1"
params = load_params()
sys.path.insert(0, "benchmarks")
from runs import set_dotted
for dotted, value in json.loads(sys.argv[4]).items():  # --set: the same overrides on every machine
    set_dotted(params, dotted, value)
start = time.perf_counter()
if evaluate:
    from ubp.evaluate.run import evaluate_profile
    from ubp.evaluate.protocol import EvalConfig
    result = evaluate_profile(name, EvalConfig.from_params(params))
    print(json.dumps({"sum": result["sum"], "tasks": {t: e["score"] for t, e in result["tasks"].items()},
                      "seconds": round(time.perf_counter() - start, 1)}))
else:
    from ubp import embed
    embed.run(name, params, out_dir=out / name)
    digest = hashlib.md5((out / name / "embeddings.npy").read_bytes()).hexdigest()
    import torch
    print(json.dumps({"md5": digest, "seconds": round(time.perf_counter() - start, 1),
                      "aten": torch.backends.cpu.get_cpu_capability()}))
"""


def run_one(name: str, env_pins: dict, out: Path, evaluate: bool, emulate: str | None = None,
            overrides: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in portable.ENV}
    env.update({portable.OPT_OUT: "1", **env_pins})  # only these pins: `import ubp` sets none of its own
    env["PYTHONPATH"] = str(REPO / "src")
    python = [sys.executable] if not emulate else ["qemu-x86_64", "-cpu", emulate, os.path.realpath(sys.executable)]
    done = subprocess.run([*python, "-c", CHILD, name, str(out), "1" if evaluate else "0", json.dumps(overrides or {})],
                          cwd=REPO,
                          env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name} under {env_pins or 'native'} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="*", default=["svd", "rcae", "next_event"])
    parser.add_argument("--evaluate", nargs="*", default=["features"], help="profiles whose evaluation is compared")
    parser.add_argument("--variants", nargs="*", help="only these (native, a variable of PINS, all)")
    parser.add_argument("--emulate", metavar="CPU", help="run under qemu-x86_64 -cpu CPU (e.g. Haswell)")
    parser.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="variables set on top of every variant (e.g. MKL_CBWR=COMPATIBLE: a candidate pin)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="params overrides (e.g. model.epochs=2: a cheaper run to compare under emulation)")
    args = parser.parse_args()
    commit = head_commit()
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    extra = dict(item.split("=", 1) for item in args.env)
    suffix = f" [{', '.join(args.set + args.env)}]" if args.set or args.env else ""
    variants = {label: pins for label, pins in {"native": {}, **PINS}.items()
                if not args.variants or label in args.variants}
    path = OUT.with_suffix(".json")
    result = json.loads(path.read_text()) if path.exists() else {"pins": portable.ENV, "machines": {}}
    # One entry per CPU model; rows of an earlier run on it are kept (profiles are added a run at a time).
    key, flags = (cpu_model(), isa_flags()) if not args.emulate else \
        (f"QEMU {args.emulate} (emulated on {cpu_model()})", [f"as QEMU's {args.emulate} model"])
    machine = result["machines"].setdefault(key, {"flags": flags, "rows": {}})
    with tempfile.TemporaryDirectory(prefix="ubp-cross-cpu-") as tmp:
        for kind, names in (("embed", args.profiles), ("evaluate", args.evaluate)):
            for name in names:
                for label, pins in variants.items():
                    if kind == "evaluate" and label not in ("native", ALL):
                        continue
                    t = time.perf_counter()
                    out = run_one(name, {**pins, **extra}, Path(tmp) / label, kind == "evaluate", args.emulate,
                                  overrides)
                    machine["rows"].setdefault(f"{kind} {name}{suffix}", {})[label] = {**out, "commit": commit}
                    print(f"{kind} {name:12s} {label:24s} {out.get('md5') or out['sum']} "
                          f"({time.perf_counter() - t:.0f} s)", flush=True)
    result["pins"] = portable.ENV
    save_json(path, result)
    save_text(OUT.with_suffix(".md"), markdown(result))


def cpuinfo(field: str) -> str | None:
    """The first value of `field` in /proc/cpuinfo (None where there is no such line)."""
    return next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith(field)), None)


def cpu_model() -> str:
    """The model name with its family/model/stepping numbers (a VM may shorten the name to "AMD EPYC")."""
    name = cpuinfo("model name") or platform.processor() or "unknown"
    ids = [cpuinfo(f) for f in ("cpu family", "model\t", "stepping")]
    return f"{name} ({'/'.join(ids)})" if all(ids) else name


def isa_flags() -> list[str]:
    return sorted(f for f in (cpuinfo("flags") or "").split() if f.startswith("avx"))


def cell(c: dict) -> str:
    """The result and the commit it ran at: rows are added a run at a time, and code changes between."""
    return (c["md5"][:8] if "md5" in c else f"{c['sum']:.6f}") + f" ({c.get('commit', '?')})"


def value(c: dict):
    return c.get("md5", c.get("sum"))


def markdown(result: dict) -> str:
    labels = ["native", *PINS]
    lines = ["# Across CPU models: which library moves which profile", "",
             "Made by `python benchmarks/cross_cpu.py` (default data). A cell is the embedding's md5 (first 8 hex) "
             "or the evaluation's six-task sum, then the commit it ran at. Per machine: each "
             "library's kernels pinned alone, then all of them (`ubp.portable`, what every stage runs under "
             "unless UBP_NATIVE_KERNELS=1); **bold** where a run differs from the machine's native one at the same "
             "commit. Which single op differs between CPU models: kernel_probe.md.", ""]
    machines = result["machines"]
    for cpu, m in machines.items():
        lines += [f"## {cpu}", "", f"AVX flags: {', '.join(m['flags'])}", "",
                  "| run | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for key, cells in m["rows"].items():
            native = cells.get("native")
            out = ["" if label not in cells else
                   f"**{cell(cells[label])}**" if native is not None and value(cells[label]) != value(native)
                   and cells[label].get("commit") == native.get("commit") else cell(cells[label]) for label in labels]
            lines.append(f"| {key} | " + " | ".join(out) + " |")
        lines.append("")
    if len(machines) > 1:
        lines += ["## The same run on each CPU model", "",
                  "Pinned (`all`) and native results side by side; a row agrees across machines when its "
                  "pinned cells are equal.", "",
                  "| run | " + " | ".join(f"{cpu}: {kind}" for cpu in machines for kind in ("native", "pinned"))
                  + " | pinned equal |", "|---|" + "---|" * (2 * len(machines) + 1)]
        keys = dict.fromkeys(k for m in machines.values() for k in m["rows"])
        for key in keys:
            cells = [m["rows"].get(key, {}) for m in machines.values()]
            out = [cell(c[kind]) if kind in c else "" for c in cells for kind in ("native", ALL)]
            pinned = [value(c[ALL]) for c in cells if ALL in c]
            agree = "(one machine)" if len(pinned) < 2 else "yes" if len(set(pinned)) == 1 else "**no**"
            lines.append(f"| {key} | " + " | ".join(out) + f" | {agree} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
