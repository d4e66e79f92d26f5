"""`ListMLEInputs`, the checked arguments both backends consume, and which of their documents are real.

`validation.parse_inputs` builds it from the public arguments, so the backends never see an option they
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
