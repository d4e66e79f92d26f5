"""Tests of `python -m tools.tune` that need no GPU (that a launch configuration changes no result is
tested in tests/test_properties.py)."""

import pytest
import torch

from tools import tune
from listmle_kernels import triton_listmle as tk


@pytest.mark.parametrize("length, order", [(8, "input"), (100, "labels"), (4096, "labels"), (16384, "input"),
                                           (16384, "labels")])
def test_candidates_cover_the_heuristic_and_stay_in_range(length, order):
    sort_in_kernel, block, chunks = tk.row_geometry(length, order == "labels")
    assert block >= min(length, tk.MAX_BLOCK) or chunks > 1
    options = tune.candidates(block, chunks)
    assert tk.launch_config(block, chunks, 1 << 20, sort_in_kernel) in options
    for rows, warps in options:
        assert 1 <= rows * block // (warps * 32) <= 64
        assert rows == 1 or chunks == 1


def test_forced_launch_config_applies_inside_the_block_only():
    original = tk.launch_config
    with tune.forced_launch_config(4, 2):
        assert tk.launch_config(128, 1, 1000, False) == (4, 2)
        assert tk.launch_config(4096, 4, 3, True) == (4, 2)
    assert tk.launch_config is original


def test_tune_refuses_to_time_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert tune.main(["--L", "8"]) == 2
    assert "needs CUDA" in capsys.readouterr().err
