"""One command line for every stage: `python -m ubp <command> [args]`."""
from __future__ import annotations

import importlib
import logging
import sys

from ubp import schema
from ubp.io import UbpError, sweep_stale

# Where the stages write: what a killed write left there is removed before a stage starts (DVC
# runs one stage at a time in a workspace, so nothing in them is another run's write in progress).
OUTPUT_ROOTS = (schema.DATA, schema.EMBEDDINGS_DIR, schema.COMBINED_DIR, schema.METRICS_DIR,
                schema.METRICS_DIR / "embed", schema.REPORTS_DIR)
# command -> module whose main(argv) runs it
COMMANDS = {
    "generate": "ubp.data.synthetic",
    "ingest": "ubp.data.ingest",
    "split": "ubp.data.split",
    "targets": "ubp.data.targets",
    "features": "ubp.features.build",
    "sequences": "ubp.sequences",
    "embed": "ubp.embed",
    "combine": "ubp.combine.stage",
    "select": "ubp.combine.selection",
    "reference": "ubp.reference",
    "evaluate": "ubp.evaluate.run",
    "report": "ubp.report",
    "submit": "ubp.submission",
    "validate": "ubp.submission",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m ubp {{{','.join(COMMANDS)}}} [args]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    command, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[command])
    if command not in ("submit", "validate"):
        for path in sweep_stale(*OUTPUT_ROOTS):
            logging.getLogger("ubp").info("removed %s, left by a write that was killed", path)
    try:
        if command in ("submit", "validate"):
            return module.main([command, *rest]) or 0
        return module.main(rest) or 0
    except UbpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
