"""tools.sass_count compiles the kernel and the minimal kernel for sm_90 and counts them (no GPU needed; not under
the interpreter); the minimal kernel computes ListMLE (checked against the oracle, interpreted)."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

from reference import listmle_reference  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


RUN_MINIMAL = """
import json, sys, torch
from tools.minimal_listmle import minimal_listmle
batch, length, rows = map(int, sys.argv[1:])
generator = torch.Generator().manual_seed(batch * length)
scores = torch.randn(batch, length, generator=generator) * 4
lengths = torch.randint(1, length + 1, (batch,), generator=generator)
lengths[0] = length
scores[torch.arange(length)[None, :] >= lengths[:, None]] = float("nan")  # padding is never read
loss, grad = minimal_listmle(scores, lengths, row_divisor=batch, rows=rows)
print(json.dumps(dict(scores=scores.tolist(), lengths=lengths.tolist(), loss=loss.tolist(), grad=grad.tolist())))
"""


@pytest.mark.parametrize("batch, length, rows", [(5, 37, 1), (6, 16, 4), (3, 200, 2)])
def test_minimal_kernel_matches_the_oracle(batch, length, rows):
    env = dict(os.environ, TRITON_INTERPRET="1")  # its own process: triton picks the interpreter at import
    run = subprocess.run([sys.executable, "-c", RUN_MINIMAL, str(batch), str(length), str(rows)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    lengths = torch.tensor(result["lengths"])
    padding = torch.arange(length)[None, :] >= lengths[:, None]
    loss, grad = torch.tensor(result["loss"]), torch.tensor(result["grad"])

    leaf = torch.tensor(result["scores"], dtype=torch.float64).nan_to_num(0.0).requires_grad_(True)
    expected = listmle_reference(leaf, lengths=lengths, reduction="none")
    (expected_grad,) = torch.autograd.grad(expected.sum() / batch, leaf)
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=2e-5, atol=2e-5 * expected.abs().max().item())
    torch.testing.assert_close(grad.double(), expected_grad, rtol=2e-5, atol=2e-5)
    assert (grad[padding] == 0).all()


def test_counts_each_variant_against_the_minimal_kernel():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a real compile
    code = ("import json; from tools import sass_count; "
            "print(json.dumps(sass_count.main(['--shape', '64x128'])))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(run.stdout.strip().splitlines()[-1])
    assert [row["variant"] for row in rows] == ["ListMLE, input order", "p-ListMLE, input order",
                                                "ListMLE, counted in kernel", "ListMLE, sorted, int32 keys",
                                                "ListMLE, sorted, int64 keys", "tl.sort alone, i64 keys",
                                                "tl.sort alone, i32 keys", "random ties, int32 keys",
                                                "random ties, int64 keys"]
    variants = {row["variant"]: row for row in rows}
    listmle, counted = rows[0], variants["ListMLE, counted in kernel"]
    narrow, sort = variants["ListMLE, sorted, int32 keys"], variants["ListMLE, sorted, int64 keys"]
    sort_64, sort_32 = variants["tl.sort alone, i64 keys"], variants["tl.sort alone, i32 keys"]
    random_narrow, random_ties = variants["random ties, int32 keys"], variants["random ties, int64 keys"]
    # The kernel's sort does at least what sorting its keys alone does; int32 keys cost less
    assert sort_32["linear"]["sass"] < sort_64["linear"]["sass"] < sort["linear"]["sass"]
    assert sort_32["linear"]["sass"] < narrow["linear"]["sass"] < sort["linear"]["sass"]
    assert sort_64["linear"]["sass"] < random_ties["linear"]["sass"]
    assert narrow["linear"]["sass"] < random_narrow["linear"]["sass"] < random_ties["linear"]["sass"]
    # Counting label groups skips the sort: below sorting int32 keys, within 3x input order
    assert counted["linear"]["sass"] < narrow["linear"]["sass"] and counted["over_input_order"] <= 3
    assert random_ties["RANDOM_TIES"] and random_narrow["RANDOM_TIES"]
    assert not (sort["RANDOM_TIES"] or narrow["RANDOM_TIES"] or counted["RANDOM_TIES"])
    # The by-labels variants are cut from one kernel, uncut the same for each tie policy
    assert counted["whole"] == sort["whole"] == narrow["whole"] and counted["whole"]["sass"] > sort["linear"]["sass"]
    assert random_ties["whole"] == random_narrow["whole"]
    assert "graded" in counted["labels"] and "random ties" in random_ties["labels"] and listmle["labels"] == "not read"
    for row in rows:
        assert row["shape"] == "64x128" and row["CHUNKS"] == 1
        assert (row["ROWS"], row["BLOCK"], row["warps"]) == (listmle["ROWS"], listmle["BLOCK"], listmle["warps"])
        # Cutting the log-space branch out leaves a strict subset of the kernel, straight-line code
        assert 0 < row["linear"]["sass"] <= row["whole"]["sass"]
        assert row["linear"]["sass"] < row["whole"]["sass"] or row["variant"].startswith("tl.sort alone")
        assert row["linear"]["straight_line"] and row["minimal"]["straight_line"]
        assert row["linear_sass_per_slot"] == row["linear"]["sass"] / (row["ROWS"] * row["BLOCK"] / (32 * row["warps"]))
        assert row["over_minimal"] == row["linear"]["sass"] / row["minimal"]["sass"]
        assert row["over_input_order"] == row["linear"]["sass"] / listmle["linear"]["sass"]
        assert 0 < row["linear"]["registers"] <= 255 and 0 < row["minimal"]["registers"] <= 255
    # The general kernel does at least the minimal kernel's work; weights and the sort add to it
    assert listmle["over_minimal"] >= 1
    assert rows[1]["over_input_order"] > 1 and rows[2]["over_input_order"] > 1
    # Rows given by lengths, input order: a thread's 4 float32 scores come in one 16-byte load, not four
    assert listmle["linear"]["memory"].get("LDG.E.128", 0) >= 1
    assert "LDG.E" not in listmle["linear"]["memory"], listmle["linear"]["memory"]
    assert listmle["minimal"]["memory"].get("LDG.E.128", 0) >= 1


def test_straight_line_sees_a_backward_branch():
    from tools.sass_count import straight_line

    assert straight_line([(0x10, "FADD", " R1, R2, R3"), (0x20, "EXIT", ""), (0x30, "BRA", " 0x30")])
    assert not straight_line([(0x10, "FADD", " R1, R2, R3"), (0x20, "BRA", " 0x10"), (0x30, "EXIT", "")])


def test_counts_lambdaloss_loop_per_pair():
    """The LambdaLoss tile kernel compiles at the launcher's float32 tile without spills, and its loop over tiles
    of j is found: a per-pair count exists and is at least the cell's three MUFU ops (exp, two reciprocals)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a real compile
    code = ("import json; from tools import sass_count; from listmle_kernels import triton_lambdaloss as t; "
            "print(json.dumps(sass_count.count_lambdaloss(tiles=(('fp32', t.PAIR_TILE, 4),), "
            "schemes=('none', 'ndcgloss2pp'))))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(run.stdout.strip().splitlines()[-1])
    assert [row["scheme"] for row in rows] == ["none", "ndcgloss2pp"]
    for row in rows:
        assert row["spills"] == [0, 0], row["resources"]
        assert row["loop_ops"]["MUFU"] >= 3 * row["cells_per_thread"]
        assert 3 <= row["sass_per_pair"] < 200
