"""Every implementation of the same ListMLE / p-ListMLE loss, behind one calling convention.

`Impl.prepare(case, inputs)` returns a `Prepared`: a zero-argument `loss_fn` (what is timed), the
`leaf` tensor the gradient is taken with respect to, and `grad_to_padded`, which maps that gradient
back to the (B, L) padded layout so that every implementation's gradient can be compared.

Optional baselines (listmle_kernels itself, sentence-transformers, allRank) are imported lazily and
reported as skipped with a reason when missing; their math is never re-implemented here.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from bench.cases import Case, Inputs

# Largest B*L given to sentence-transformers: its loss builds a Python list of B*L (query, doc) pairs
# and a Python list of per-row label tensors every call, which costs seconds at millions of elements.
# Its forward builds Python lists per pair: ~1 s a call at 2^20 pairs, which a time-budgeted GPU run
# cannot afford at every large shape.
MAX_ELEMENTS_SENTENCE_TRANSFORMERS = 1 << 18
MAX_ORACLE_ROWS = 256


@dataclass
class Prepared:
    loss_fn: Callable[[], torch.Tensor]
    leaf: torch.Tensor
    grad_to_padded: Callable[[torch.Tensor], torch.Tensor]


def _identity(grad: torch.Tensor) -> torch.Tensor:
    return grad


# --------------------------------------------------------------------------------------------------
# The baseline users would write: vectorised, literal, autograd does the gradient.
# --------------------------------------------------------------------------------------------------


def plistmle_weights(valid_sorted: torch.Tensor) -> torch.Tensor:
    """sentence-transformers 6.x-style p-ListMLE weights for rows whose valid slots come first.

    raw_r = 2^(n-(r+1)) - 1 for ranks r+1 = 1..n, normalised per row to sum to 1. raw overflows
    float32 for n >= 128, so use the same ratio scaled by 2^-n: 2^-(r+1) - 2^-n (exact in float32 for
    n < 150; beyond that both terms underflow to 0, where the true weights are < 2^-149 anyway).
    The 1e-10 in the reference normaliser is dropped: it changes weights by < 1e-10 relative.
    """
    n = valid_sorted.sum(dim=1, keepdim=True).float()
    rank = torch.arange(valid_sorted.shape[1], device=valid_sorted.device, dtype=torch.float32)
    scaled = (torch.exp2(-(rank + 1.0)) - torch.exp2(-n)).clamp_min(0.0) * valid_sorted
    total = scaled.sum(dim=1, keepdim=True)
    # n = 1 has raw weight 2^0 - 1 = 0, so its row loss is 0; avoid 0/0.
    return torch.where(total > 0, scaled / total.clamp_min(torch.finfo(torch.float32).tiny), 0.0)


def reference_eager_loss(
    scores: torch.Tensor,
    labels: torch.Tensor | None,
    lengths: torch.Tensor | None,
    weighting: str = "listmle",
    respect_input_order: bool = True,
) -> torch.Tensor:
    """Mean over queries of -sum_r w_r (s_pi(r) - log sum_{t>=r} exp s_pi(t)); padding masked to -inf.

    Computed in float32 whatever the input dtype (what careful users do); autograd gives the gradient.
    """
    B, L = scores.shape
    s = scores.float()
    positions = torch.arange(L, device=scores.device)
    valid = positions < lengths[:, None] if lengths is not None else torch.ones_like(s, dtype=torch.bool)
    if not respect_input_order:
        # Descending by label; stable, so equal labels keep input order. Padding sorts last.
        keys = labels.float().masked_fill(~valid, float("-inf"))
        order = torch.sort(keys, dim=1, descending=True, stable=True).indices
        s = s.gather(1, order)
        valid = valid.gather(1, order)
    s = s.masked_fill(~valid, float("-inf"))
    suffix_logsumexp = torch.logcumsumexp(s.flip(1), dim=1).flip(1)
    log_prob = s - suffix_logsumexp
    if weighting == "plistmle":
        log_prob = log_prob * plistmle_weights(valid)
    # torch.where, not multiplication: padded slots hold -inf - -inf = nan.
    log_prob = torch.where(valid, log_prob, 0.0)
    return -log_prob.sum(dim=1).mean()


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


class Impl:
    name = "?"
    label = "?"
    groups: tuple[str, ...] | None = None  # case groups to run on; None = all

    def availability(self, device: torch.device) -> tuple[bool, str]:
        return True, ""

    def accepts(self, case: Case) -> tuple[bool, str]:
        if self.groups is not None and case.group not in self.groups:
            return False, f"only run on the {'/'.join(self.groups)} cases here"
        return self.supports(case)

    def supports(self, case: Case) -> tuple[bool, str]:
        return True, ""

    def prepare(self, case: Case, inputs: Inputs) -> Prepared:
        raise NotImplementedError


class ListmleKernels(Impl):
    """listmle_kernels.listmle_loss with backend="triton" or "torch" (`package`: another copy of it, under
    another name, as `python -m tools.compare_commits` imports an older commit's)."""

    def __init__(self, backend: str, validate: bool, package: str = "listmle_kernels", ties: str = "stable"):
        self.backend = backend
        self.validate = validate
        self.package = package
        self.ties = ties
        self.name = f"listmle_kernels_{backend}"
        self.label = f"lk-{backend}"

    def availability(self, device):
        try:
            import listmle_kernels  # noqa: F401
        except Exception as exc:  # ImportError, or a half-written package
            return False, f"skipped: listmle_kernels not importable ({type(exc).__name__}: {exc})"
        if self.backend == "triton":
            if device.type != "cuda":
                return False, "skipped: needs CUDA (interpreted Triton is never timed as performance)"
            if os.environ.get("TRITON_INTERPRET") == "1":
                return False, "skipped: TRITON_INTERPRET=1 is set; interpreted Triton is not performance"
        return True, ""

    def prepare(self, case, inputs):
        loss_fn = functools.partial(
            importlib.import_module(self.package).listmle_loss,
            inputs.scores,
            inputs.labels,
            lengths=inputs.lengths,
            lambda_weight="plistmle" if case.weighting == "plistmle" else None,
            respect_input_order=case.order == "input",
            ties=self.ties,
            reduction="mean",
            validate=self.validate,
            backend=self.backend,
        )
        return Prepared(loss_fn, inputs.scores, _identity)


class ReferenceEager(Impl):
    name = "reference_eager"
    label = "ref-eager"

    def prepare(self, case, inputs):
        loss_fn = functools.partial(
            reference_eager_loss, inputs.scores, inputs.labels, inputs.lengths,
            weighting=case.weighting, respect_input_order=case.order == "input",
        )
        return Prepared(loss_fn, inputs.scores, _identity)


class ReferenceOracle(Impl):
    """`reference.listmle_reference`, the literal per-row oracle the tests use
    ("reference/ eager"). A Python loop over rows, so only forward+backward float32 in the mode sweep
    at B <= MAX_ORACLE_ROWS; the vectorised reference above is the stricter baseline."""

    name = "reference_oracle"
    label = "oracle"
    groups = ("modes",)

    def availability(self, device):
        try:
            import reference  # noqa: F401
        except Exception as exc:
            return False, f"skipped: reference/ not importable ({type(exc).__name__})"
        return True, ""

    def supports(self, case):
        if case.B > MAX_ORACLE_ROWS or case.direction != "fwd+bwd" or case.dtype != "float32":
            return False, f"a loop over rows: fwd+bwd float32 at B <= {MAX_ORACLE_ROWS} only"
        return True, ""

    def prepare(self, case, inputs):
        from reference import listmle_reference

        loss_fn = functools.partial(
            listmle_reference, inputs.scores, inputs.labels if case.order == "labels" else None,
            lengths=inputs.lengths, lambda_weight="plistmle" if case.weighting == "plistmle" else None,
            respect_input_order=case.order == "input",
        )
        return Prepared(loss_fn, inputs.scores, _identity)


class ReferenceCompiled(Impl):
    """torch.compile of reference_eager_loss (default mode; dynamic shapes after the first recompile)."""

    name = "reference_compiled"
    label = "ref-compile"

    def __init__(self):
        self._compiled = None

    def availability(self, device):
        if not hasattr(torch, "compile"):
            return False, "skipped: torch.compile missing"
        # A full grid recompiles per mode and shape; past the default limit dynamo silently falls back
        # to eager, which would be timed as "compiled".
        from torch._dynamo import config as dynamo_config

        for knob in ("recompile_limit", "cache_size_limit"):
            if hasattr(dynamo_config, knob):
                setattr(dynamo_config, knob, max(getattr(dynamo_config, knob), 256))
        return True, ""

    def prepare(self, case, inputs):
        if self._compiled is None:
            self._compiled = torch.compile(reference_eager_loss)
        loss_fn = functools.partial(
            self._compiled, inputs.scores, inputs.labels, inputs.lengths,
            weighting=case.weighting, respect_input_order=case.order == "input",
        )
        return Prepared(loss_fn, inputs.scores, _identity)


class _StubCrossEncoder:
    """Stands in for a CrossEncoder so sentence-transformers' loss runs on precomputed logits.

    PListMLELoss.forward calls model.preprocess(pairs) -> tokens, batch_to_device(tokens, device),
    model(tokens)["scores"]. With mini_batch_size <= 0 there is a single call, which returns the
    precomputed flat logits (a leaf, so the gradient lands on it).
    """

    num_labels = 1

    def __init__(self, flat_logits: torch.Tensor):
        self.flat_logits = flat_logits
        self.device = flat_logits.device

    def preprocess(self, pairs, prompt=None, task=None):
        return {}

    def __call__(self, tokens):
        return {"scores": self.flat_logits}


def _one_based_plistmle_weights(mask):
    """sentence-transformers 6.2's default p-ListMLE weights, 2^(n - rank) - 1 for rank = 1..n (the kernel's)."""
    n = mask.sum(dim=1, keepdim=True)
    ranks = torch.arange(1, mask.size(1) + 1, device=mask.device).expand_as(mask)
    return (torch.pow(2.0, n - ranks) - 1.0) * mask


def _kernel_plistmle_weight(weight_class):
    """The installed release's default PListMLELambdaWeight where it is the kernel's (6.2); before 6.2 (0-based
    ranks, as in 6.0.1) the same ops on 1-based ranks, so the p-ListMLE cases compute the loss the
    other implementations compute (the equality check passes and the timing is of the same work)."""
    from listmle_kernels.integrations.sentence_transformers import _default_weights_match_kernel

    if _default_weights_match_kernel():
        return weight_class()
    return weight_class(rank_discount_fn=_one_based_plistmle_weights)


class SentenceTransformersLoss(Impl):
    """sentence-transformers' own ListMLELoss / PListMLELoss math, driven with precomputed logits."""

    name = "sentence_transformers"
    label = "st"

    def availability(self, device):
        try:
            import sentence_transformers
            from sentence_transformers.cross_encoder.losses import ListMLELoss, PListMLELoss  # noqa: F401
        except Exception as exc:
            return False, f"skipped: not installed ({type(exc).__name__})"
        return True, f"sentence-transformers {sentence_transformers.__version__}"

    def supports(self, case):
        if case.elements > MAX_ELEMENTS_SENTENCE_TRANSFORMERS:
            return False, f"B*L > {MAX_ELEMENTS_SENTENCE_TRANSFORMERS}: per-pair Python lists dominate"
        return True, ""

    def prepare(self, case, inputs):
        from sentence_transformers.cross_encoder.losses import ListMLELoss, PListMLELoss, PListMLELambdaWeight

        valid = inputs.valid_mask()
        row_lengths = valid.sum(dim=1).tolist()
        # The model's output: one logit per (query, doc) pair, rows concatenated. A leaf when timing
        # the loss alone; connected to the model's graph in the training step (non-leaf scores).
        if inputs.scores.is_leaf:
            flat = inputs.scores.detach()[valid].clone().requires_grad_(inputs.scores.requires_grad)
        else:
            flat = inputs.scores[valid]
        model = _StubCrossEncoder(flat)
        order = dict(respect_input_order=case.order == "input", mini_batch_size=-1)
        if case.weighting == "plistmle":
            loss_module = PListMLELoss(model, lambda_weight=_kernel_plistmle_weight(PListMLELambdaWeight), **order)
        else:
            loss_module = ListMLELoss(model, **order)
        queries = [None] * case.B
        docs = [range(n) for n in row_lengths]  # only len() and iteration are used
        # Input order ignores labels, but the loss still wants one label per document.
        label_source = inputs.labels if inputs.labels is not None else torch.zeros(valid.shape, device=flat.device)
        labels = [label_source[i, :n] for i, n in enumerate(row_lengths)]

        def grad_to_padded(grad_flat):
            out = torch.zeros(valid.shape, dtype=grad_flat.dtype, device=grad_flat.device)
            out[valid] = grad_flat
            return out

        return Prepared(functools.partial(loss_module, [queries, docs], labels), flat, grad_to_padded)


ALLRANK_IMPORTS = {  # the imports of allRank's loss files, and the values they bind in allRank 1.4.x
    "from allrank.data.dataset_loading import PADDED_Y_VALUE": {"PADDED_Y_VALUE": -1},
    "from allrank.models.losses import DEFAULT_EPS": {"DEFAULT_EPS": 1e-10},
}


@functools.cache
def load_allrank_loss(module: str, function: str):
    """allRank's loss `function` from `allrank/models/losses/<module>.py`, from the installed package
    (`pip install --no-deps allRank`).

    allRank pins torch <= 1.8, and importing `allrank.models.losses` runs the package's whole import
    chain (gcsfs, tensorboardX, torchvision), so next to a current torch the import usually fails.
    Then the function is run from the installed file itself, with its imported constants supplied;
    the file must import only those (ALLRANK_IMPORTS), or this refuses (another allRank version).
    The file runs in a namespace of its own, so what it looks up there (lambdaLoss finds its weighing
    schemes with `globals()[name]`) is its own.
    """
    try:
        return getattr(importlib.import_module(f"allrank.models.losses.{module}"), function)
    except Exception:  # ImportError, or a RuntimeError from its import chain (torchvision against this torch)
        spec = importlib.util.find_spec("allrank")  # locates the package without running it
        if spec is None or not spec.submodule_search_locations:
            raise
    path = Path(spec.submodule_search_locations[0]) / "models" / "losses" / f"{module}.py"
    namespace, kept = {}, []
    for line in path.read_text().splitlines():
        if line.startswith(("from allrank", "import allrank")):
            if line.strip() not in ALLRANK_IMPORTS:
                raise ImportError(f"{path} imports {line.strip()!r}: not the allRank version this bench knows")
            namespace.update(ALLRANK_IMPORTS[line.strip()])
            line = ""  # keeps the line numbers of tracebacks
        kept.append(line)
    exec(compile("\n".join(kept), str(path), "exec"), namespace)
    return namespace[function]


def load_allrank_listmle():
    """allRank's `listMLE` (see `load_allrank_loss`)."""
    return load_allrank_loss("listMLE", "listMLE")


class AllRankListMLE(Impl):
    """allRank's listMLE(y_pred, y_true): sort-by-labels ListMLE only, padding marked by label -1."""

    name = "allrank"
    label = "allrank"

    def availability(self, device):
        try:
            load_allrank_listmle()
        except Exception as exc:
            return False, f"skipped: not installed ({type(exc).__name__}; pip install --no-deps allRank)"
        return True, ""

    def supports(self, case):
        if case.order != "labels" or case.weighting != "listmle":
            return False, "allRank's listMLE only sorts by labels, without lambda weights"
        return True, ""

    def prepare(self, case, inputs):
        y_true = inputs.labels.masked_fill(~inputs.valid_mask(), -1.0)  # allRank's PADDED_Y_VALUE
        return Prepared(functools.partial(load_allrank_listmle(), inputs.scores, y_true), inputs.scores, _identity)


def all_impls(validate: bool = False) -> list[Impl]:
    """In table order: the kernels first, then the baselines they are compared with."""
    return [
        ListmleKernels("triton", validate),
        ListmleKernels("torch", validate),
        ReferenceEager(),
        ReferenceOracle(),
        ReferenceCompiled(),
        SentenceTransformersLoss(),
        AllRankListMLE(),
    ]
