"""The reference result of each pairwise-family case, and its self-check against the literal oracles.

Before anything is timed, each implementation's loss and gradient are compared (bench.check.compare: float32,
1e-4 relative loss, 1e-4 of the largest gradient entry, exactly 0 at padding) with a reference computed on the
very inputs to be timed:

  * ListNet: `reference.listnet_reference`, the per-row oracle, in float64.
  * LambdaLoss and RankNet: sentence-transformers' own loss, run over blocks of rows small enough that its
    (rows, L, L) tensors stay near 0.6 GiB, and combined by pair counts (its loss is minus the sum of the counted
    pair terms over their number, so a block's loss times its count is its sum). The literal oracle
    (`reference.lambdaloss_reference`) loops over pairs in Python: minutes at 64 x 240. At start-up the
    blocked reference is checked against it on small cases, in blocks of one and two rows.
"""

from __future__ import annotations

import itertools

import torch

from bench import check
from bench.pairwise_cases import PairwiseCase, PairwiseInputs, counted_pairs, make_inputs
from bench.pairwise_impls import SentenceTransformers

# Pair slots (rows x L x L) of one block of the reference: sentence-transformers' LambdaLoss held 131 MiB at
# 64 x 240, about 9 float32 (B, L, L) tensors (python -m bench.pairwise records the peers' peaks): ~0.6 GiB here.
REFERENCE_BLOCK_PAIRS = 1 << 24


def reference_result(case: PairwiseCase, inputs: PairwiseInputs, block_pairs: int = REFERENCE_BLOCK_PAIRS):
    """(loss, gradient (B, L)), float32, of the case's loss on these inputs."""
    if case.loss == "listnet":
        from reference import listnet_reference

        scores = inputs.scores.detach().double().requires_grad_(True)
        loss = listnet_reference(scores, inputs.labels, lengths=inputs.lengths, reduction="mean")
        (grad,) = torch.autograd.grad(loss, scores)
        return loss.detach().float(), grad.float()
    return sentence_transformers_by_row_blocks(case, inputs, block_pairs)


def sentence_transformers_by_row_blocks(case, inputs, block_pairs=REFERENCE_BLOCK_PAIRS):
    """sentence-transformers' LambdaLoss / RankNetLoss over the whole batch, a block of rows at a time."""
    batch, length = inputs.scores.shape
    counts = counted_pairs(inputs.labels, inputs.valid_mask())
    total = max(int(counts.sum()), 1)
    rows_per_block = max(1, block_pairs // (length * length))
    loss = torch.zeros((), dtype=torch.float64)
    grad = torch.zeros(batch, length)
    for start in range(0, batch, rows_per_block):
        rows = slice(start, start + rows_per_block)
        block_loss, block_grad = check.loss_and_grad(SentenceTransformers().prepare_rows(case, inputs, rows), case)
        share = max(int(counts[rows].sum()), 1) / total  # its loss is its sum over max(its count, 1)
        loss += block_loss.double() * share
        grad[rows] = block_grad * share
    return loss.float(), grad


def self_check_reference() -> tuple[bool, str]:
    """The blocked reference (blocks of 1 and 2 rows) == the literal oracles on small ragged cases of each
    pairwise loss; the ListNet reference is the oracle itself."""
    try:
        from reference import lambdaloss_reference
        import sentence_transformers  # noqa: F401
    except Exception as exc:
        return False, f"not checked: {type(exc).__name__}: {exc}"
    failures, checked = [], 0
    for loss, block_rows, seed in itertools.product(("lambdaloss", "ranknet"), (1, 2), (0, 1)):
        case = PairwiseCase(loss, 5, 9)
        inputs = make_inputs(case, seed=seed)
        got = sentence_transformers_by_row_blocks(case, inputs, block_pairs=block_rows * 81)
        scores = inputs.scores.detach().double().requires_grad_(True)
        oracle = lambdaloss_reference(scores, inputs.labels, lengths=inputs.lengths,
                                      weighting_scheme="ndcgloss2pp" if loss == "lambdaloss" else "none")
        (oracle_grad,) = torch.autograd.grad(oracle, scores)
        verdict = check.compare(case, got, (oracle.detach().float(), oracle_grad.float()), inputs.valid_mask())
        checked += 1
        if not verdict.ok:
            failures.append(f"{loss}, blocks of {block_rows} rows, seed {seed}: {verdict.message}")
    if failures:
        return False, "blocked sentence-transformers reference != oracle: " + "; ".join(failures)
    return True, f"blocked sentence-transformers reference matches reference.lambdaloss_reference on {checked} cases"
