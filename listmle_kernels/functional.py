"""The functional API: `listmle_loss`, `lambda_loss`, `ranknet_loss`, `listnet_loss`.

Eagerly each calls its autograd Function (autograd.py); while torch.compile traces, its registered operator
(custom_op.py), one opaque graph node.
"""

import warnings

import torch

from .autograd import LambdaLossFunction, ListMLEFunction, ListNetFunction, pair_divisor, reduce_rows
from .custom_op import lambdaloss_rows, listmle_rows, listnet_rows
from .validation import parse_lambdaloss_inputs, parse_listnet_inputs, prepare


def listmle_loss(scores, labels=None, *, mask=None, lengths=None, lambda_weight=None,
                 respect_input_order=True, ties="stable", generator=None, reduction="mean",
                 validate=True, backend="auto"):
    """ListMLE (Plackett-Luce negative log-likelihood of the target ranking) over a batch of lists.

    Per row, over its real documents in target order pi:
        loss = -sum_r w_r * (s[pi(r)] - log sum_{t >= r} exp s[pi(t)])
    exact (max-shifted, no epsilon inside the log); 0 for a row with no real document.

    Args:
        scores: (B, L) float16/bfloat16/float32/float64 model scores, CPU or CUDA, any strides.
        labels: (B, L) relevance, bool, integer or float16/bfloat16/float32/float64; needed when
            respect_input_order=False. Sorting compares labels as float32.
        mask: (B, L) bool, True = real document; holes anywhere. Not together with lengths.
        lengths: (B,) integer; the first lengths[b] entries of row b are real.
        lambda_weight: None (ListMLE, w = 1); "plistmle" (p-ListMLE, sentence-transformers 6.2:
            raw w = 2^(n - rank) - 1 for rank = 1..n); a (B, L) tensor of per-rank weights (column r
            weighs the r-th document of the target order); or a callable(rank_mask) -> (B, L) weights,
            rank_mask[b, r] = r < n_b. Lambda weights are normalised per row over its real ranks:
            w / (sum(w) + 1e-10), any magnitude; they must be finite and >= 0 there, and padded ranks
            are ignored whatever they hold.
        respect_input_order: True: the input order of the real documents is the target ranking
            (labels ignored). False: sort by labels, descending.
        ties: when sorting, "stable" keeps input order among equal labels; "random" shuffles them.
        generator: torch.Generator that seeds "random" ties (default: torch's global generator).
            Not under torch.compile, which does not trace generators (the global one works there).
        reduction: "mean" (sum of row losses / B, as sentence-transformers), "sum" or "none" (B,).
        validate: check values too (NaN labels, lengths range, weights finite and >= 0); on CUDA the checks are read
            together, one host sync (a second when the labels' sum is NaN: NaN labels at padding, or +inf
            meeting -inf).
        backend: "auto" (Triton for CUDA tensors, PyTorch otherwise), "triton" or "torch".

    Returns the loss in float32 (float64 for float64 scores); the gradient has the scores' dtype
    and is 0 at padding. NaN/inf scores propagate into the loss as in torch. Inside torch.compile
    the value checks of `validate` are skipped (they need data); the kernel is one graph node.
    """
    if torch.compiler.is_compiling():  # one opaque graph node; eagerly, the cheaper autograd.Function
        need_grad = scores.requires_grad and torch.is_grad_enabled()
        row_loss, _ = compiled_listmle_rows(scores, labels, mask, lengths, lambda_weight, respect_input_order,
                                            ties, generator, reduction, validate, backend, need_grad)
        return reduce_rows(row_loss, reduction)
    scores = _eager_scores(scores, "ListMLE loss and gradient are 0")
    return ListMLEFunction.apply(scores, labels, mask, lengths, lambda_weight, respect_input_order, ties,
                                 generator, reduction, validate, backend)


def compiled_listmle_rows(scores, labels, mask, lengths, lambda_weight, respect_input_order, ties, generator,
                          reduction, validate, backend, need_grad):
    """Check the arguments, then call the registered operator (the path torch.compile traces)."""
    if generator is not None and ties == "random" and not respect_input_order:
        # torch.compile traces torch's global generator (the seed becomes part of the graph) but no
        # torch.Generator object; say so here rather than in a graph-break report
        raise ValueError("ties='random' with a generator cannot be compiled: torch.compile does not trace "
                         "torch.Generator objects; leave generator=None (the seed then comes from torch's "
                         "global generator, reproducible under torch.manual_seed) or call the loss eagerly")
    inputs, seed = prepare(scores, labels, mask, lengths, lambda_weight, respect_input_order, ties, generator,
                           reduction, validate, backend)
    return listmle_rows(scores, inputs.labels, inputs.mask, inputs.lengths, inputs.weights,
                        inputs.weight_kind, inputs.random_ties, seed, 1, need_grad, inputs.backend)


def _eager_scores(scores, what_is_zero):
    """scores for an eager call: a warning for lists of one document (a cross-encoder's flattened logits, most
    likely), and detached under no_grad / inference_mode (no graph, so no gradient to compute)."""
    if (isinstance(scores, torch.Tensor) and not scores.is_nested  # a nested tensor has no shape to read
            and scores.dim() == 2 and scores.shape[1] == 1 and scores.shape[0] > 1):
        warnings.warn(f"scores has shape {tuple(scores.shape)}: every list holds one document, whose {what_is_zero}. "
                      "A cross-encoder's flattened (B * L, 1) logits must be reshaped to (B, L).", stacklevel=3)
    if isinstance(scores, torch.Tensor) and not torch.is_grad_enabled():
        scores = scores.detach()
    return scores


def lambda_loss(scores, labels, *, mask=None, lengths=None, weighting_scheme="ndcgloss2pp", k=None, sigma=1.0,
                mu=10.0, eps=1e-10, reduction_log="binary", reduction="mean", validate=True, backend="auto"):
    """LambdaLoss (Wang et al., CIKM 2018) over a batch of lists, as sentence-transformers defines it.

    Per row, the real documents in score order (descending; equal scores keep input order, NaN first) at
    positions p = 0..n-1, gains G_p = (2^max(y_p, 0) - 1) / max(eps, maxDCG@k), discounts D_p = log2(2 + p).
    The pair (i, j) counts when both labels are finite, y_i > y_j (for "ndcgloss1": any two finite labels, the
    diagonal included) and, with k, when i < k or j < k. Then

        row loss = -sum_{counted (i, j)} w_ij * logsigmoid(sigma * clamp(s_i - s_j, -1e8, 1e8)) / log(base)

    with log base 2 for reduction_log="binary", e for "natural", and w_ij by weighting_scheme:
    "none" 1 (RankNet); "ndcgloss1" G_i / D_i; "ndcgloss2" |1/log2(1+|i-j|) - 1/log2(2+|i-j|)| * |G_i - G_j|;
    "lambdarank" |1/D_i - 1/D_j| * |G_i - G_j|; "ndcgloss2pp" mu * ndcgloss2 + lambdarank.

    Args:
        scores: (B, L) float16/bfloat16/float32/float64 model scores, CPU or CUDA, any strides.
        labels: (B, L) relevance, bool, integer or float16/bfloat16/float32/float64, compared as float32.
            -inf at a real document: it takes a position, gains nothing and is in no pair. Negative labels gain
            nothing but still order pairs. NaN or +inf at a real document is a ValueError.
        mask: (B, L) bool, True = real document; holes anywhere. Not together with lengths.
        lengths: (B,) integer; the first lengths[b] entries of row b are real.
        weighting_scheme: "none", "ndcgloss1", "ndcgloss2", "lambdarank" or "ndcgloss2pp".
        k: None (or 0) for every pair, else pairs with a position < k (NDCG@k).
        sigma: the scale of score differences, finite and > 0.
        mu: NDCGLoss2++'s weight of NDCGLoss2, finite and >= 0.
        eps: the floor of maxDCG, finite and > 0.
        reduction_log: "binary" (log2) or "natural".
        reduction: "mean" (the sum of row losses over the batch's number of counted pairs, at least 1, as
            sentence-transformers), "sum", or "none" ((B,) row losses).
        validate: check values too (lengths' range, NaN or +inf labels at real documents); on CUDA one host
            sync. Skipped inside torch.compile.
        backend: "auto" (Triton for CUDA tensors, PyTorch otherwise), "triton" or "torch".

    Returns the loss in float32 (float64 for float64 scores); the gradient has the scores' dtype and is 0 at
    padding. Pairs are visited in tiles: memory O(B * L) (the PyTorch path: O(B * L * tile)), never (B, L, L).
    """
    if torch.compiler.is_compiling():
        inputs = parse_lambdaloss_inputs(scores, labels, mask, lengths, weighting_scheme, k, sigma, mu, eps,
                                         reduction_log, reduction, validate, backend)
        need_grad = scores.requires_grad and torch.is_grad_enabled()
        row_loss, row_pairs, _ = lambdaloss_rows(scores, inputs.labels, mask, lengths, inputs.scheme, inputs.k,
                                                 inputs.sigma, inputs.mu, inputs.eps, inputs.log_scale, need_grad,
                                                 inputs.backend)
        if reduction == "mean":
            return row_loss.sum() / pair_divisor(row_pairs, row_loss.dtype)
        return reduce_rows(row_loss, reduction)
    scores = _eager_scores(scores, "pairwise gradient is 0")
    return LambdaLossFunction.apply(scores, labels, mask, lengths, weighting_scheme, k, sigma, mu, eps, reduction_log,
                                    reduction, validate, backend)


def ranknet_loss(scores, labels, *, mask=None, lengths=None, k=None, sigma=1.0, eps=1e-10, reduction_log="binary",
                 reduction="mean", validate=True, backend="auto"):
    """RankNet (Burges et al., ICML 2005): `lambda_loss` with weighting_scheme="none", every pair of finite labels
    y_i > y_j weighing 1:

        row loss = -sum_{y_i > y_j} logsigmoid(sigma * clamp(s_i - s_j, -1e8, 1e8)) / log(base)

    The arguments mean what they mean in `lambda_loss` (eps is unused: no gains; it is checked all the same).
    """
    return lambda_loss(scores, labels, mask=mask, lengths=lengths, weighting_scheme="none", k=k, sigma=sigma,
                       eps=eps, reduction_log=reduction_log, reduction=reduction, validate=validate, backend=backend)


def listnet_loss(scores, labels, *, mask=None, lengths=None, reduction="mean", validate=True, backend="auto"):
    """ListNet (Cao et al., ICML 2007, top-one probabilities): per row, over its real documents,

        row loss = -sum_j p_j log softmax(s)_j,    p = softmax(labels)

    exact (max-shifted). A label of -inf has probability 0; a row with no real document has loss 0; a row whose
    real labels are all -inf has no target distribution (a ValueError when validate=True).

    Args:
        scores, labels, mask, lengths, validate, backend: as in `lambda_loss`.
        reduction: "mean" (over the B rows, as sentence-transformers; NaN for B = 0, as torch's mean), "sum" or
            "none" ((B,)).

    Returns the loss in float32 (float64 for float64 scores); the gradient softmax(s) - p (over the reduction's
    divisor) has the scores' dtype and is 0 at padding.
    """
    if torch.compiler.is_compiling():
        inputs = parse_listnet_inputs(scores, labels, mask, lengths, reduction, validate, backend)
        need_grad = scores.requires_grad and torch.is_grad_enabled()
        row_loss, _ = listnet_rows(scores, inputs.labels, mask, lengths, 1, need_grad, inputs.backend)
        return reduce_rows(row_loss, reduction)
    scores = _eager_scores(scores, "ListNet gradient is 0")
    return ListNetFunction.apply(scores, labels, mask, lengths, reduction, validate, backend)
