"""`python -m tools.host_profile` end to end on the CPU (the PyTorch path; no timing is asserted)."""

import json

import torch

from tools import host_profile


def test_host_profile_times_every_part_and_writes_its_files(tmp_path, capsys):
    assert host_profile.main(["--shapes", "3x4", "--out", str(tmp_path), "--min-seconds", "0.001",
                              "--profile-calls", "2"]) == 0
    (result,) = tmp_path.glob("host-profile-*.json")
    rows = json.loads(result.read_text())["rows"]
    parts = {row["part"] for row in rows}
    assert {"autograd floor fwd+bwd", "autograd floor fwd+bwd, device threads off",
            "listmle_loss fwd+bwd validate=False", "reference eager fwd+bwd"} <= parts
    assert all(row["ms"] > 0 and (row["B"], row["L"]) == (3, 4) for row in rows)
    if not torch.cuda.is_available():  # interpreted Triton is never timed
        assert not any("Triton" in part for part in parts)
    text = next(tmp_path.glob("host-profile-*.txt")).read_text()
    # (a CUDA machine without CUPTI records the profilers' failure instead, after the timings)
    assert ("torch.profiler" in text and "cProfile" in text) or (torch.cuda.is_available() and
                                                                 "profilers failed" in text)
    assert torch.autograd.is_multithreading_enabled()  # restored after the device-threads-off timings


def test_the_one_op_function_takes_listmle_functions_arguments():
    scores = torch.randn(2, 3, requires_grad=True)
    loss = host_profile.OneOpFunction.apply(scores, None, None, None, None, True, "stable", None, "mean", False,
                                            "torch")
    (grad,) = torch.autograd.grad(loss, scores)
    assert torch.equal(grad, torch.ones(2, 3))
