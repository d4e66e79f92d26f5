"""Every implementation of LambdaLoss (NDCGLoss2++), RankNet and ListNet the pairwise benchmark compares,
behind bench.impls' calling convention (`prepare(case, inputs)` -> `Prepared`).

  ours                   listmle_kernels.lambda_loss / ranknet_loss / listnet_loss: backend "torch" on the CPU,
                         "auto" on CUDA (the Triton kernels)
  sentence-transformers  its own LambdaLoss / RankNetLoss / ListNetLoss classes, fed the scores through a stub
                         CrossEncoder: the timed code is theirs, from the flat logits to the loss
  allRank                its own lambdaLoss (ndcgLoss2PP_scheme; no scheme for RankNet) and listNet functions

The peers are imported lazily and reported as skipped with the reason when missing; their math is never
re-implemented here.
"""

from __future__ import annotations

import functools
import importlib

import torch

from bench.impls import Prepared, _StubCrossEncoder, load_allrank_loss
from bench.pairwise_cases import PairwiseCase, PairwiseInputs

ALLRANK_PADDING_LABEL = -1.0  # allRank's PADDED_Y_VALUE: the label that marks a padded slot


def _identity(grad):
    return grad


class PairwiseImpl:
    name = "?"
    label = "?"

    def availability(self, loss: str) -> tuple[bool, str]:
        return True, ""

    def prepare(self, case: PairwiseCase, inputs: PairwiseInputs) -> Prepared:
        raise NotImplementedError


class Ours(PairwiseImpl):
    """listmle_kernels' public loss functions, validate=False (the input checks are not the loss)."""

    FUNCTIONS = {"lambdaloss": "lambda_loss", "ranknet": "ranknet_loss", "listnet": "listnet_loss"}

    def __init__(self, backend: str = "torch", package: str = "listmle_kernels"):
        self.backend = backend
        self.package = package
        self.name = f"listmle_kernels_{backend}"
        self.label = f"lk-{backend}"

    def function(self, loss: str):
        return getattr(importlib.import_module(self.package), self.FUNCTIONS[loss])

    def availability(self, loss):
        try:
            self.function(loss)
        except Exception as exc:  # ImportError, AttributeError: not in this checkout yet
            return False, f"skipped: {self.package}.{self.FUNCTIONS[loss]} not importable ({type(exc).__name__})"
        return True, ""

    def prepare(self, case, inputs):
        options = dict(lengths=inputs.lengths, reduction="mean", validate=False, backend=self.backend)
        if case.loss == "lambdaloss":
            options["weighting_scheme"] = "ndcgloss2pp"
        return Prepared(functools.partial(self.function(case.loss), inputs.scores, inputs.labels, **options),
                        inputs.scores, _identity)


def sentence_transformers_loss(loss: str, model):
    """sentence-transformers' loss module for `loss` on `model`, whole batch in one model call."""
    from sentence_transformers.cross_encoder import losses

    if loss == "lambdaloss":
        return losses.LambdaLoss(model, weighting_scheme=losses.NDCGLoss2PPScheme(), mini_batch_size=-1)
    if loss == "ranknet":
        return losses.RankNetLoss(model, mini_batch_size=-1)
    return losses.ListNetLoss(model, mini_batch_size=-1)


class SentenceTransformers(PairwiseImpl):
    """sentence-transformers' own loss classes. The stub model returns the real documents' scores as its flat
    logits (a leaf), so what is timed is the loss's own work: Python lists of pairs, the padded (B, L) matrices
    (logits -1e16, labels -inf at padding), and for LambdaLoss/RankNet its (B, L, L) pair tensors."""

    name = "sentence_transformers"
    label = "st"

    def availability(self, loss):
        try:
            import sentence_transformers
            from sentence_transformers.cross_encoder.losses import LambdaLoss, ListNetLoss  # noqa: F401
        except Exception as exc:
            return False, f"skipped: not installed ({type(exc).__name__})"
        return True, f"sentence-transformers {sentence_transformers.__version__}"

    def prepare(self, case, inputs):
        return self.prepare_rows(case, inputs, slice(None))

    def prepare_rows(self, case, inputs, rows: slice) -> Prepared:
        """Its loss over `rows` of the batch alone (the reference runs it a block of rows at a time)."""
        valid = inputs.valid_mask()[rows]
        row_lengths = valid.sum(dim=1).tolist()
        flat = inputs.scores.detach()[rows][valid].clone().requires_grad_(True)
        module = sentence_transformers_loss(case.loss, _StubCrossEncoder(flat))
        queries = [None] * len(row_lengths)
        docs = [range(n) for n in row_lengths]  # only len() and iteration are used
        labels = [inputs.labels[rows][i, :n] for i, n in enumerate(row_lengths)]

        def grad_to_padded(grad_flat):
            out = torch.zeros(valid.shape, dtype=grad_flat.dtype, device=grad_flat.device)
            out[valid] = grad_flat
            return out

        return Prepared(functools.partial(module, [queries, docs], labels), flat, grad_to_padded)


class AllRank(PairwiseImpl):
    """allRank's lambdaLoss(y_pred, y_true, weighing_scheme=...) with reduction="mean" (the mean over counted
    pairs, as sentence-transformers and ours divide), and listNet(y_pred, y_true); padding marked by label -1."""

    name = "allrank"
    label = "allrank"
    SCHEMES = {"lambdaloss": "ndcgLoss2PP_scheme", "ranknet": None}

    def availability(self, loss):
        try:
            self.function(loss)
        except Exception as exc:
            return False, f"skipped: not installed ({type(exc).__name__}; pip install --no-deps allRank)"
        return True, ""

    @staticmethod
    def function(loss):
        return load_allrank_loss("listNet", "listNet") if loss == "listnet" else load_allrank_loss(
            "lambdaLoss", "lambdaLoss")

    def prepare(self, case, inputs):
        y_true = inputs.labels.masked_fill(~inputs.valid_mask(), ALLRANK_PADDING_LABEL)
        options = {} if case.loss == "listnet" else dict(weighing_scheme=self.SCHEMES[case.loss], reduction="mean")
        return Prepared(functools.partial(self.function(case.loss), inputs.scores, y_true, **options),
                        inputs.scores, _identity)


def materialises_pairs(impl: PairwiseImpl, loss: str) -> bool:
    """Whether `impl` holds (B, L, L) tensors for `loss`, so that its peak memory grows as B L^2 and is estimated
    before it runs (bench.pairwise): the peers' LambdaLoss and RankNet do; every ListNet, and ours, do not."""
    return impl.name in ("sentence_transformers", "allrank") and loss in ("lambdaloss", "ranknet")


def all_impls(device: torch.device = torch.device("cpu")) -> list[PairwiseImpl]:
    """In table order: ours first (the PyTorch path on the CPU; on CUDA what backend="auto" picks there, the
    Triton kernels), then the peers."""
    return [Ours("auto" if torch.device(device).type == "cuda" else "torch"), SentenceTransformers(), AllRank()]
