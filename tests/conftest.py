"""Test setup: the Triton kernels run interpreted on the CPU unless a GPU is present.

Hypothesis profiles: "ci" (default; the whole suite in a few minutes on 2 cores) and "thorough"
(HYPOTHESIS_PROFILE=thorough, for local runs).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton is imported
try:
    # Imported here, under that setting: triton.language's own @triton.jit helpers (tl.zeros, ...) pick
    # interpreted or compiled at import, so a first import inside a test that unsets TRITON_INTERPRET
    # (test_errors does) would break every interpreted kernel run after it in the same process.
    import triton  # noqa: F401
    import triton.language  # noqa: F401
except ImportError:
    pass

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=400, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
