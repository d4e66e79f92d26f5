"""torch.autograd.gradcheck of the PyTorch path's analytic gradient in float64."""

import pytest
import torch

from listmle_kernels import listmle_loss


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weight", [None, "plistmle", "tensor"])
@pytest.mark.parametrize("sort", [False, True])
def test_gradcheck(reduction, weight, sort):
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    labels = torch.randint(0, 3, (3, 6), generator=gen)
    mask = torch.rand(3, 6, generator=gen) > 0.25
    if weight == "tensor":
        weight = torch.rand(3, 6, dtype=torch.float64, generator=gen)
    assert torch.autograd.gradcheck(
        lambda s: listmle_loss(s, labels, mask=mask, lambda_weight=weight, respect_input_order=not sort,
                               reduction=reduction, backend="torch"), (scores,))
