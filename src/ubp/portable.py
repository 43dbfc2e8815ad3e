"""The same kernels on every x86-64 CPU with AVX2: the numerical libraries' CPU dispatch pinned.

torch (ATen's vectorised ops, MKL's BLAS, oneDNN), numpy's SIMD loops and OpenBLAS each pick the
widest instructions the CPU has. AVX-512 and AVX2 code sum floats in different orders, so a profile
trained on an AVX-512 Xeon and the same profile trained on an AVX2 laptop differ in their last bits,
and epochs of training amplify that into the fourth decimal of a score
(reports/bench/cross_cpu.md: which library moves which profile). Every library reads its variable
once, when it loads: `apply()` must run before numpy or torch is imported, which `import ubp`
does (ubp/__init__.py), so `python -m ubp <stage>` and the tests run pinned.

What still differs between machines: the number of threads (pinned by the params: `threads`),
CPUs without AVX2 (pre-2013), other architectures (ARM), and GPUs (`device: cuda`). Set
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
