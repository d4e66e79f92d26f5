"""Equality of loss and gradient between implementations, checked before anything is timed.

A fast wrong answer is not a result: an implementation whose loss or gradient differs from the
vectorised reference on a case is excluded from that case's timings, with the error recorded.
The vectorised reference itself is first checked against the literal per-row oracle in reference/.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from bench.cases import Case, Inputs, make_inputs
from bench.impls import Prepared, ReferenceEager, reference_eager_loss

# (loss rtol, grad tol relative to the largest reference gradient entry). bfloat16 outputs carry
# 8 significant bits, so 1e-2; float32 implementations differ only in summation order.
TOLERANCES = {"float32": (1e-4, 1e-4), "bfloat16": (1e-2, 1e-2)}


@dataclass
class Comparison:
    ok: bool
    loss_rel_err: float
    grad_rel_err: float | None
    message: str = ""


def loss_and_grad(prepared: Prepared, case: Case) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run once; return the loss (float32) and, for fwd+bwd, the gradient in (B, L) layout."""
    loss = prepared.loss_fn()
    grad = None
    if case.direction == "fwd+bwd":
        (leaf_grad,) = torch.autograd.grad(loss, prepared.leaf)
        grad = prepared.grad_to_padded(leaf_grad).float()
    return loss.detach().float(), grad


def compare(case: Case, got: tuple, want: tuple, valid: torch.Tensor) -> Comparison:
    loss_tol, grad_tol = TOLERANCES[case.dtype]
    (loss, grad), (loss_ref, grad_ref) = got, want
    if loss.numel() != 1:
        return Comparison(False, float("nan"), None, f"loss has shape {tuple(loss.shape)}, want a scalar")
    loss_err = (abs(loss - loss_ref) / max(abs(loss_ref.item()), 1e-6)).item()
    ok = bool(torch.isfinite(loss)) and loss_err <= loss_tol
    message = "" if ok else f"loss {loss.item():.6g} vs reference {loss_ref.item():.6g}"
    grad_err = None
    if grad_ref is not None:
        scale = grad_ref.abs().max().clamp_min(1e-12)
        grad_err = ((grad - grad_ref).abs().max() / scale).item()
        # Padded slots must get exactly zero gradient, whatever the tolerance.
        leaked = (grad[~valid] != 0).any().item()
        grad_ok = grad_err <= grad_tol and not leaked and bool(torch.isfinite(grad).all())
        if not grad_ok:
            message += f"{'; ' if message else ''}grad max rel err {grad_err:.3g}" + (
                ", nonzero gradient on padding" if leaked else ""
            )
        ok = ok and grad_ok
    return Comparison(ok, loss_err, grad_err, message)


def reference_result(case: Case, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
    return loss_and_grad(ReferenceEager().prepare(case, inputs), case)


# --------------------------------------------------------------------------------------------------
# Self-check of the vectorised reference against the literal oracle (reference/listmle_reference).
# --------------------------------------------------------------------------------------------------


def self_check_reference(device: torch.device) -> tuple[bool, str]:
    """Vectorised reference == reference.listmle_reference on small cases of every mode.

    Returns (ok, message). The oracle's tie policy is only exercised with distinct labels, plus one
    binary-label case where both should keep input order among ties (stable).
    """
    try:
        from reference import listmle_reference
    except Exception as exc:
        return True, f"skipped: reference.listmle_reference not importable ({type(exc).__name__}: {exc})"

    failures = []
    checked = 0
    for weighting, order, ragged, binary in itertools.chain(
        itertools.product(("listmle", "plistmle"), ("input", "labels"), (False, True), (False,)),
        [("listmle", "labels", True, True), ("plistmle", "labels", True, True)],
    ):
        case = Case(5, 9, direction="fwd+bwd", weighting=weighting, order=order, ragged=ragged)
        inputs = make_inputs(case, device, seed=1234)
        labels = inputs.labels
        if binary:
            labels = (labels > 0.7).float()
        ours = reference_eager_loss(inputs.scores, labels, inputs.lengths, weighting, order == "input")
        (grad_ours,) = torch.autograd.grad(ours, inputs.scores)
        scores = inputs.scores.detach().clone().requires_grad_(True)
        theirs = listmle_reference(
            scores, labels if order == "labels" else None, lengths=inputs.lengths,
            lambda_weight="plistmle" if weighting == "plistmle" else None,
            respect_input_order=order == "input", reduction="mean",
        )
        checked += 1
        what = f"{weighting}/{order}/{'ragged' if ragged else 'full'}{'/binary-labels' if binary else ''}"
        if not torch.allclose(ours.detach().float(), theirs.detach().float(), rtol=1e-5, atol=1e-6):
            failures.append(f"{what}: loss {ours.item():.6g} vs oracle {theirs.item():.6g}")
            continue
        if theirs.requires_grad:
            (grad_theirs,) = torch.autograd.grad(theirs, scores)
            if not torch.allclose(grad_ours, grad_theirs.float(), rtol=1e-4, atol=1e-6):
                failures.append(f"{what}: gradient differs (max abs {(grad_ours - grad_theirs).abs().max():.3g})")
    if failures:
        return False, "vectorised reference != oracle: " + "; ".join(failures)
    return True, f"vectorised reference matches reference.listmle_reference on {checked} cases"
