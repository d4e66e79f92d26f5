"""The public API: modules, the autograd Function, reductions, dtypes, backend selection."""

import contextlib
from types import SimpleNamespace

import pytest
import torch

import listmle_kernels
from listmle_kernels import ListMLEFunction, ListMLELoss, PListMLELoss, listmle_loss
from listmle_kernels._launch import on_device_of

from cases import DEVICE


def problem(seed=0, batch=4, length=6):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, length, generator=gen).to(DEVICE)
    labels = torch.randint(0, 3, (batch, length), generator=gen).to(DEVICE)
    return scores, labels


def test_public_names():
    assert set(listmle_kernels.__all__) == {"listmle_loss", "ListMLELoss", "PListMLELoss", "ListMLEFunction",
                                            "lambda_loss", "ranknet_loss", "LambdaLoss", "RankNetLoss",
                                            "LambdaLossFunction", "listnet_loss", "ListNetLoss", "ListNetFunction",
                                            "auto_backend"}
    assert all(hasattr(listmle_kernels, name) for name in listmle_kernels.__all__)


@pytest.mark.parametrize("module", ["modules", "backends"])
def test_docstring_examples(module):
    """The docstrings' Examples print what the code returns; their losses check by hand (the row (2, 1, 0) in
    input order: log(1 + e + e^2) - 2 + log(1 + e) - 1 = 0.7209)."""
    import doctest
    import importlib
    result = doctest.testmod(importlib.import_module(f"listmle_kernels.{module}"))
    assert result.attempted > 0 and result.failed == 0


def test_modules_call_the_function():
    scores, labels = problem()
    lengths = torch.tensor([6, 3, 0, 5], device=DEVICE)
    assert torch.equal(ListMLELoss()(scores, lengths=lengths), listmle_loss(scores, lengths=lengths))
    assert torch.equal(PListMLELoss(respect_input_order=False, reduction="none")(scores, labels),
                       listmle_loss(scores, labels, lambda_weight="plistmle", respect_input_order=False,
                                    reduction="none"))
    assert "plistmle" in repr(PListMLELoss())


def test_modules_pass_generator_and_backend():
    scores, _ = problem()
    labels = torch.zeros_like(scores)
    module = ListMLELoss(respect_input_order=False, ties="random", reduction="none",
                         generator=torch.Generator().manual_seed(3))
    expected = listmle_loss(scores, labels, respect_input_order=False, ties="random", reduction="none",
                            generator=torch.Generator().manual_seed(3))
    assert torch.equal(module(scores, labels), expected)
    with pytest.raises(ValueError, match="backend must be one of"):
        PListMLELoss(backend="cuda")(scores)


def test_autograd_function_positional_signature():
    scores, labels = problem()
    scores.requires_grad_(True)
    mask = scores > -1
    loss = ListMLEFunction.apply(scores, labels, mask, None, "plistmle", False, "stable", None, "sum", True, "auto")
    expected = listmle_loss(scores, labels, mask=mask, lambda_weight="plistmle", respect_input_order=False,
                            reduction="sum")
    assert torch.equal(loss, expected)
    loss.backward()
    assert scores.grad.shape == scores.shape


def test_reductions():
    scores, _ = problem()
    rows = listmle_loss(scores, reduction="none")
    assert rows.shape == (4,)
    torch.testing.assert_close(listmle_loss(scores, reduction="sum"), rows.sum())
    torch.testing.assert_close(listmle_loss(scores, reduction="mean"), rows.sum() / 4)


def test_auto_backend_is_torch_on_cpu(monkeypatch):
    from listmle_kernels import torch_listmle
    calls = []
    monkeypatch.setattr(torch_listmle, "torch_listmle", lambda *a: calls.append(a) or (torch.zeros(2), None))
    listmle_loss(torch.zeros(2, 3))
    assert len(calls) == 1


def test_auto_backend_names_the_backend_that_auto_runs(monkeypatch):
    from listmle_kernels import autograd, backends
    ran = []
    compute_rows = autograd.compute_rows
    monkeypatch.setattr(autograd, "compute_rows", lambda inputs, *args: ran.append(inputs.backend) or
                        compute_rows(inputs, *args))
    listmle_loss(problem()[0])
    assert ran == [listmle_kernels.auto_backend(DEVICE)]
    # The rule itself: Triton for CUDA tensors where it can run; CPU tensors take the PyTorch path even
    # where the interpreter could run the kernels
    monkeypatch.setattr(backends, "triton_unavailable_reason", lambda device: None)
    assert listmle_kernels.auto_backend("cuda:1") == "triton"
    assert listmle_kernels.auto_backend(torch.device("cpu")) == "torch"
    monkeypatch.setattr(backends, "triton_unavailable_reason", lambda device: "triton is not installed")
    assert listmle_kernels.auto_backend("cuda") == "torch"


def test_retain_graph_backward_twice():
    scores, _ = problem()
    scores.requires_grad_(True)
    loss = listmle_loss(scores)
    (first,) = torch.autograd.grad(loss, scores, retain_graph=True)
    (second,) = torch.autograd.grad(loss, scores, torch.tensor(2.0))
    torch.testing.assert_close(second, 2 * first)


def test_no_gradient_when_not_needed():
    scores, _ = problem()
    loss = listmle_loss(scores)
    assert not loss.requires_grad


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_scores_give_float32_loss_and_half_gradient(dtype):
    scores = problem()[0].to(dtype).requires_grad_(True)
    loss = listmle_loss(scores)
    loss.backward()
    assert loss.dtype == torch.float32 and scores.grad.dtype == dtype


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_empty_inputs(backend):
    scores = torch.zeros(0, 5, device=DEVICE, requires_grad=True)
    assert listmle_loss(scores, reduction="sum", backend=backend) == 0
    assert listmle_loss(scores, reduction="none", backend=backend).shape == (0,)
    assert torch.isnan(listmle_loss(scores, backend=backend))  # "mean" of no rows, as torch's mean
    scores = torch.zeros(2, 0, device=DEVICE, requires_grad=True)
    loss = listmle_loss(scores, torch.zeros(2, 0, device=DEVICE), respect_input_order=False,
                        lambda_weight="plistmle", backend=backend)
    loss.backward()
    assert loss == 0 and scores.grad.shape == (2, 0)


def test_launch_guard_makes_the_tensors_cuda_device_current():
    cuda_scores = SimpleNamespace(is_cuda=True, device=torch.device("cuda", 1))  # no GPU needed to build it
    guard = on_device_of(cuda_scores)
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert isinstance(on_device_of(torch.zeros(1)), contextlib.nullcontext)


def test_both_triton_launches_run_under_the_guard_of_the_scores(monkeypatch):
    """Triton launches on the current device, not the tensors' (see `_launch.py`): the forward
    kernel and the backward's scaling kernel each run inside the guard of the scores' device."""
    from listmle_kernels import autograd, triton_listmle, triton_scale
    monkeypatch.setattr(autograd, "TRITON_SCALE_MIN_ELEMENTS", 0)  # the backward's kernel at a test size
    guarded = []

    def recording_guard(tensor):
        guarded.append(tensor.device)
        return contextlib.nullcontext()

    monkeypatch.setattr(triton_listmle, "on_device_of", recording_guard)
    monkeypatch.setattr(triton_scale, "on_device_of", recording_guard)
    scores, labels = problem()
    scores.requires_grad_(True)
    listmle_loss(scores, labels, respect_input_order=False, backend="triton").mul(2.0).backward()
    assert guarded == [scores.device, scores.device]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_scores_on_a_device_that_is_not_current():
    scores, labels = problem()
    with torch.cuda.device(0):
        other = scores.to("cuda:1").requires_grad_(True)
        loss = listmle_loss(other, labels.to("cuda:1"), respect_input_order=False)
        loss.mul(2.0).backward()
    cpu = scores.cpu().requires_grad_(True)
    listmle_loss(cpu, labels.cpu(), respect_input_order=False).mul(2.0).backward()
    torch.testing.assert_close(loss.cpu(), listmle_loss(cpu, labels.cpu(), respect_input_order=False).detach())
    torch.testing.assert_close(other.grad.cpu(), cpu.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("respect_input_order", [True, False])
def test_a_captured_training_step_replays_like_an_eager_one(respect_input_order, backward_scaling):
    """With validate=False, forward and autograd.grad capture into a CUDA graph (what the README suggests
    against host overhead): a replay on new scores gives what an eager call on them gives."""
    scores, labels = problem(batch=16, length=10)
    lengths = torch.tensor([10, 1, 0, 7] * 4, device=DEVICE)
    static = scores.clone().requires_grad_(True)

    def step():
        loss = listmle_loss(static, labels, lengths=lengths, respect_input_order=respect_input_order,
                            validate=False)
        return (loss,) + torch.autograd.grad(loss, static)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream: compiles, fills the allocator's pool
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss, grad = step()
    fresh = torch.randn_like(scores)
    with torch.no_grad():
        static.copy_(fresh)
    graph.replay()
    leaf = fresh.clone().requires_grad_(True)
    expected = listmle_loss(leaf, labels, lengths=lengths, respect_input_order=respect_input_order)
    expected.backward()
    torch.testing.assert_close(loss, expected.detach())
    torch.testing.assert_close(grad, leaf.grad)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_autocast_changes_nothing(backend):
    """Training loops call the loss inside autocast: loss and gradient equal the ones outside it."""
    scores, labels = problem(batch=4, length=9)
    results = []
    for autocast in (False, True):
        leaf = scores.clone().requires_grad_(True)
        with torch.autocast(leaf.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = listmle_loss(leaf, labels, lambda_weight="plistmle", respect_input_order=False, backend=backend)
        loss.backward()
        results.append((loss, leaf.grad))
    (loss, grad), (autocast_loss, autocast_grad) = results
    assert autocast_loss.dtype == torch.float32
    torch.testing.assert_close(autocast_loss, loss, rtol=0, atol=0)
    torch.testing.assert_close(autocast_grad, grad, rtol=0, atol=0)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("retain_graph", [False, True])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_float16_gradient_survives_a_large_loss_scale(backend, retain_graph, reduction, backward_scaling):
    """GradScaler starts at 65536, which is inf in float16: the backward multiplies in the loss's
    float32 and rounds once, so the scaled gradient is scale x the gradient rounded to float16 (inf only
    where that product is), and padding stays 0, not inf x 0 = NaN."""
    scores, labels = problem(batch=4, length=9)
    scores = (scores * 4).half().requires_grad_(True)
    lengths = torch.tensor([9, 4, 1, 0], device=DEVICE)
    loss = listmle_loss(scores, labels, lengths=lengths, respect_input_order=False, reduction=reduction,
                        backend=backend)
    (grad,) = torch.autograd.grad(loss.sum(), scores, retain_graph=True)
    (scaled,) = torch.autograd.grad(loss.sum() * 65536.0, scores, retain_graph=retain_graph)
    expected = (grad.float() * 65536.0).half()
    assert torch.isfinite(expected).any() and not scaled.isnan().any()
    torch.testing.assert_close(scaled, expected, rtol=2e-3, atol=0)


def test_no_gradient_is_computed_without_grad_mode(monkeypatch):
    """Under no_grad / inference_mode nothing will call backward, so the forward skips the gradient."""
    from listmle_kernels import autograd
    asked = []
    compute_rows = autograd.compute_rows
    monkeypatch.setattr(autograd, "compute_rows", lambda *args: asked.append(args[3]) or compute_rows(*args))
    scores, _ = problem()
    scores.requires_grad_(True)
    with torch.no_grad():
        listmle_loss(scores)
    with torch.inference_mode():
        listmle_loss(scores)
    listmle_loss(scores)
    assert asked == [False, False, True]


def test_grid_arithmetic_matches_tritons():
    """The launchers' plain cdiv / next_power_of_2 (cheaper host calls) agree with Triton's own."""
    import triton
    from listmle_kernels._launch import cdiv, next_power_of_2
    for n in list(range(1, 5000)) + [2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, 3 * 2 ** 40]:
        assert next_power_of_2(n) == triton.next_power_of_2(n), n
        for d in (1, 2, 3, 16, 1024, 4096):
            assert cdiv(n, d) == triton.cdiv(n, d), (n, d)


def documented_signatures(document):
    """{name: [(parameter, keyword-only, default)]} of the calls a document writes out with their defaults (the
    `.apply` lines, positional lists, aside)."""
    import ast
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parent.parent / document).read_text(encoding="utf-8")
    signatures = {}
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        code = re.sub(r"#.*", "", block)
        for name, args in re.findall(r"^(\w+)\((.*?)\)\s*$", code, flags=re.S | re.M):
            arguments = ast.parse(f"def f({args}): pass").body[0].args
            positional = [a.arg for a in arguments.args]
            defaults = [None] * (len(positional) - len(arguments.defaults)) + arguments.defaults
            signatures[name] = (
                [(p, False, None if d is None else ast.literal_eval(d)) for p, d in zip(positional, defaults)]
                + [(a.arg, True, None if d is None else ast.literal_eval(d))
                   for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults)])
    return signatures


@pytest.mark.parametrize("document, names", [
    ("docs/semantics.md", {"listmle_loss", "ListMLELoss", "PListMLELoss", "lambda_loss", "ranknet_loss",
                           "listnet_loss", "LambdaLoss"}),
    ("README.md", {"listmle_loss", "ListMLELoss", "PListMLELoss", "auto_backend"})])
def test_signatures_are_the_documented_ones(document, names):
    """Every parameter the document lists, in its order, keyword-only where it says, with its default; the modules
    may take more after them (generator, backend)."""
    import inspect
    documented = documented_signatures(document)
    assert names <= set(documented)
    for name, params in documented.items():
        actual = [(p.name, p.kind is p.KEYWORD_ONLY, None if p.default is p.empty else p.default)
                  for p in inspect.signature(getattr(listmle_kernels, name)).parameters.values()]
        assert actual[:len(params)] == params, name
        assert name[0].isupper() or len(actual) == len(params), name  # functions: nothing undocumented
