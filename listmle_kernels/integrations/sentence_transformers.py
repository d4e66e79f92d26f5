"""sentence-transformers drop-ins for `CrossEncoderTrainer`: `ListMLELoss`, `PListMLELoss`, `LambdaLoss`,
`RankNetLoss`, `ListNetLoss`.

Same constructors, forward signature and config as sentence-transformers' own `cross_encoder.losses` classes
(they subclass them), but the loss and its gradient come from the fused kernels. A one-line change:

    from listmle_kernels.integrations.sentence_transformers import PListMLELoss, PListMLELambdaWeight
    from listmle_kernels.integrations.sentence_transformers import LambdaLoss, NDCGLoss2PPScheme

LambdaLoss and RankNetLoss: see `LambdaLoss` below for how equal scores are ordered and which weighting schemes
run in the kernel. The rest of this note is about ListMLE.

With `respect_input_order=False`, equal labels (with binary labels: all the negatives) are ordered as
sentence-transformers orders them, by its unstable `torch.sort` on the same labels matrix, so the loss
is the same, real documents labelled -inf (its own padding label) included: they are ranked, and weighed
by their position in that order, as sentence-transformers weighs them. The keyword-only `ties="stable"` (input order among equal labels) or `"random"` (seeded
shuffle) sorts inside the kernel instead: faster, and a defined order where the unstable sort's is
whatever its implementation does, but no longer sentence-transformers' loss when labels tie.

The default `PListMLELambdaWeight()` runs inside the kernel (where it is the kernel's "plistmle",
as in sentence-transformers 6.2), except in sentence-transformers' own order (by position, as above); a
`rank_discount_fn` (or any other lambda-weight module, or an older release's default) is called with the
rank mask exactly as sentence-transformers calls it, and integer or bool weights are taken in torch's default
float dtype, as its normalising division takes them. Custom weights must be finite and >= 0 at real ranks (a ValueError otherwise) and are normalised over the real ranks
only; sentence-transformers accepts negative weights and normalises over all columns, padding
included, so the two agree when `rank_discount_fn` returns 0 at padding, as its docs require.
Needs sentence-transformers >= 6 (`pip install listmle-kernels[sentence-transformers]`).
"""

from functools import cache

import torch
from torch import nn
try:
    from sentence_transformers.cross_encoder import losses as st_losses
    from sentence_transformers.cross_encoder.losses.lambda_loss import BaseWeightingScheme
    from sentence_transformers.util import batch_to_device
except ImportError as err:
    raise ImportError(f"listmle_kernels.integrations.sentence_transformers needs sentence-transformers >= 6 "
                      f"({err}): pip install listmle-kernels[sentence-transformers]") from err

from ..functional import lambda_loss, listmle_loss, listnet_loss

__all__ = ["ListMLELoss", "PListMLELoss", "PListMLELambdaWeight", "LambdaLoss", "RankNetLoss", "ListNetLoss",
           "BaseWeightingScheme", "NoWeightingScheme", "NDCGLoss1Scheme", "NDCGLoss2Scheme", "LambdaRankScheme",
           "NDCGLoss2PPScheme"]

PListMLELambdaWeight = st_losses.PListMLELambdaWeight
NoWeightingScheme = st_losses.NoWeightingScheme
NDCGLoss1Scheme = st_losses.NDCGLoss1Scheme
NDCGLoss2Scheme = st_losses.NDCGLoss2Scheme
LambdaRankScheme = st_losses.LambdaRankScheme
NDCGLoss2PPScheme = st_losses.NDCGLoss2PPScheme

# sentence-transformers' weighting schemes by the kernels' names (exact types: a subclass may weigh otherwise)
_SCHEME_NAMES = {NoWeightingScheme: "none", NDCGLoss1Scheme: "ndcgloss1", NDCGLoss2Scheme: "ndcgloss2",
                 LambdaRankScheme: "lambdarank", NDCGLoss2PPScheme: "ndcgloss2pp"}


@cache
def _default_weights_match_kernel() -> bool:
    """Whether this sentence-transformers' default weights are the kernel's "plistmle" (1-based ranks,
    n = 3 -> (3, 1, 0) / 4, sentence-transformers 6.2). Older releases (6.0.1 included) use 0-based
    ranks, (7, 3, 1) / 11; then the drop-in uses their weights as given, so it stays a drop-in."""
    weights = PListMLELambdaWeight()(torch.ones(1, 3, dtype=torch.bool)).double()
    return torch.allclose(weights / weights.sum(), torch.tensor([[0.75, 0.25, 0.0]], dtype=torch.float64))


def _float_weights(lambda_weight):
    """`lambda_weight` as a callable(rank_mask) whose integer or bool weights come back in torch's default float
    dtype: what sentence-transformers' normalising division makes of them."""
    def weights(rank_mask):
        raw = lambda_weight(rank_mask)
        return raw if raw.is_floating_point() else raw.to(torch.get_default_dtype())
    return weights


def _ranked_as_sentence_transformers(scores, real, label_matrix, lengths, weights):
    """Scores in sentence-transformers' target order and the lambda weights it gives each rank (None for none).

    Its order is its own unstable `torch.sort` of the labels matrix, where padding is labelled -inf too: a real
    document labelled -inf may land after a padding slot. It is still ranked (padding has no probability), but
    weighed by its position, not its rank, and the padding slot's weight is lost from the numerator while it
    stays in the normaliser. Here the real documents come first in that order, each with the weight of its
    position (0 past the real ranks, as sentence-transformers requires of its weights there); the lost weight
    goes to the last rank, whose log-probability is log 1 = 0, so it counts in the normaliser only.
    """
    order = label_matrix.sort(descending=True, dim=1).indices
    slots = torch.sort(real.gather(1, order).logical_not().view(torch.uint8), dim=1, stable=True).indices
    ranked = scores.gather(1, order.gather(1, slots))
    if weights is None:
        return ranked, None
    # Columns are sorted positions here, and `real` (the first n of each row) marks both real positions and
    # real ranks.
    by_position = torch.where(real, _float_weights(weights)(real), 0)  # 0 past the real ranks, as required there
    by_rank = torch.where(real, by_position.gather(1, slots), 0)
    lost = (by_position.sum(1) - by_rank.sum(1)).clamp_min_(0)  # padding's positions among the first n
    return ranked, by_rank.scatter_add(1, (lengths - 1).clamp_min(0)[:, None], lost[:, None])


def _score_pairs(model, pairs, mini_batch_size, prompt, task):
    """One logit per (query, document) pair, in `mini_batch_size` chunks (sentence-transformers' rule)."""
    logits = []
    for start in range(0, len(pairs), mini_batch_size):
        features = model.preprocess(pairs[start:start + mini_batch_size], prompt=prompt, task=task)
        logits.append(model(batch_to_device(features, model.device))["scores"].view(-1))
    return torch.cat(logits)


class _FusedForward:
    """The forward every drop-in shares: score all pairs, pad per query, then `self._fused_loss(scores,
    label_matrix, real, lengths)` with scores 0 at padding and labels -inf there (sentence-transformers' labels
    matrix, float32)."""

    ties = None  # the drop-ins that sort take it as a keyword-only argument

    def forward(self, inputs, labels, prompt=None, task=None):
        if isinstance(labels, torch.Tensor):
            raise ValueError(f"{type(self).__name__} expects a list of label tensors, one per query, "
                             "got a single tensor")
        if len(inputs) != 2:
            raise ValueError(f"{type(self).__name__} expects (queries, documents_list), got {len(inputs)} inputs")
        queries, docs_list = inputs
        sizes = [len(docs) for docs in docs_list]
        if sizes != [len(row) for row in labels]:
            raise ValueError(f"documents per query {sizes} do not match labels per query "
                             f"{[len(row) for row in labels]}")
        pairs = [(query, doc) for query, docs in zip(queries, docs_list) for doc in docs]
        mini_batch_size = self.mini_batch_size or len(queries)
        if mini_batch_size <= 0:
            mini_batch_size = len(pairs)
        logits = self.activation_fn(_score_pairs(self.model, pairs, mini_batch_size, prompt, task).float())

        device = self.model.device  # where sentence-transformers builds its matrices (and sorts)
        lengths = torch.tensor(sizes, device=device)
        real = torch.arange(max(sizes, default=0), device=device)[None, :] < lengths[:, None]
        scores = logits.new_zeros(real.shape).masked_scatter(real, logits.to(device))
        # sentence-transformers' labels matrix: float32, -inf at padding, so padding sorts last
        label_matrix = torch.full(real.shape, float("-inf"), device=device).masked_scatter(
            real, torch.cat([torch.as_tensor(row).float() for row in labels]).to(device))
        return self._fused_loss(scores, label_matrix, real, lengths)

    def get_config_dict(self):
        config = super().get_config_dict()
        if self.ties is not None:  # the default is sentence-transformers' own config
            config["ties"] = self.ties
        return config


class _FusedListMLEForward(_FusedForward):
    """ListMLE / p-ListMLE through `listmle_loss`."""

    def _fused_loss(self, scores, label_matrix, real, lengths):
        weight = self.lambda_weight
        if not (self.respect_input_order or self.ties is not None):
            # Equal labels (binary labels: every negative) leave the order to torch's unstable sort, and
            # the loss depends on it; the same sort call on the same matrix gives sentence-transformers' order.
            ranked, by_rank = _ranked_as_sentence_transformers(scores, real, label_matrix, lengths, weight)
            return listmle_loss(ranked, lengths=lengths, lambda_weight=by_rank, respect_input_order=True)
        if (type(weight) is PListMLELambdaWeight and weight.rank_discount_fn is None
                and _default_weights_match_kernel()):
            weight = "plistmle"  # the default weights, computed in the kernel
        elif weight is not None:
            weight = _float_weights(weight)
        return listmle_loss(scores, label_matrix, lengths=lengths, lambda_weight=weight,
                            respect_input_order=self.respect_input_order, ties=self.ties or "stable")


def _check_ties(ties, choices=(None, "stable", "random")):
    if ties not in choices:
        raise ValueError(f"ties must be None (sentence-transformers' order), "
                         f"{' or '.join(repr(c) for c in choices[1:])}; got {ties!r}")
    return ties


class PListMLELoss(_FusedListMLEForward, st_losses.PListMLELoss):
    """sentence-transformers' `PListMLELoss`, computed by the fused kernel.

    `ties` (keyword-only, used with respect_input_order=False): None orders equal labels as
    sentence-transformers does; "stable" / "random" sort inside the kernel instead.
    """

    def __init__(self, model, lambda_weight=PListMLELambdaWeight(), activation_fn=nn.Identity(),
                 mini_batch_size=None, respect_input_order=True, *, ties=None):
        super().__init__(model, lambda_weight=lambda_weight, activation_fn=activation_fn,
                         mini_batch_size=mini_batch_size, respect_input_order=respect_input_order)
        self.ties = _check_ties(ties)


class ListMLELoss(_FusedListMLEForward, st_losses.ListMLELoss):
    """sentence-transformers' `ListMLELoss`, computed by the fused kernel (`ties` as in `PListMLELoss`)."""

    def __init__(self, model, activation_fn=nn.Identity(), mini_batch_size=None, respect_input_order=True,
                 *, ties=None):
        super().__init__(model, activation_fn=activation_fn, mini_batch_size=mini_batch_size,
                         respect_input_order=respect_input_order)
        self.ties = _check_ties(ties)


def _kernel_scheme(scheme):
    """(name, mu) of a weighting scheme the kernels compute, or None for another (a custom BaseWeightingScheme,
    a subclass, or an NDCGLoss2++ whose parts were replaced or whose mu is not finite and >= 0)."""
    name = _SCHEME_NAMES.get(type(scheme))
    if name != "ndcgloss2pp":
        return None if name is None else (name, 10.0)
    parts_known = type(scheme.ndcg_loss2) is NDCGLoss2Scheme and type(scheme.lambda_rank) is LambdaRankScheme
    mu = scheme.mu
    if not (parts_known and isinstance(mu, (int, float)) and not isinstance(mu, bool) and 0 <= mu < float("inf")):
        return None
    return name, float(mu)


class _FusedLambdaLossForward(_FusedForward):
    """LambdaLoss / RankNet through `lambda_loss`, or sentence-transformers' own forward for a weighting scheme
    the kernels do not know."""

    def forward(self, inputs, labels, prompt=None, task=None):
        if _kernel_scheme(self.weighting_scheme) is None:
            # A custom scheme is a module computing a (B, L, L) weight matrix from gains and discounts: only
            # sentence-transformers' own forward (its math, O(L^2) memory) can call it.
            return st_losses.LambdaLoss.forward(self, inputs, labels, prompt=prompt, task=task)
        return super().forward(inputs, labels, prompt=prompt, task=task)

    def _fused_loss(self, scores, label_matrix, real, lengths):
        scheme, mu = _kernel_scheme(self.weighting_scheme)
        options = dict(weighting_scheme=scheme, k=self.k or None, sigma=self.sigma, mu=mu, eps=self.eps,
                       reduction_log=self.reduction_log)
        if self.ties is None:
            # Equal scores leave the order (so the positions, so the weights) to torch's unstable sort. The same
            # sort call on sentence-transformers' own -1e16-padded logits matrix gives its order; the kernel's
            # stable sort of scores already in that order keeps it.
            key = torch.where(real, scores.detach(), -1e16)
            order = key.sort(descending=True, dim=-1).indices
            return lambda_loss(scores.gather(1, order), label_matrix.gather(1, order), mask=real.gather(1, order),
                               **options)
        return lambda_loss(scores, label_matrix, lengths=lengths, **options)


_LAMBDALOSS_DIFFERENCES = """
    Computed by the fused kernel with memory O(B * L) (sentence-transformers' forward builds (B, L, L) tensors).
    `ties` (keyword-only): None (default) orders equal scores as sentence-transformers does, by its own unstable
    `torch.sort` call on its -1e16-padded logits matrix; "stable" sorts in the kernel instead (input order among
    equal scores), no longer sentence-transformers' loss where scores tie.

    The weighting schemes `NoWeightingScheme`, `NDCGLoss1Scheme`, `NDCGLoss2Scheme`, `LambdaRankScheme` and
    `NDCGLoss2PPScheme(mu)` (mu finite and >= 0) run in the kernel. Any other `BaseWeightingScheme` (a custom one,
    or a subclass of these) is a module computing a (B, L, L) weight matrix, which only sentence-transformers'
    own forward can call: it runs that forward (its math and its O(L^2) memory).

    Where the two differ: real scores at or below -1e16 (sentence-transformers' padding value) keep their
    positions among the real documents here, where sentence-transformers may rank padding above them; a NaN or
    +inf label at a real document is a ValueError here.
"""


class LambdaLoss(_FusedLambdaLossForward, st_losses.LambdaLoss):
    __doc__ = "sentence-transformers' `LambdaLoss`, computed by the fused kernel.\n" + _LAMBDALOSS_DIFFERENCES

    def __init__(self, model, weighting_scheme=NDCGLoss2PPScheme(), k=None, sigma=1.0, eps=1e-10,
                 reduction_log="binary", activation_fn=nn.Identity(), mini_batch_size=None, *, ties=None):
        super().__init__(model, weighting_scheme=weighting_scheme, k=k, sigma=sigma, eps=eps,
                         reduction_log=reduction_log, activation_fn=activation_fn, mini_batch_size=mini_batch_size)
        self.ties = _check_ties(ties, (None, "stable"))


class RankNetLoss(_FusedLambdaLossForward, st_losses.RankNetLoss):
    __doc__ = "sentence-transformers' `RankNetLoss` (LambdaLoss without weights), computed by the fused kernel.\n" \
        + _LAMBDALOSS_DIFFERENCES

    def __init__(self, model, k=None, sigma=1.0, eps=1e-10, reduction_log="binary", activation_fn=nn.Identity(),
                 mini_batch_size=None, *, ties=None):
        super().__init__(model, k=k, sigma=sigma, eps=eps, reduction_log=reduction_log, activation_fn=activation_fn,
                         mini_batch_size=mini_batch_size)
        self.ties = _check_ties(ties, (None, "stable"))


class ListNetLoss(_FusedForward, st_losses.ListNetLoss):
    """sentence-transformers' `ListNetLoss`, computed by the fused kernel (exact, max-shifted; no sort, so no
    `ties`).

    Where the two differ: a real score at or below -1e16 (sentence-transformers' padding value) is not
    outweighed by padding here; a query whose labels are all -inf has no target distribution, a ValueError here
    (NaN there), as is a NaN or +inf label at a real document.
    """

    def _fused_loss(self, scores, label_matrix, real, lengths):
        return listnet_loss(scores, label_matrix, lengths=lengths)
