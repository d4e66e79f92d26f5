"""Test setup: the Triton kernels run interpreted on the CPU unless a GPU is present.

Hypothesis profiles: "ci" (default; the whole suite in a few minutes on 2 cores) and "thorough"
(HYPOTHESIS_PROFILE=thorough, for local runs).
"""

import os

# MKL's matrix products may round differently with the alignment of their buffers (its "conditional
# numerical reproducibility"). A resumed training run allocates differently from an uninterrupted one: on
# a 2-core AVX-512 machine its gradients drifted by an ulp and test_resume_continues_exactly failed. The
# compatible code path is bitwise reproducible; MKL reads this once, at its first call.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

import pytest  # noqa: E402
import torch  # noqa: E402

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


@pytest.fixture(params=["triton scale kernel", "torch multiply"])
def backward_scaling(request, monkeypatch):
    """The Triton backend's backward scales the saved gradient with triton_scale.py's kernel from
    TRITON_SCALE_MIN_ELEMENTS on and with a torch multiply below it: a test taking this fixture runs both."""
    from listmle_kernels import autograd
    if request.param == "triton scale kernel":
        monkeypatch.setattr(autograd, "TRITON_SCALE_MIN_ELEMENTS", 0)
    return request.param
