"""What a user sees for each kind of bad input: every case run through the command line as a user
runs it, its exit code and its last line of stderr -> reports/bench/bad_inputs.{md,json}.

    python benchmarks/bad_inputs.py [--workdir DIR]

Not a test (tests/data/test_ingest.py, tests/test_io.py and tests/test_submission.py assert each
message): the catalogue of #16's closing note, made by one named run. The broken raw tables are the
tests' own (BAD_TABLES on the hand-made log of tests/data/conftest.py), and so are the broken
entries of `python -m ubp validate`. A full disk and a read-only filesystem are real ones where the
user may mount (a 64 KiB tmpfs, a tmpfs remounted read-only: root on Linux); elsewhere they are
listed as not run.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from runs import scratch_and_commit, set_dotted  # noqa: E402  (benchmarks/ is this script's directory)
from tests.data.conftest import RELEVANT, handmade_tables, write_raw  # noqa: E402
from tests.data.test_ingest import BAD_TABLES, plant  # noqa: E402
from tests.test_submission import BROKEN_ENTRIES, NON_INT_IDS, UNREADABLE_FILES, good_embeddings, write_entry  # noqa: E402
from tests.test_submission import RELEVANT as ENTRY_RELEVANT  # noqa: E402
from ubp import schema as S  # noqa: E402
from ubp.io import save_json, save_text  # noqa: E402

OUT = S.BENCH_DIR / "bad_inputs"


def ubp(args: list[str], cwd: Path) -> dict:
    """`python -m ubp ARGS` in cwd: its exit code, last stderr line and the log lines that warn."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-m", "ubp", *args], cwd=cwd, env=env, capture_output=True, text=True)
    # The scratch root and the log's clock are the run's, not the message's: left out, so that two
    # runs of this script give the same report.
    lines = [re.sub(r"^\d\d:\d\d:\d\d ", "", line.replace(str(cwd.parent), "<scratch>"))
             for line in done.stderr.strip().splitlines()]
    return {"rc": done.returncode, "last": lines[-1] if lines else "", "traceback": "Traceback" in done.stderr,
            "warnings": [line for line in lines if "not part of the data layout" in line or "dropped" in line]}


def workdir(root: Path, name: str, params: dict | None = None) -> Path:
    path = root / name
    path.mkdir(parents=True)
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in (params or {}).items():
        set_dotted(base, dotted, value)
    (path / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def ingest_case(root: Path, name: str, tables=None, relevant=None, params=None, prepare=None) -> dict:
    cwd = workdir(root, name, params)
    raw = write_raw(cwd / "raw", tables if tables is not None else handmade_tables(), RELEVANT)
    if relevant is not None:
        np.save(raw / S.RELEVANT_CLIENTS_FILE, relevant, allow_pickle=True)
    if prepare:
        prepare(raw)
    result = ubp(["ingest", "--raw-dir", "raw"], cwd)
    result["written"] = (cwd / S.CANONICAL_DIR).exists()
    if (cwd / S.CANONICAL_DIR / "dropped.json").exists():
        result["dropped"] = json.loads((cwd / S.CANONICAL_DIR / "dropped.json").read_text())["dropped_rows"]
    return result


class Payload:
    """Unpickling this would run `touch MARKER`."""
    marker = ""

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def ingest_cases(root: Path) -> list[tuple[str, str, dict]]:
    rows = []
    for case, (fn, _) in BAD_TABLES.items():
        rows.append(("raw tables", case, ingest_case(root, f"table-{case.replace(' ', '_')}", fn(handmade_tables()))))
    obj = lambda values: np.array(values, dtype=object)
    rows.append(("object .npy", "object array of integers (accepted as int64)",
                 ingest_case(root, "obj-ints", relevant=obj([105, np.int64(101), 104, np.int32(103), 102]))))
    for label, values in (("a string", [105, "101", 104]), ("a float", [105, 101, 104.0]), ("None", [None, 101]),
                          ("a bool", [105, True]), ("an int past int64", [105, 2 ** 70])):
        rows.append(("object .npy", f"object array holding {label}", ingest_case(root, f"obj-{label.replace(' ', '_')}",
                                                                                 relevant=obj(values))))
    Payload.marker = str(root / "MARKER")
    result = ingest_case(root, "obj-pickle", relevant=obj([105, Payload()]))
    result["payload_ran"] = Path(Payload.marker).exists()
    rows.append(("object .npy", "a pickle whose loading would run os.system", result))

    def extra(raw: Path) -> None:
        (raw / "README.txt").write_text("hello")
        (raw / "target").mkdir(exist_ok=True)
        np.save(raw / "target" / "notes.npy", np.array([1.5]))
        np.save(raw / "target" / S.ACTIVE_CLIENTS_FILE, np.array([101, 102]))
    rows.append(("layout", "files the layout does not name (README.txt, target/notes.npy)",
                 ingest_case(root, "extra-files", prepare=extra)))
    for label, table, row, stamp in (("a buy in 2099", S.PRODUCT_BUY, 4, "2099-01-01 00:00:00"),
                                     ("a visit in 1970", S.PAGE_VISIT, 1, "1970-01-01 00:00:00")):
        rows.append(("implausible timestamps", label,
                     ingest_case(root, f"time-{row}", plant(handmade_tables(), table, row, stamp))))
    rows.append(("implausible timestamps", "the same buy in 2099 with data.timestamps.drop: true",
                 ingest_case(root, "time-drop", plant(handmade_tables(), S.PRODUCT_BUY, 4, "2099-01-01 00:00:00"),
                             params={"data.timestamps.drop": True})))
    return rows


def mount_tmpfs(path: Path, *options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def output_cases(root: Path) -> list[tuple[str, str, dict]]:
    """The split stage rewriting its output onto a full disk and onto a read-only filesystem."""
    base = workdir(root, "outputs-base")
    write_raw(base / "raw", handmade_tables(), RELEVANT)
    ubp(["ingest", "--raw-dir", "raw"], base)
    canonical = base / S.CANONICAL_DIR
    size = sum(-(-p.stat().st_size // 4096) * 4096 for p in canonical.rglob("*") if p.is_file())  # in pages
    rows = []
    for label, options in (("full disk (a tmpfs just larger than data/canonical)", [f"size={size + 8192}"]),
                           ("read-only filesystem (tmpfs remounted ro after a first split)", ["size=16m"])):
        cwd = workdir(root, f"outputs-{len(rows)}")
        data = cwd / "data"
        if not mount_tmpfs(data, *options):
            rows.append(("outputs", label, {"rc": None, "last": "not run: this user cannot mount a tmpfs"}))
            continue
        try:
            shutil.copytree(canonical, data / "canonical")
            if "ro" in label.split():
                ubp(["split"], cwd)
                subprocess.run(["mount", "-o", "remount,ro", str(data)], check=True)
            before = sorted(str(p.relative_to(data)) for p in data.rglob("*"))
            result = ubp(["split"], cwd)
            result["left_as_before"] = sorted(str(p.relative_to(data)) for p in data.rglob("*")) == before
            rows.append(("outputs", label, result))
        finally:
            subprocess.run(["umount", str(data)], capture_output=True)
    return rows


def params_cases(root: Path) -> list[tuple[str, str, dict]]:
    rows = []
    for label, params, command in (("a typo in a key: eval.epoch", {"eval.epoch": 5}, ["evaluate", "features"]),
                                   ("a wrong type: features.windows: seven", {"features.windows": "seven"}, ["features"]),
                                   ("an unknown profile", {}, ["embed", "no_such_profile"])):
        rows.append(("params", label, ubp(command, workdir(root, f"params-{len(rows)}", params))))
    return rows


def entry_cases(root: Path) -> list[tuple[str, str, dict]]:
    relevant = root / "entry-relevant.npy"
    np.save(relevant, ENTRY_RELEVANT)
    cases = [(expected, ids, emb, None) for ids, emb, expected in BROKEN_ENTRIES]
    cases += [(expected, ENTRY_RELEVANT, good_embeddings(), (name, content)) for name, content, expected in UNREADABLE_FILES]
    cases += [(expected, ids, good_embeddings(), None) for ids, expected in NON_INT_IDS]
    cases += [("a valid entry", ENTRY_RELEVANT[::-1].copy(), good_embeddings(), None)]
    rows = []
    for i, (label, ids, emb, overwrite) in enumerate(cases):
        entry = write_entry(root / f"entry-{i}", ids, emb)
        if overwrite:
            (entry / overwrite[0]).write_bytes(overwrite[1])
        rows.append(("submission entries", label, ubp(["validate", str(entry), "--relevant", str(relevant)], root)))
    return rows


def markdown(rows: list[dict], commit: str) -> str:
    lines = ["# Bad input: what the user sees", "",
             f"Made by `python benchmarks/bad_inputs.py` at commit {commit}: each case run as `python -m ubp ...` "
             "in a fresh directory; `rc` is the exit code, the message is the last line the command printed to "
             "stderr (`traceback`: whether a Python traceback was printed at all; `written`: whether ingest left "
             "an output).", "",
             "| kind | case | rc | traceback | message (last stderr line) | notes |", "|---|---|---|---|---|---|"]
    for r in rows:
        notes = []
        if "written" in r:
            notes.append(f"written: {'yes' if r['written'] else 'no'}")
        if r.get("warnings"):
            notes.append("warned: " + "; ".join(w.split(": ", 1)[-1] for w in r["warnings"]))
        if "dropped" in r:
            notes.append(f"dropped.json: {r['dropped']}")
        if "payload_ran" in r:
            notes.append(f"payload ran: {'**yes**' if r['payload_ran'] else 'no'}")
        if "left_as_before" in r:
            notes.append(f"previous output intact, no temporaries: {'yes' if r['left_as_before'] else '**no**'}")
        message = r["last"].split(": ", 1)[-1] if r["last"].startswith("error: ") else r["last"]
        message = message.replace("|", "\\|")
        if r["rc"] == 0:
            message = f"(accepted) {message[-120:]}"
        lines.append(f"| {r['kind']} | {r['case']} | {r['rc']} | {'**yes**' if r.get('traceback') else 'no'} | "
                     f"{message} | {'; '.join(notes)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    root, commit = scratch_and_commit(__doc__.splitlines()[0], "ubp-bad-inputs-")
    rows = []
    for make in (ingest_cases, output_cases, params_cases, entry_cases):
        for kind, case, result in make(root):
            rows.append({"kind": kind, "case": case, **result})
            print(f"{kind:22s} {case[:60]:60s} rc={result['rc']} {result['last'][:110]}", flush=True)
    save_json(OUT.with_suffix(".json"), {"commit": commit, "rows": rows})
    save_text(OUT.with_suffix(".md"), markdown(rows, commit))


if __name__ == "__main__":
    main()
