"""Universal Behavioral Profiles: from raw e-commerce event logs to one vector per client.

Importing ubp pins the numerical libraries' CPU dispatch to AVX2 (ubp.portable) before numpy or
torch loads, so a profile's bytes do not depend on the CPU model; UBP_NATIVE_KERNELS=1 opts out.
"""
from ubp import portable as _portable

_portable.apply()
