"""Argument checking: every user-facing mistake becomes a ValueError/TypeError naming the argument.

`prepare` turns the public arguments of ListMLE into one `ListMLEInputs` that both backends consume (the
backend that "auto" picks resolved, labels kept only when sorting by them) and the seed of the random tie
order; `parse_lambdaloss_inputs` and `parse_listnet_inputs` do the same for LambdaLoss / RankNet and ListNet.
Value checks (data, not shapes) are read together: one host sync on CUDA.
"""

import math
import numbers

import torch

from .backends import BACKENDS, resolve_backend
from .inputs import (WEIGHTING_SCHEMES, WEIGHTS_NONE, WEIGHTS_PLISTMLE, WEIGHTS_TENSOR, LambdaLossInputs,
                     ListMLEInputs, ListNetInputs, real_count, real_mask)

REDUCTIONS = ("mean", "sum", "none")
TIES = ("stable", "random")
# The floating dtypes scores, float labels and lambda weights may have (float8 has no sum, isfinite or kernel path)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
FLOAT_NAMES = "float16, bfloat16, float32 or float64"


def _check_dense(name, tensor):
    """A torch.Tensor with strided (dense) storage: sparse and nested tensors have no strides for the kernels nor
    the ops of the PyTorch path (which would fail deep inside torch, naming no argument)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.is_nested:
        raise TypeError(f"{name} must be a dense (strided) tensor, got a nested one: pad it to (B, L) with "
                        ".to_padded_tensor() and mark the padding with mask or lengths")
    if tensor.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {tensor.layout}: convert it with "
                        ".to_dense()")


def _check_like_scores(name, tensor, scores):
    _check_dense(name, tensor)
    if tensor.shape != scores.shape:
        raise ValueError(f"{name} must have the shape of scores {tuple(scores.shape)}, got {tuple(tensor.shape)}")
    if tensor.device != scores.device:
        raise ValueError(f"{name} is on {tensor.device} but scores are on {scores.device}")


def _raise_if_nan_at_real(labels, mask, lengths):
    """ValueError if a real document has a NaN label (padding may hold anything)."""
    nan = torch.isnan(labels)
    if mask is not None or lengths is not None:
        nan &= real_mask(labels, mask, lengths)
    if bool(nan.any()):
        raise ValueError("labels contain NaN at a real document; NaN has no rank order")


def _raise_failed_checks(checks):
    """Run the value checks: each is (0-d bool tensor "may be bad", function that raises if it is).

    On CUDA all flags are read in one host transfer: one sync however many checks there are.
    """
    if not checks:
        return
    if checks[0][0].is_cuda:
        flags = torch.stack([flag for flag, _ in checks]).tolist()
    else:
        flags = [bool(flag) for flag, _ in checks]  # no sync to save; a stack would cost more
    for maybe_bad, (_, raise_if_bad) in zip(flags, checks):
        if maybe_bad:
            raise_if_bad()


def _check_labels_dtype(labels):
    """Labels are compared as float32: bool, any integer, or one of FLOAT_DTYPES."""
    if labels.is_complex():
        raise TypeError(f"labels must hold real numbers, got dtype {labels.dtype}")
    if labels.is_floating_point() and labels.dtype not in FLOAT_DTYPES:
        raise TypeError(f"labels must be bool, integer or {FLOAT_NAMES}, got dtype {labels.dtype}")


def _check_float(name, tensor):
    if tensor.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be floating point ({FLOAT_NAMES}), got dtype {tensor.dtype}")


def compiling() -> bool:
    """True while torch.compile traces: value checks need data, so they are skipped there."""
    return torch.compiler.is_compiling()


def _check_scores(scores, loss_name):
    """scores: a dense 2-D tensor of one of FLOAT_DTYPES on a CPU or CUDA device."""
    _check_dense("scores", scores)
    if scores.dim() != 2:
        trailing_one = scores.dim() == 3 and scores.shape[-1] == 1
        hint = " (a model's (B, L, 1) logits: pass scores.squeeze(-1))" if trailing_one else ""
        raise ValueError(f"scores must be 2-D (batch, list_length), got shape {tuple(scores.shape)}{hint}")
    _check_float("scores", scores)
    if not (scores.is_cpu or scores.is_cuda):  # e.g. meta: no values to compute with (flags: no device object)
        raise ValueError(f"scores are on {scores.device}; {loss_name} takes CPU or CUDA tensors")


def check_choices(reduction, backend):
    """reduction and backend: the options every loss takes (ListNet's only ones)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _check_padding(scores, mask, lengths, checking_values, value_checks):
    """mask or lengths (or neither) checked; the range of lengths added to `value_checks` when checking values."""
    batch, length = scores.shape
    if mask is not None and lengths is not None:
        raise ValueError("give either mask or lengths, not both")
    if mask is not None:
        _check_like_scores("mask", mask, scores)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = real document), got dtype {mask.dtype}")
    if lengths is not None:
        _check_dense("lengths", lengths)
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
        if lengths.device != scores.device:
            raise ValueError(f"lengths is on {lengths.device} but scores are on {scores.device}")
        if checking_values and batch:
            wide = lengths.long()  # L itself may not fit a narrow dtype (uint8 lengths, L = 300): compare in int64
            def raise_bad_lengths():
                bad = wide[(wide < 0) | (wide > length)][0].item()
                raise ValueError(f"lengths must lie in [0, {length}] (the list length), got {bad}")
            value_checks.append(((wide.clamp(0, length) != wide).any(), raise_bad_lengths))


def check_flag(name, value):
    """A switch must be a bool: a "False" string from a config would be truthy."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def _checking_values(validate) -> bool:
    """Whether the value checks run: `validate` (a bool), and never inside torch.compile."""
    check_flag("validate", validate)
    return validate and not compiling()


def check_listmle_options(lambda_weight, respect_input_order, ties, reduction, backend):
    """`listmle_loss`'s options that need no tensor to check (the modules check them when they are built)."""
    check_flag("respect_input_order", respect_input_order)
    check_choices(reduction, backend)
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    if isinstance(lambda_weight, str):
        if lambda_weight != "plistmle":
            raise ValueError(f"lambda_weight must be None, 'plistmle', a (B, L) tensor or a callable; "
                             f"got the string {lambda_weight!r}")
    elif not (lambda_weight is None or isinstance(lambda_weight, torch.Tensor) or callable(lambda_weight)):
        raise TypeError(f"lambda_weight must be None, 'plistmle', a tensor or a callable, "
                        f"got {type(lambda_weight).__name__}")


def check_generator(generator):
    """generator: None (torch's default generator) or a torch.Generator."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def parse_inputs(scores, labels, mask, lengths, lambda_weight, respect_input_order, ties,
                 reduction, validate, backend) -> ListMLEInputs:
    """The public arguments (`listmle_loss`'s) checked and resolved into one `ListMLEInputs`."""
    _check_scores(scores, "listmle_loss")
    check_listmle_options(lambda_weight, respect_input_order, ties, reduction, backend)
    checking_values = _checking_values(validate)
    value_checks = []  # read together at the end: one host sync on CUDA
    _check_padding(scores, mask, lengths, checking_values, value_checks)

    if labels is not None:
        _check_like_scores("labels", labels, scores)
        _check_labels_dtype(labels)
    if not respect_input_order:
        if labels is None:
            raise ValueError("respect_input_order=False sorts by labels, but labels is None")
        if checking_values and labels.is_floating_point():
            # A sum that is not NaN (one reduction, no (B, L) temporaries) proves there is no NaN
            # anywhere; the masked check runs only when it is NaN: a NaN label, or +inf meeting -inf
            # (infinite labels, or an overflow). In the labels' own dtype: a float64 sum of float32
            # labels costs 4-8x more on a CPU.
            value_checks.append((torch.isnan(labels.sum()), lambda: _raise_if_nan_at_real(labels, mask, lengths)))

    weights = None
    if lambda_weight is None:
        weight_kind = WEIGHTS_NONE
    elif isinstance(lambda_weight, str):  # "plistmle", the one string check_listmle_options lets through
        weight_kind = WEIGHTS_PLISTMLE
    else:
        if isinstance(lambda_weight, torch.Tensor):
            weights, name = lambda_weight, "lambda_weight"
        else:  # a callable: ranks 0..n-1 of each row are the real ones, the mask sentence-transformers passes
            rank_mask = real_mask(scores, None, real_count(scores, mask, lengths))
            weights = lambda_weight(rank_mask)
            name = "lambda_weight(rank_mask)"
        _check_like_scores(name, weights, scores)
        _check_float(name, weights)
        weights = weights.detach()
        if checking_values:
            # Weights are divided by their row's sum, which weights of mixed signs can bring to 0; a NaN or
            # infinite weight has no ratio to the others. Padded ranks are not read.
            real_ranks = real_mask(scores, None, real_count(scores, mask, lengths))
            bad = ~(torch.isfinite(weights) & (weights >= 0)) & real_ranks

            def raise_bad_weights(name=name, weights=weights):
                raise ValueError(f"{name} must be finite and >= 0 at real ranks, got {weights[bad][0].item()}")
            value_checks.append((bad.any(), raise_bad_weights))
        weight_kind = WEIGHTS_TENSOR

    _raise_failed_checks(value_checks)

    backend = resolve_backend(backend, scores)

    return ListMLEInputs(scores=scores, mask=mask, lengths=lengths,
                         labels=None if respect_input_order else labels,
                         weight_kind=weight_kind, weights=weights,
                         random_ties=(ties == "random" and not respect_input_order), backend=backend)


def draw_seed(generator) -> int:
    """One 31-bit seed for the random tie order, from `generator` (or torch's default generator)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(0, 2 ** 31 - 1, (), generator=generator, device=device))


def prepare(scores, labels, mask, lengths, lambda_weight, respect_input_order, ties, generator, reduction,
            validate, backend):
    """Checked inputs and the seed of the random tie order (0 when unused)."""
    check_generator(generator)
    inputs = parse_inputs(scores, labels, mask, lengths, lambda_weight, respect_input_order, ties,
                          reduction, validate, backend)
    return inputs, (draw_seed(generator) if inputs.random_ties else 0)


REDUCTION_LOGS = ("binary", "natural")


def _check_real_number(name, value, *, positive=False):
    """A finite int or float (not a bool), > 0 when `positive`, else >= 0; returned as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _check_k(k):
    """k: None or an int >= 0 (0 and None both mean every position); returned as an int, 0 for none."""
    if k is None:
        return 0
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be None or an int >= 0, got {type(k).__name__} {k!r}")
    if k < 0:
        raise ValueError(f"k must be None or an int >= 0, got {k}")
    return int(k)


def _graded_labels(labels, scores, mask, lengths, checking_values, value_checks,
                   why_inf_fails="its gain 2^label is infinite"):
    """labels checked (required, scores' shape and device, a real dtype) and returned as float32, the dtype both
    backends compare and weigh them in; NaN or +inf at a real document added to `value_checks` (padding may hold
    anything). The checks read the float32 labels: a float64 label past float32's range is +inf there.
    `why_inf_fails`: what +inf breaks in the loss at hand, for the error."""
    if labels is None:
        raise ValueError("labels are required: the relevance of each document")
    _check_like_scores("labels", labels, scores)
    _check_labels_dtype(labels)
    graded = labels.float()
    if checking_values and labels.is_floating_point():
        def raise_if_bad_at_real():
            real = real_mask(graded, mask, lengths)
            if bool((torch.isnan(graded) & real).any()):
                raise ValueError("labels contain NaN at a real document; NaN has no rank order")
            if bool((graded == float("inf")).logical_and_(real).any()):
                raise ValueError("labels contain +inf at a real document (or a value past float32's range, "
                                 f"where labels are compared): {why_inf_fails}")
        # A sum that is neither NaN nor +inf proves there is neither anywhere (one reduction); the masked check
        # runs only when it is: a NaN or +inf label, +inf meeting -inf, or an overflow.
        total = graded.sum()
        value_checks.append((torch.isnan(total) | (total == float("inf")), raise_if_bad_at_real))
    return graded


def check_lambdaloss_options(weighting_scheme, k, sigma, mu, eps, reduction_log, reduction, backend):
    """`lambda_loss`'s options (no tensors) checked, and (k, sigma, mu, eps) resolved: k an int (0 for every
    position), the others floats. The modules check them when they are built."""
    if weighting_scheme not in WEIGHTING_SCHEMES:
        raise ValueError(f"weighting_scheme must be one of {WEIGHTING_SCHEMES}, got {weighting_scheme!r}")
    k = _check_k(k)
    sigma = _check_real_number("sigma", sigma, positive=True)
    mu = _check_real_number("mu", mu)
    # eps floors maxDCG, the divisor of the gains: at 0, a row with no positive label divides 0 by 0
    eps = _check_real_number("eps", eps, positive=True)
    if reduction_log not in REDUCTION_LOGS:
        raise ValueError(f"reduction_log must be one of {REDUCTION_LOGS}, got {reduction_log!r}")
    check_choices(reduction, backend)
    return k, sigma, mu, eps


def parse_lambdaloss_inputs(scores, labels, mask, lengths, weighting_scheme, k, sigma, mu, eps, reduction_log,
                            reduction, validate, backend, loss_name="lambda_loss") -> LambdaLossInputs:
    """The public arguments of `lambda_loss` / `ranknet_loss` checked and resolved into one `LambdaLossInputs`."""
    _check_scores(scores, loss_name)
    k, sigma, mu, eps = check_lambdaloss_options(weighting_scheme, k, sigma, mu, eps, reduction_log, reduction,
                                                 backend)
    checking_values = _checking_values(validate)
    value_checks = []  # read together at the end: one host sync on CUDA
    _check_padding(scores, mask, lengths, checking_values, value_checks)
    # RankNet has no gains: what +inf breaks there is the labels' order itself
    why_inf_fails = ("its gain 2^label is infinite" if weighting_scheme != "none"
                     else "two of them have no order (+inf - +inf is NaN)")
    graded = _graded_labels(labels, scores, mask, lengths, checking_values, value_checks, why_inf_fails)
    _raise_failed_checks(value_checks)
    return LambdaLossInputs(scores=scores, labels=graded, mask=mask, lengths=lengths,
                            scheme=WEIGHTING_SCHEMES.index(weighting_scheme), k=k, sigma=sigma, mu=mu, eps=eps,
                            log_scale=1 / math.log(2) if reduction_log == "binary" else 1.0,
                            backend=resolve_backend(backend, scores))


def parse_listnet_inputs(scores, labels, mask, lengths, reduction, validate, backend) -> ListNetInputs:
    """The public arguments of `listnet_loss` checked and resolved into one `ListNetInputs`."""
    _check_scores(scores, "listnet_loss")
    check_choices(reduction, backend)
    checking_values = _checking_values(validate)
    value_checks = []
    _check_padding(scores, mask, lengths, checking_values, value_checks)
    graded = _graded_labels(labels, scores, mask, lengths, checking_values, value_checks,
                            why_inf_fails="softmax(labels), the target distribution, is NaN there")
    if checking_values and labels.is_floating_point() and scores.numel():
        real = real_mask(graded, mask, lengths)
        no_target = real.any(1) & (torch.where(real, graded, float("-inf")).amax(1) == float("-inf"))

        def raise_no_target():
            row = int(no_target.nonzero()[0, 0])
            raise ValueError(f"labels of row {row} are -inf at every real document: softmax(labels), the target "
                             "distribution, is not defined there")
        value_checks.append((no_target.any(), raise_no_target))
    _raise_failed_checks(value_checks)
    return ListNetInputs(scores=scores, labels=graded, mask=mask, lengths=lengths,
                         backend=resolve_backend(backend, scores))
