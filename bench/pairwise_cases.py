"""The cases of the pairwise-family benchmark (`python -m bench.pairwise`) and their random inputs.

A case is one loss at one batch shape, B queries x L document slots, forward and backward in float32:
  lambdaloss  LambdaLoss with sentence-transformers' default NDCGLoss2++ weighting
  ranknet     LambdaLoss without weights (RankNet)
  listnet     ListNet
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

LOSSES = ("lambdaloss", "ranknet", "listnet")
# 16 x 10: the training recipe's batch; 64 x 240 and 256 x 1000: re-ranking lists of a few hundred to a thousand
# candidates; 16 x 4096: long lists, where (B, L, L) pair tensors reach gigabytes.
DEFAULT_SHAPES = ((16, 10), (64, 240), (256, 1000), (16, 4096))
QUICK_SHAPES = ((16, 10), (64, 240))
LABEL_GRADES = 5  # labels 0..4, as graded relevance judgements


@dataclass(frozen=True)
class PairwiseCase:
    loss: str
    B: int
    L: int
    # What bench.check reads of a case: every pairwise case is float32 scores, forward and backward.
    dtype = "float32"
    direction = "fwd+bwd"

    def name(self) -> str:
        return f"{self.loss}/B{self.B}xL{self.L}"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class PairwiseInputs:
    """One batch: `scores` a float32 leaf that requires grad, graded labels (float32), per-row lengths."""

    scores: torch.Tensor   # (B, L)
    labels: torch.Tensor   # (B, L) float32 in 0..LABEL_GRADES-1, also at padding (ignored there)
    lengths: torch.Tensor  # (B,) int64, real documents first in each row

    def valid_mask(self) -> torch.Tensor:
        return torch.arange(self.scores.shape[1], device=self.lengths.device) < self.lengths[:, None]

    def to(self, device: torch.device) -> "PairwiseInputs":
        """The same batch on `device`, its scores a leaf there (`scores.to` alone would be a non-leaf copy, whose
        gradient autograd.grad could not return); itself where it is on `device` already."""
        if self.scores.device == torch.device(device):
            return self
        return PairwiseInputs(self.scores.detach().to(device).requires_grad_(True), self.labels.to(device),
                              self.lengths.to(device))


def cases_for(losses, shapes) -> list[PairwiseCase]:
    """Every loss at every shape, shape by shape (the small shapes of every loss first)."""
    return [PairwiseCase(loss, B, L) for B, L in shapes for loss in losses]


def make_inputs(case: PairwiseCase, seed: int) -> PairwiseInputs:
    """Scores ~ N(0, 2) (a cross-encoder's spread of logits; distinct, so that every implementation's sort by
    score gives one order), graded labels with ties (so that pairs of equal labels are left out, as in real
    data), and ragged rows: lengths uniform in [ceil(L/2), L], row 0 full so the padded width is L."""
    gen = torch.Generator().manual_seed(seed)
    scores = (2.0 * torch.randn(case.B, case.L, generator=gen)).requires_grad_(True)
    labels = torch.randint(0, LABEL_GRADES, (case.B, case.L), generator=gen).float()
    lengths = torch.randint((case.L + 1) // 2, case.L + 1, (case.B,), generator=gen)
    lengths[0] = case.L
    return PairwiseInputs(scores, labels, lengths)


def counted_pairs(labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B,) the pairs (i, j) of real documents with label_i > label_j in each row (finite labels): the pairs
    LambdaLoss and RankNet count (every scheme but NDCGLoss1), found without a (B, L, L) tensor."""
    keys = labels.double().masked_fill(~valid, float("inf"))  # padding sorts last and is below nothing
    ordered = keys.sort(dim=1).values
    below = torch.searchsorted(ordered.contiguous(), keys.contiguous(), side="left")  # real labels < label_i
    return torch.where(valid, below, 0).sum(dim=1)
