"""Both backends against the literal reference: loss and gradient, every option, every dtype."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from listmle_kernels import listmle_loss
from reference import listmle_reference

from cases import BACKENDS, GRAD_TOL, LOSS_TOL, assert_close, listmle_problems, loss_and_grad, to_device


@pytest.mark.parametrize("backend", BACKENDS)
@given(problem=listmle_problems(), grad_seed=st.integers(0, 1000))
def test_loss_and_gradient_match_reference(backend, problem, grad_seed):
    scores, labels, kwargs = to_device(*problem)
    expected_shape = (scores.shape[0],) if kwargs["reduction"] == "none" else ()
    grad_output = torch.rand(expected_shape, generator=torch.Generator().manual_seed(grad_seed)) + 0.5
    grad_output = grad_output.to(scores.device)

    loss, grad = loss_and_grad(lambda s: listmle_loss(s, labels, backend=backend, **kwargs), scores,
                               grad_output.float() if scores.dtype != torch.float64 else grad_output.double())
    ref_loss, ref_grad = loss_and_grad(lambda s: listmle_reference(s, labels, **kwargs), scores.double(),
                                       grad_output.double())

    assert loss.dtype == (torch.float64 if scores.dtype == torch.float64 else torch.float32)
    assert grad.dtype == scores.dtype
    assert loss.shape == expected_shape
    assert_close(loss, ref_loss, scores.dtype, LOSS_TOL, scale=max(1.0, ref_loss.abs().max().item()))
    assert_close(grad, ref_grad, scores.dtype, GRAD_TOL, scale=max(1.0, ref_grad.abs().max().item()))
    real = kwargs.get("mask")
    if real is None and "lengths" in kwargs:
        real = torch.arange(scores.shape[1], device=scores.device)[None, :] < kwargs["lengths"][:, None]
    if real is not None:
        assert (grad[~real] == 0).all(), "padding must get exactly zero gradient"


@given(problem=listmle_problems(dtypes=(torch.float32, torch.float64)))
def test_backends_agree(problem):
    """With stable ties the two backends see the same target order; they agree to rounding."""
    scores, labels, kwargs = to_device(*problem)
    results = [loss_and_grad(lambda s: listmle_loss(s, labels, backend=b, reduction="none",
                                                    **{k: v for k, v in kwargs.items() if k != "reduction"}),
                             scores, torch.ones(scores.shape[0], dtype=torch.float64 if scores.dtype == torch.float64
                                                else torch.float32, device=scores.device))
               for b in BACKENDS]
    (loss_a, grad_a), (loss_b, grad_b) = results
    assert_close(loss_a, loss_b, scores.dtype, LOSS_TOL, scale=max(1.0, loss_b.abs().max().item()))
    assert_close(grad_a, grad_b, scores.dtype, GRAD_TOL)


def option_combinations():
    """Every padding x weighting x target order (stable and random ties) x dtype, each with one of the reductions:
    hypothesis' 25 draws a run cover only a few of these products."""
    combos = [(padding, weight, order, dtype)
              for padding in ("none", "mask", "lengths") for weight in ("none", "plistmle", "tensor")
              for order in ("input", "labels-stable", "labels-random") for dtype in ("float32", "bfloat16")]
    return [combo + (("mean", "sum", "none")[i % 3],) for i, combo in enumerate(combos)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padding, weight, order, dtype, reduction", option_combinations())
def test_every_option_combination_matches_reference(backend, padding, weight, order, dtype, reduction):
    gen = torch.Generator().manual_seed(len(padding) * 7 + len(weight) * 5 + len(order) * 3 + len(dtype))
    batch, length, dtype = 5, 13, getattr(torch, dtype)
    scores = torch.randn(batch, length, generator=gen).to(dtype)
    if order == "labels-random":  # distinct labels: every tie order is the stable one, so the reference applies
        labels = torch.stack([torch.randperm(length, generator=gen) for _ in range(batch)]).float()
    else:
        labels = torch.randint(0, 3, (batch, length), generator=gen)
    kwargs = dict(respect_input_order=order == "input", reduction=reduction)
    if padding == "mask":
        kwargs["mask"] = torch.rand(batch, length, generator=gen) < 0.6
    elif padding == "lengths":
        kwargs["lengths"] = torch.tensor([13, 0, 7, 1, 10])
    if weight == "plistmle":
        kwargs["lambda_weight"] = "plistmle"
    elif weight == "tensor":
        kwargs["lambda_weight"] = torch.rand(batch, length, generator=gen, dtype=torch.float64)
    grad_output = torch.rand((batch,) if reduction == "none" else (), generator=gen, dtype=torch.float64) + 0.5
    scores, labels, kwargs = to_device(scores, labels, kwargs)
    grad_output = grad_output.to(scores.device)

    ties = dict(ties="random", generator=torch.Generator().manual_seed(1)) if order == "labels-random" else {}
    loss, grad = loss_and_grad(lambda s: listmle_loss(s, labels, backend=backend, **ties, **kwargs), scores,
                               grad_output.float())
    ref_loss, ref_grad = loss_and_grad(lambda s: listmle_reference(s, labels, **kwargs), scores.double(), grad_output)
    assert_close(loss, ref_loss, dtype, LOSS_TOL, scale=max(1.0, ref_loss.abs().max().item()))
    assert_close(grad, ref_grad, dtype, GRAD_TOL, scale=max(1.0, ref_grad.abs().max().item()))
    if padding != "none":
        real = kwargs.get("mask")
        if real is None:
            real = torch.arange(length, device=scores.device)[None, :] < kwargs["lengths"][:, None]
        assert (grad[~real] == 0).all(), "padding must get exactly zero gradient"


@given(problem=listmle_problems(max_batch=9), ties=st.sampled_from(["stable", "random"]),
       block_elements=st.integers(1, 60))
def test_torch_row_blocks_change_no_bit(problem, ties, block_elements):
    """The PyTorch path takes CPU rows in blocks of about CPU_BLOCK_ELEMENTS documents: any block size gives
    bitwise the losses and gradient of the whole batch in one block, random tie order included, and those
    match the reference."""
    from listmle_kernels import torch_listmle

    scores, labels, kwargs = problem
    kwargs = dict(kwargs, reduction="none", ties=ties)

    grad_output = torch.ones(scores.shape[0], dtype=torch.float64 if scores.dtype == torch.float64 else torch.float32)

    def run():
        generator = torch.Generator().manual_seed(3)
        return loss_and_grad(lambda s: listmle_loss(s, labels, backend="torch", generator=generator, **kwargs), scores,
                             grad_output)

    whole = run()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_listmle, "CPU_BLOCK_ELEMENTS", block_elements)  # blocks of 2 or more rows
        blocked = run()
    for got, expected in zip(blocked, whole):
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
    if ties == "stable":
        ref_kwargs = {k: v for k, v in kwargs.items() if k != "ties"}
        ref_loss, ref_grad = loss_and_grad(lambda s: listmle_reference(s, labels, **ref_kwargs), scores.double(),
                                           torch.ones(scores.shape[0], dtype=torch.float64))
        assert_close(blocked[0], ref_loss, scores.dtype, LOSS_TOL, scale=max(1.0, ref_loss.abs().max().item()))
        assert_close(blocked[1], ref_grad, scores.dtype, GRAD_TOL, scale=max(1.0, ref_grad.abs().max().item()))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("respect_input_order", [True, False])
def test_row_blocks_change_no_bit_where_numpy_takes_exp_and_log(threads, respect_input_order, monkeypatch):
    """A batch of 4 x 1100 documents (one block) takes its exp and log from numpy; in blocks of two rows (2200
    documents, below NUMPY_UNARY_MIN_ELEMENTS) it must take the same ones, or a row's bits would depend on the
    block it falls in (the last, short block of a large batch)."""
    from listmle_kernels import torch_listmle

    gen = torch.Generator().manual_seed(5)
    scores = torch.randn(4, 1100, generator=gen) * 3
    labels = torch.randint(0, 5, (4, 1100), generator=gen)

    def run():
        return loss_and_grad(lambda s: listmle_loss(s, labels, backend="torch", reduction="none",
                                                    respect_input_order=respect_input_order), scores)

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        whole = run()
        monkeypatch.setattr(torch_listmle, "CPU_BLOCK_ELEMENTS", 2200)
        blocked = run()
    finally:
        torch.set_num_threads(previous)
    for got, expected in zip(blocked, whole):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)



@pytest.mark.parametrize("padding", ["mask", "lengths"])
@pytest.mark.parametrize("respect_input_order", [True, False])
def test_torch_row_blocks_change_no_bit_beside_a_wide_row(padding, respect_input_order, monkeypatch):
    """A row whose every slot, padding included, lies within the linear span of its max is shifted by that max
    whether or not a row of its block spans past it (which sends the block through the masked shift): in blocks
    of two rows, the rows beside no wide row get the bits they get in the whole batch, which has one."""
    from listmle_kernels import torch_listmle

    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(4, 8, generator=gen) * 3
    scores[0, 0] += 200.0  # row 0 spans past the linear sums' reach: the whole batch takes the masked shift
    lengths = torch.tensor([8, 8, 5, 5])
    scores[2:, 5:] += 7.0  # padding above the real scores of rows 2 and 3, within the linear span
    labels = torch.randn(4, 8, generator=gen)
    kwargs = dict(respect_input_order=respect_input_order, reduction="none")
    if padding == "mask":
        kwargs["mask"] = torch.arange(8)[None, :] < lengths[:, None]
    else:
        kwargs["lengths"] = lengths

    def run():
        return loss_and_grad(lambda s: listmle_loss(s, labels, backend="torch", **kwargs), scores)

    whole = run()
    monkeypatch.setattr(torch_listmle, "CPU_BLOCK_ELEMENTS", 16)  # blocks of rows (0, 1) and (2, 3)
    blocked = run()
    for got, expected in zip(blocked, whole):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)

@given(problem=listmle_problems())
def test_torch_exp_and_log_by_numpy_match_reference(problem):
    """CPU blocks that torch would take on one thread get their exp and log from numpy (a few ulp, against torch's
    one): forced at every size, the losses and gradient still match the reference."""
    from listmle_kernels import torch_listmle

    scores, labels, kwargs = problem
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_listmle, "NUMPY_UNARY_MIN_ELEMENTS", 0)
        loss, grad = loss_and_grad(lambda s: listmle_loss(s, labels, backend="torch", **kwargs), scores)
    ref_loss, ref_grad = loss_and_grad(lambda s: listmle_reference(s, labels, **kwargs), scores.double())
    assert_close(loss, ref_loss, scores.dtype, LOSS_TOL, scale=max(1.0, ref_loss.abs().max().item()))
    assert_close(grad, ref_grad, scores.dtype, GRAD_TOL, scale=max(1.0, ref_grad.abs().max().item()))


@pytest.mark.parametrize("elements, threads, by_numpy", [(100, 1, False), (5000, 1, True), (5000, 2, True),
                                                         (40000, 1, True), (40000, 2, False)])
def test_exp_and_log_by_numpy_where_torch_takes_one_thread(elements, threads, by_numpy, monkeypatch):
    from listmle_kernels import torch_listmle

    calls = []
    for name in ("exp", "log"):
        ufunc = getattr(torch_listmle.np, name)
        monkeypatch.setattr(torch_listmle.np, name, lambda *args, ufunc=ufunc, **kwargs: calls.append(ufunc)
                            or ufunc(*args, **kwargs))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.rand(elements) + 0.5
        chosen = torch_listmle.numpy_unary(elements, x.is_cpu)
        torch.testing.assert_close(torch_listmle._exp(x, chosen), torch.exp(x))
        torch.testing.assert_close(torch_listmle._log(x, chosen), torch.log(x))
    finally:
        torch.set_num_threads(previous)
    assert len(calls) == (2 if by_numpy else 0)


@pytest.mark.parametrize("padding_offset", [70.0, 79.0, 200.0, float("nan")])
@pytest.mark.parametrize("respect_input_order", [True, False])
def test_torch_padding_above_the_real_scores(padding_offset, respect_input_order):
    """The CPU path shifts a block by each row's max over every slot when the block's scores (padding included)
    span at most the linear span (80 in float32), and masks padding first otherwise: padding up to that far
    above the real scores, past it, or NaN, gives the reference's loss and a zero gradient at padding."""
    gen = torch.Generator().manual_seed(5)
    scores = torch.randn(4, 9, generator=gen)
    lengths = torch.tensor([9, 5, 1, 2])  # (the reference's loss of a row without documents is NaN beside NaN)
    padding = torch.arange(9)[None, :] >= lengths[:, None]
    scores = torch.where(padding, scores + padding_offset, scores)
    labels = torch.randn(4, 9, generator=gen)
    kwargs = dict(lengths=lengths, lambda_weight="plistmle", respect_input_order=respect_input_order,
                  reduction="none")
    grad_output = torch.ones(4)
    loss, grad = loss_and_grad(lambda s: listmle_loss(s, labels, backend="torch", **kwargs), scores, grad_output)
    ref_loss, ref_grad = loss_and_grad(lambda s: listmle_reference(s, labels, **kwargs), scores.double(),
                                       grad_output.double())
    assert_close(loss, ref_loss, torch.float32, LOSS_TOL, scale=max(1.0, ref_loss.abs().max().item()))
    assert_close(grad, ref_grad, torch.float32, GRAD_TOL, scale=max(1.0, ref_grad.abs().max().item()))
    assert (grad[padding] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("respect_input_order", [True, False])
@pytest.mark.parametrize("padding", ["mask", "lengths"])
@pytest.mark.parametrize("lambda_weight", [None, "plistmle"])
def test_torch_gradient_is_contiguous_whatever_the_layout(dtype, respect_input_order, padding, lambda_weight):
    """The PyTorch path returns a contiguous gradient (the operator's fake promises one to torch.compile) also where
    it builds the gradient in a fresh buffer, whose layout would follow transposed scores or a transposed mask; and
    the same values as for contiguous inputs."""
    from listmle_kernels.dispatch import compute_rows
    from listmle_kernels.validation import prepare

    scores = torch.randn(7, 5, generator=torch.Generator().manual_seed(21)).to(dtype).t().contiguous().t()
    labels = torch.randn(5, 7, generator=torch.Generator().manual_seed(22)).t()
    mask = (torch.randn(7, 5, generator=torch.Generator().manual_seed(23)) > -0.5).t().contiguous().t()
    mask, lengths = (mask, None) if padding == "mask" else (None, torch.tensor([5, 0, 3, 5, 1, 4, 2]))
    results = []
    for s, m in ((scores, mask), (scores.contiguous(), None if mask is None else mask.contiguous())):
        inputs, seed = prepare(s, labels, m, lengths, lambda_weight, respect_input_order, "stable", None, "mean",
                               True, "torch")
        results.append(compute_rows(inputs, seed, 7, True))
    (loss, grad), (ref_loss, ref_grad) = results
    assert grad.is_contiguous() and grad.dtype == dtype
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=0)
