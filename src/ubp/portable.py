"""The numerical libraries' CPU dispatch pinned to AVX2, so that other x86-64 CPUs compute alike.

torch (ATen's vectorised ops, MKL's BLAS and vector maths, oneDNN), numpy's SIMD loops and OpenBLAS
each pick the widest instructions the CPU has. AVX-512 and AVX2 code sum floats in different orders,
and epochs of training amplify a last-bit difference into the fourth decimal of a score. Every
library reads its variable once, when it loads: `apply()` must run before numpy or torch is
imported, which `import ubp` does (ubp/__init__.py), so `python -m ubp <stage>` and the tests run
pinned.

What the pins buy, measured op by op on this AMD EPYC and QEMU's Intel Haswell and AMD EPYC-Milan
(reports/bench/kernel_probe.md, reports/bench/cross_cpu.md):
- numpy and OpenBLAS (svd, features, the generator): the same bytes on every AVX2 x86-64 CPU.
- torch's own kernels (reductions, softmax, layer/batch norm, GELU, losses, random draws, GRU,
  attention, the fused Adam our networks train with): the same bytes on all three.
- MKL, under torch's matmuls and its exp, log and sqrt, chooses its code by CPU *vendor*:
  `MKL_CBWR=AVX2` makes AMD CPUs agree among themselves but not with Intel ones. Setting
  `MKL_CBWR=COMPATIBLE` yourself makes Intel and AMD agree, at ~3.5x the matmul time.
- MKL's sqrt on AMD refines the approximate `rsqrtps` instruction, whose result is the CPU's own:
  torch's default Adam/AdamW, and so the evaluator (the official optimizer, kept bit for bit),
  differ in the last bits between CPU implementations. Scores agree to the conformance tolerance
  across machines, byte for byte only on one CPU model.

Also still different between machines: CPUs without AVX2 (pre-2013), other architectures (ARM),
GPUs (`device: cuda`). The threads torch uses are pinned by the params (`threads`). Set
UBP_NATIVE_KERNELS=1 to let each library use everything the CPU has (faster on AVX-512 machines,
reproducible only on the same CPU model).
"""
from __future__ import annotations

import os
import sys

OPT_OUT = "UBP_NATIVE_KERNELS"
ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels (reductions, elementwise, softmax)
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility: AVX2 code paths (torch's matmuls)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (torch's mkldnn ops)
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SKX AVX512_SPR",  # numpy's dispatched AVX-512 loops
    "OPENBLAS_CORETYPE": "Haswell",  # OpenBLAS under numpy, scipy and sklearn: its AVX2 kernels
}
LIBRARIES = ("numpy", "torch", "scipy", "sklearn")


def apply() -> list[str]:
    """Set each variable not already set (a user's own value wins), unless UBP_NATIVE_KERNELS=1.
    Returns the libraries already loaded, for which it comes too late."""
    if os.environ.get(OPT_OUT, "") in ("1", "true", "yes"):
        return []
    for name, value in ENV.items():
        os.environ.setdefault(name, value)
    return [lib for lib in LIBRARIES if lib in sys.modules]
