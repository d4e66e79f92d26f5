"""Backward reuses the gradient forward saved: one (B, L) buffer a step, unless the graph is kept."""

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from listmle_kernels import listmle_loss

from cases import BACKENDS, DEVICE, DTYPES

REDUCTIONS = ("mean", "sum", "none")


def saved_and_loss(scores, **kwargs):
    """The loss, and the data pointers of the tensors its forward saved for backward."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.data_ptr()) or t, lambda t: t):
        loss = listmle_loss(scores, **kwargs)
    return loss, saved


def grad_output_for(reduction, batch, value):
    shape = (batch,) if reduction == "none" else ()
    return torch.full(shape, value, device=DEVICE)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("grad_scale", [1.0, 2.5])
def test_backward_returns_the_saved_gradient_buffer(backend, reduction, grad_scale, backward_scaling):
    scores = torch.randn(5, 9, device=DEVICE, requires_grad=True)
    expected = torch.autograd.grad(listmle_loss(scores, reduction=reduction, backend=backend), scores,
                                   grad_output_for(reduction, 5, grad_scale))[0]
    loss, saved = saved_and_loss(scores, reduction=reduction, backend=backend)
    loss.backward(grad_output_for(reduction, 5, grad_scale))
    assert scores.grad.data_ptr() in saved  # no second (B, L) allocation
    torch.testing.assert_close(scores.grad, expected, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_a_retained_graph_keeps_the_saved_gradient(backend, reduction, backward_scaling):
    scores = torch.randn(4, 7, device=DEVICE, requires_grad=True)
    loss, saved = saved_and_loss(scores, reduction=reduction, backend=backend)
    (first,) = torch.autograd.grad(loss, scores, grad_output_for(reduction, 4, 3.0), retain_graph=True)
    assert first.data_ptr() not in saved
    (second,) = torch.autograd.grad(loss, scores, grad_output_for(reduction, 4, 1.5), retain_graph=True)
    (last,) = torch.autograd.grad(loss, scores, grad_output_for(reduction, 4, 1.0))
    torch.testing.assert_close(first, 2 * second)
    torch.testing.assert_close(first, 3 * last)


class GradientOps(TorchDispatchMode):
    """The aten ops run under it that take a tensor of `shape` (a view's bookkeeping, detach, aside)."""

    def __init__(self, shape):
        super().__init__()
        self.shape, self.ops = tuple(shape), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is not torch.ops.aten.detach.default and any(
                isinstance(a, torch.Tensor) and tuple(a.shape) == self.shape for a in args):
            self.ops.append(func)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_a_grad_output_of_one_skips_the_multiply_on_the_host(backend, reduction):
    """CPU tensors: `loss.backward()` of a scalar loss hands on the saved gradient untouched (the 1 is read on the
    host); any other grad_output is one in-place multiply of it."""
    for value, expected in ((1.0, []), (2.5, [torch.ops.aten.mul_.Tensor])):
        scores = torch.randn(5, 9, requires_grad=True)
        loss = listmle_loss(scores, reduction=reduction, backend=backend)
        grad_output = torch.tensor(value)
        with GradientOps(scores.shape) as ops:
            loss.backward(grad_output)
        assert ops.ops == expected, (value, ops.ops)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_backward_scales_with_the_triton_kernel_from_the_size_threshold(monkeypatch, reduction):
    """Gradients of TRITON_SCALE_MIN_ELEMENTS or more go through triton_scale.py's kernel, smaller float32 ones
    through a torch multiply, half-precision ones through the kernel whatever their size (no float32
    temporary); all give grad_output times the gradient."""
    from listmle_kernels import autograd, triton_scale
    launched = []
    scale_rows_ = triton_scale.scale_rows_
    monkeypatch.setattr(triton_scale, "scale_rows_", lambda grad, scale: launched.append(grad.numel()) or
                        scale_rows_(grad, scale))
    monkeypatch.setattr(autograd, "TRITON_SCALE_MIN_ELEMENTS", 50)
    for batch, dtype in [(5, torch.float32), (6, torch.float32), (5, torch.bfloat16)]:  # 45, 54, 45 elements
        scores = torch.randn(batch, 9, device=DEVICE).to(dtype).requires_grad_(True)
        grad_output = grad_output_for(reduction, batch, 2.5)
        got, expected = (torch.autograd.grad(listmle_loss(scores, reduction=reduction, backend=backend), scores,
                                             grad_output)[0] for backend in ("triton", "torch"))
        torch.testing.assert_close(got, expected)
    assert launched == [54, 45]


def test_a_lambda_weight_that_requires_grad_is_a_constant():
    scores = torch.randn(3, 5, device=DEVICE)
    weights = torch.rand(3, 5, device=DEVICE, requires_grad=True)
    listmle_loss(scores, lambda_weight=weights).backward()
    assert weights.grad is None


@given(batch=st.integers(1, 8), length=st.integers(1, 1500), dtype=st.sampled_from(DTYPES),
       per_row=st.booleans(), values=st.lists(st.sampled_from([1.0, 1.0, 1.0, 0.5, -2.0, float("nan")]),
                                              min_size=8, max_size=8),
       seed=st.integers(0, 2 ** 31 - 1))
@example(batch=2, length=1, dtype=torch.float32, per_row=True, values=[1.0, 2.0] + [1.0] * 6, seed=0)
@example(batch=8, length=3, dtype=torch.float32, per_row=True, values=[1.0] * 6 + [0.5, 1.0], seed=0)  # 8 rows a tile
@example(batch=3, length=1500, dtype=torch.bfloat16, per_row=True, values=[2.0] + [1.0] * 7, seed=0)
@example(batch=3, length=1500, dtype=torch.float16, per_row=True, values=[1.0, 1.0, -2.0] + [1.0] * 5, seed=0)
def test_triton_scale_in_place_equals_a_multiply(batch, length, dtype, per_row, values, seed):
    """Blocks whose scales are all 1 are skipped; every other element is multiplied in grad_output's precision."""
    from listmle_kernels.triton_scale import scale_rows_
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    grad = torch.randn(batch, length, generator=torch.Generator().manual_seed(seed)).to(dtype).to(DEVICE)
    scale = torch.tensor(values[:batch] if per_row else values[0], dtype=acc, device=DEVICE)
    expected = (grad.to(acc) * (scale[:, None] if per_row else scale)).to(dtype)
    assert scale_rows_(grad, scale) is grad
    torch.testing.assert_close(grad, expected, rtol=0, atol=0, equal_nan=True)


def test_triton_scale_reads_a_broadcast_row_scale():
    """loss.sum() over reduction="none" hands backward an expanded scalar: one scale a row, stride 0."""
    from listmle_kernels.triton_scale import scale_rows_
    grad = torch.ones(3, 5000, device=DEVICE)
    scale_rows_(grad, torch.tensor(2.5, device=DEVICE).expand(3))
    torch.testing.assert_close(grad, torch.full((3, 5000), 2.5, device=DEVICE))


def test_triton_scale_reads_per_row_strides():
    from listmle_kernels.triton_scale import scale_rows_
    grad = torch.ones(3, 5000, device=DEVICE)
    scale = torch.tensor([[2.0, 9.0], [1.0, 9.0], [-1.0, 9.0]], device=DEVICE)[:, 0]  # stride 2
    scale_rows_(grad, scale)
    torch.testing.assert_close(grad, torch.tensor([2.0, 1.0, -1.0], device=DEVICE)[:, None].expand(3, 5000))


# Peak extra memory of forward+backward on the CPU over the gradient's size, the returned gradient included:
# the PyTorch path takes rows in blocks (torch_listmle.CPU_BLOCK_ELEMENTS), so beside the gradient it holds
# one block's temporaries (and, by labels, the block's order) rather than a dozen (B, L) buffers.
CPU_PEAK_BUDGET = {("input", None): 3.0, ("input", "plistmle"): 3.5, ("labels", None): 4.5,
                   ("labels", "plistmle"): 4.5}


@pytest.mark.parametrize("order, lambda_weight", list(CPU_PEAK_BUDGET))
def test_cpu_peak_memory_is_a_few_gradients(order, lambda_weight):
    """Counted by bench.cpu_memory (every torch storage the step creates, op by op, plus numpy's arrays):
    deterministic, an upper bound of the true peak."""
    from bench.cpu_memory import peak_extra_bytes_cpu

    from listmle_kernels.torch_listmle import CPU_BLOCK_ELEMENTS

    gen = torch.Generator().manual_seed(0)
    length = 2048
    batch = 8 * CPU_BLOCK_ELEMENTS // length  # 8 blocks
    scores = torch.randn(batch, length, generator=gen).requires_grad_(True)
    labels = torch.rand(batch, length, generator=gen)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=gen)
    peak = peak_extra_bytes_cpu(lambda: torch.autograd.grad(listmle_loss(
        scores, labels, lengths=lengths, lambda_weight=lambda_weight, respect_input_order=order == "input",
        backend="torch"), scores))
    assert peak <= CPU_PEAK_BUDGET[order, lambda_weight] * scores.numel() * scores.element_size()
