"""torch.compile and the registered operator `torch.ops.listmle_kernels.listmle_rows`."""

import pytest
import torch

from listmle_kernels import listmle_loss
from listmle_kernels.ops import listmle_rows

from cases import DEVICE


def sample(seed=0, batch=4, length=7):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, length, generator=gen).to(DEVICE)
    labels = torch.randint(0, 3, (batch, length), generator=gen).to(DEVICE)
    lengths = torch.tensor([7, 3, 0, 5], device=DEVICE)
    return scores, labels, lengths


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_opcheck(backend):
    scores, labels, lengths = sample()
    weights = torch.rand(4, 7, device=DEVICE)
    for args in [
        (scores.requires_grad_(), None, None, lengths, None, 0, False, 0, 1, True, backend),
        (scores.detach(), labels, scores.detach() > 0, None, weights, 2, False, 0, 4, True, backend),
        (scores.detach(), labels, None, None, None, 1, True, 7, 3, False, backend),
    ]:
        torch.library.opcheck(listmle_rows, args)  # schema, fake tensor, autograd, aot dispatch


def test_fullgraph_compile_matches_eager():
    torch._dynamo.reset()
    model = torch.nn.Linear(5, 1).to(DEVICE)
    features = torch.randn(4, 7, 5, device=DEVICE)
    _, labels, lengths = sample()

    def step(features):
        scores = model(features).squeeze(-1)
        return listmle_loss(scores, labels, lengths=lengths, lambda_weight="plistmle", respect_input_order=False)

    eager = step(features)
    (eager_grad,) = torch.autograd.grad(eager, model.weight)
    compiled = torch.compile(step, fullgraph=True)(features)
    (compiled_grad,) = torch.autograd.grad(compiled, model.weight)
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(compiled_grad, eager_grad)
