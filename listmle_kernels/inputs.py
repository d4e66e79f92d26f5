"""The checked arguments both backends of each loss consume (`ListMLEInputs`, `LambdaLossInputs`, `ListNetInputs`),
and which of their documents are real.

`validation` builds them from the public arguments, so the backends never see an option they
have to re-interpret.
"""

from dataclasses import dataclass
from typing import Optional

import torch

WEIGHTS_NONE, WEIGHTS_PLISTMLE, WEIGHTS_TENSOR = 0, 1, 2


@dataclass
class ListMLEInputs:
    scores: torch.Tensor                 # (B, L) floating
    mask: Optional[torch.Tensor]         # (B, L) bool, or None
    lengths: Optional[torch.Tensor]      # (B,) integer, or None (never both with mask)
    labels: Optional[torch.Tensor]       # (B, L); only kept when sorting by labels
    weight_kind: int                     # WEIGHTS_NONE / WEIGHTS_PLISTMLE / WEIGHTS_TENSOR
    weights: Optional[torch.Tensor]      # (B, L) raw per-rank weights for WEIGHTS_TENSOR
    random_ties: bool
    backend: str = "torch"               # "triton" or "torch", resolved

    @property
    def sort_by_labels(self) -> bool:
        return self.labels is not None


def real_count(scores, mask, lengths) -> torch.Tensor:
    """(B,) number of real documents per row."""
    if mask is not None:
        return mask.sum(1)
    if lengths is not None:
        return lengths.long()
    return torch.full((scores.shape[0],), scores.shape[1], dtype=torch.long, device=scores.device)


def real_mask(scores, mask, lengths) -> torch.Tensor:
    """(B, L) bool, True at real documents."""
    if mask is not None:
        return mask
    positions = torch.arange(scores.shape[1], device=scores.device)
    return positions[None, :] < real_count(scores, mask, lengths)[:, None]


# LambdaLoss weighting schemes (sentence-transformers' names, lower case); a scheme's index is its code in kernels.
WEIGHTING_SCHEMES = ("none", "ndcgloss1", "ndcgloss2", "lambdarank", "ndcgloss2pp")
SCHEME_NONE, SCHEME_NDCGLOSS1, SCHEME_NDCGLOSS2, SCHEME_LAMBDARANK, SCHEME_NDCGLOSS2PP = range(5)


@dataclass
class LambdaLossInputs:
    """The checked arguments of LambdaLoss (RankNet is scheme SCHEME_NONE), as both backends consume them."""
    scores: torch.Tensor                 # (B, L) floating, any strides
    labels: torch.Tensor                 # (B, L) float32; -inf at a real document: it takes a position, no pairs
    mask: Optional[torch.Tensor]         # (B, L) bool, or None
    lengths: Optional[torch.Tensor]      # (B,) integer, or None (never both with mask)
    scheme: int                          # index into WEIGHTING_SCHEMES
    k: int                               # pairs need a position < k; 0: every position
    sigma: float
    mu: float                            # NDCGLoss2++'s weight of NDCGLoss2
    eps: float                           # floor of maxDCG
    log_scale: float                     # 1 / ln 2 for reduction_log="binary", else 1
    backend: str = "torch"               # "triton" or "torch", resolved


@dataclass
class ListNetInputs:
    """The checked arguments of ListNet, as both backends consume them."""
    scores: torch.Tensor                 # (B, L) floating, any strides
    labels: torch.Tensor                 # (B, L) float32; -inf at a real document: target probability 0
    mask: Optional[torch.Tensor]
    lengths: Optional[torch.Tensor]
    backend: str = "torch"
