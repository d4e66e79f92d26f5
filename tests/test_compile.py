"""torch.compile and the registered operator `torch.ops.listmle_kernels.listmle_rows`."""

import pytest
import torch

from listmle_kernels import listmle_loss
from listmle_kernels.custom_op import listmle_rows

from cases import DEVICE


def sample(seed=0, batch=4, length=7):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, length, generator=gen).to(DEVICE)
    labels = torch.randint(0, 3, (batch, length), generator=gen).to(DEVICE)
    lengths = torch.tensor([7, 3, 0, 5], device=DEVICE)
    return scores, labels, lengths


def assert_compiled_matches_eager(step, features, weight):
    """step(features) and its gradient in `weight`: torch.compile(fullgraph=True) as eager."""
    eager = step(features)
    (eager_grad,) = torch.autograd.grad(eager, weight)
    compiled = torch.compile(step, fullgraph=True)(features)
    (compiled_grad,) = torch.autograd.grad(compiled, weight)
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(compiled_grad, eager_grad)


def test_operator_name_and_schema_are_the_public_ones():
    """Compiled programs and exported graphs name the operator by this string: it must not change."""
    assert str(torch.ops.listmle_kernels.listmle_rows.default._schema) == (
        "listmle_kernels::listmle_rows(Tensor scores, Tensor? labels, Tensor? mask, Tensor? lengths, Tensor? weights, "
        "SymInt weight_kind, bool random_ties, SymInt seed, SymInt row_divisor, bool need_grad, str backend) "
        "-> (Tensor, Tensor)")
    assert torch.ops.listmle_kernels.listmle_rows.default is listmle_rows._opoverload


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_opcheck(backend):
    scores, labels, lengths = sample()
    weights = torch.rand(4, 7, device=DEVICE)
    for args in [
        (scores.requires_grad_(), None, None, lengths, None, 0, False, 0, 1, True, backend),
        (scores.detach(), labels, scores.detach() > 0, None, weights, 2, False, 0, 4, True, backend),
        (scores.detach(), labels, None, None, None, 1, True, 7, 3, False, backend),
        # transposed scores and mask: the gradient is contiguous all the same, as the fake says
        (scores.detach().t().contiguous().t().requires_grad_(), None, (scores > 0).t().contiguous().t(),
         None, None, 0, False, 0, 1, True, backend),
    ]:
        torch.library.opcheck(listmle_rows, args)  # schema, fake tensor, autograd, aot dispatch


@pytest.mark.parametrize("backend", ["torch", "triton"])  # without CUDA, the Triton one runs interpreted
def test_fullgraph_compile_matches_eager(backend):
    torch._dynamo.reset()
    model = torch.nn.Linear(5, 1).to(DEVICE)
    features = torch.randn(4, 7, 5, device=DEVICE)
    _, labels, lengths = sample()

    def step(features):
        scores = model(features).squeeze(-1)
        return listmle_loss(scores, labels, lengths=lengths, lambda_weight="plistmle", respect_input_order=False,
                            backend=backend)

    assert_compiled_matches_eager(step, features, model.weight)


def test_fullgraph_compile_draws_random_ties_from_the_global_generator():
    torch._dynamo.reset()
    scores = torch.randn(4, 7, device=DEVICE, requires_grad=True)
    binary = torch.randint(0, 2, (4, 7), device=DEVICE)
    distinct = torch.rand(4, 7, device=DEVICE)

    def loss(labels):
        return listmle_loss(scores, labels, respect_input_order=False, ties="random")

    compiled = torch.compile(loss, fullgraph=True)
    # distinct labels: one order whatever the tie bits, so compiled equals eager
    torch.testing.assert_close(compiled(distinct), loss(distinct))
    torch.manual_seed(0)
    first = torch.stack([compiled(binary).detach() for _ in range(8)])
    torch.manual_seed(0)
    again = torch.stack([compiled(binary).detach() for _ in range(8)])
    torch.testing.assert_close(first, again, rtol=0, atol=0)  # seeded by torch.manual_seed
    assert len(set(first.tolist())) > 1  # a new seed each call, not one baked into the graph


def test_fullgraph_compile_names_the_generator_it_cannot_trace():
    torch._dynamo.reset()
    scores, labels, _ = sample()
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    compiled = torch.compile(lambda s: listmle_loss(s, labels, respect_input_order=False, ties="random",
                                                    generator=generator), fullgraph=True)
    with pytest.raises(Exception, match="ties='random' with a generator cannot be compiled"):
        compiled(scores)


def test_fullgraph_compile_skips_the_value_checks():
    """validate=True reads no values inside torch.compile (they need data): a NaN label at a real document, which
    eagerly is a ValueError, compiles and runs unchecked."""
    torch._dynamo.reset()
    scores, labels, _ = sample()
    labels = labels.float()
    labels[1, 2] = float("nan")

    def loss(s):
        return listmle_loss(s, labels, respect_input_order=False, reduction="none", backend="torch")

    with pytest.raises(ValueError, match="labels contain NaN at a real document"):
        loss(scores)
    assert torch.compile(loss, fullgraph=True, backend="aot_eager")(scores).shape == (4,)


def test_a_second_derivative_inside_compile_reads_as_unused():
    """Compiled, the gradient is declared non-differentiable: differentiating it again is an error from
    torch.autograd.grad (the scores appear unused) and zeros from torch.autograd.functional.hessian."""
    torch._dynamo.reset()
    scores = sample()[0].double().requires_grad_(True)
    compiled = torch.compile(lambda s: listmle_loss(s, reduction="sum", backend="torch"), fullgraph=True,
                             backend="aot_eager")
    (grad,) = torch.autograd.grad(compiled(scores), scores, create_graph=True)
    with pytest.raises(RuntimeError, match="appears to not have been used in the graph"):
        torch.autograd.grad(grad.sum(), scores)
    assert (torch.autograd.functional.hessian(compiled, scores) == 0).all()


def test_pairwise_operator_names_and_schemas_are_the_public_ones():
    assert str(torch.ops.listmle_kernels.lambdaloss_rows.default._schema) == (
        "listmle_kernels::lambdaloss_rows(Tensor scores, Tensor labels, Tensor? mask, Tensor? lengths, SymInt scheme, "
        "SymInt k, float sigma, float mu, float eps, float log_scale, bool need_grad, str backend) "
        "-> (Tensor, Tensor, Tensor)")
    assert str(torch.ops.listmle_kernels.listnet_rows.default._schema) == (
        "listmle_kernels::listnet_rows(Tensor scores, Tensor labels, Tensor? mask, Tensor? lengths, "
        "SymInt row_divisor, bool need_grad, str backend) -> (Tensor, Tensor)")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_pairwise_opcheck(backend):
    from listmle_kernels.custom_op import lambdaloss_rows, listnet_rows
    scores, labels, lengths = sample()
    labels = labels.float()
    for args in [
        (scores.requires_grad_(), labels, None, lengths, 4, 0, 1.0, 10.0, 1e-10, 1.4426950408889634, True, backend),
        (scores.detach(), labels, scores.detach() > 0, None, 1, 3, 0.5, 10.0, 1e-10, 1.0, True, backend),
        (scores.detach().double(), labels, None, None, 0, 0, 1.0, 10.0, 1e-10, 1.0, False, backend),
    ]:
        torch.library.opcheck(lambdaloss_rows, args)
    for args in [(scores.detach().requires_grad_(), labels, None, lengths, 4, True, backend),
                 (scores.detach(), labels, scores.detach() > -0.5, None, 1, False, backend)]:
        torch.library.opcheck(listnet_rows, args)


@pytest.mark.parametrize("backend", ["torch", "triton"])  # without CUDA, the Triton one runs interpreted
@pytest.mark.parametrize("loss", ["lambda_loss", "listnet_loss"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_pairwise_fullgraph_compile_matches_eager(backend, loss, reduction):
    import listmle_kernels
    torch._dynamo.reset()
    model = torch.nn.Linear(5, 1).to(DEVICE)
    features = torch.randn(4, 7, 5, device=DEVICE)
    _, labels, lengths = sample()
    options = dict(weighting_scheme="lambdarank", k=3) if loss == "lambda_loss" else {}

    def step(features):
        scores = model(features).squeeze(-1)
        return getattr(listmle_kernels, loss)(scores, labels, lengths=lengths, reduction=reduction, backend=backend,
                                              **options).sum()

    assert_compiled_matches_eager(step, features, model.weight)
