"""`listmle_loss`: the functional API.

Eagerly it calls `ListMLEFunction` (autograd.py); while torch.compile traces, the registered operator
(custom_op.py), one opaque graph node.
"""

import warnings

import torch

from .autograd import ListMLEFunction, reduce_rows
from .custom_op import listmle_rows
from .validation import prepare


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
    if isinstance(scores, torch.Tensor) and scores.dim() == 2 and scores.shape[1] == 1 and scores.shape[0] > 1:
        warnings.warn(f"scores has shape {tuple(scores.shape)}: every list holds one document, whose ListMLE loss and "
                      "gradient are 0. A cross-encoder's flattened (B * L, 1) logits must be reshaped to (B, L).",
                      stacklevel=2)
    if not torch.is_grad_enabled():  # no_grad / inference_mode: no graph, so no gradient to compute
        scores = scores.detach()
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
