"""pytest-benchmark entry points for the same cases as `python -m bench --quick`.

    pytest bench/ --benchmark-only                          # every case x implementation
    pytest bench/ --benchmark-only -k "B256xL100 and fwd+bwd"
    pytest bench/ --benchmark-only --benchmark-max-time=0.2 # shorter

Each benchmark first checks the implementation's loss and gradient against the vectorised reference
(a wrong answer fails the test instead of being timed). Timings group by case, so pytest-benchmark's
table compares the implementations of one case. Without CUDA only the PyTorch implementations run;
interpreted Triton is never benchmarked (bench.impls reports it unavailable).
"""

import pytest
import torch

from bench import check, timing
from bench.__main__ import build_cases, parse_args
from bench.cases import make_inputs
from bench.impls import all_impls

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = build_cases(parse_args(["--quick"]), DEVICE)
IMPLS = all_impls(validate=False)
if DEVICE.type == "cpu":
    torch.set_num_threads(1)  # as python -m bench: see its --threads
next(i for i in IMPLS if i.name == "reference_compiled").groups = ("grid",)  # as python -m bench
PAIRS = [(case, impl) for case in CASES for impl in IMPLS]


@pytest.mark.parametrize(("case", "impl"), PAIRS, ids=[f"{c.name()}-{i.name}" for c, i in PAIRS])
def test_loss(benchmark, case, impl):
    available, reason = impl.availability(DEVICE)
    if not available:
        pytest.skip(reason)
    supported, why_not = impl.accepts(case)
    if not supported:
        pytest.skip(why_not)
    inputs = make_inputs(case, DEVICE, seed=0)
    prepared = impl.prepare(case, inputs)
    verdict = check.compare(case, check.loss_and_grad(prepared, case), check.reference_result(case, inputs),
                            inputs.valid_mask())
    assert verdict.ok, verdict.message
    benchmark.group = case.name()
    benchmark.extra_info.update(case.as_dict())
    step = timing.make_step(prepared, case)
    if DEVICE.type == "cuda":
        def synced_step():
            step()
            torch.cuda.synchronize()  # pytest-benchmark times on the host

        benchmark(synced_step)
    else:
        benchmark(step)
