"""ubp.portable: `import ubp` pins the CPU dispatch of torch, numpy and OpenBLAS before they load."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ubp import portable

SRC = Path(__file__).resolve().parents[1] / "src"
PROBE = """
import json, os, sys
import ubp
import numpy, torch
print(json.dumps({"env": {k: os.environ.get(k) for k in %r}, "torch": torch.backends.cpu.get_cpu_capability(),
                  "numpy_avx512": bool(numpy._core._multiarray_umath.__cpu_features__.get("X86_V4"))}))
""" % (list(portable.ENV),)


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in portable.ENV and k != portable.OPT_OUT}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**clean, "PYTHONPATH": str(SRC), **env},
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def has_avx2() -> bool:
    info = Path("/proc/cpuinfo")
    return info.exists() and " avx2" in info.read_text()


def test_importing_ubp_sets_every_pin_before_numpy_and_torch_load():
    seen = probe()
    assert seen["env"] == portable.ENV
    assert not seen["numpy_avx512"]  # numpy's AVX-512 loops are off, whatever the CPU has
    if has_avx2():
        assert seen["torch"] == "AVX2"  # not AVX512 on an AVX-512 machine


def test_the_opt_out_leaves_every_library_native():
    seen = probe(**{portable.OPT_OUT: "1"})
    assert seen["env"] == {k: None for k in portable.ENV}


def test_a_users_own_value_wins():
    seen = probe(ATEN_CPU_CAPABILITY="default")
    assert seen["env"]["ATEN_CPU_CAPABILITY"] == "default"
    assert seen["torch"] == "DEFAULT"
    assert seen["env"]["MKL_CBWR"] == "AVX2"


def test_apply_names_the_libraries_loaded_too_early(monkeypatch):
    for name in portable.ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(portable.OPT_OUT, raising=False)
    import numpy  # noqa: F401  loaded by this test session already

    assert "numpy" in portable.apply()
    assert all(os.environ[k] == v for k, v in portable.ENV.items())
