"""sentence-transformers drop-in: `ListMLELoss` / `PListMLELoss` for `CrossEncoderTrainer`.

Same constructors, forward signature and config as sentence-transformers' own
`cross_encoder.losses.ListMLELoss` / `PListMLELoss` (they subclass them), but the loss and its
gradient come from the fused kernel. A one-line change:

    from listmle_kernels.integrations.sentence_transformers import PListMLELoss, PListMLELambdaWeight

The default `PListMLELambdaWeight()` runs inside the kernel (where it is the kernel's "plistmle",
as in sentence-transformers 6.2); a `rank_discount_fn` (or any other lambda-weight module, or an older
release's default) is called with the rank mask exactly as sentence-transformers calls it.
Needs sentence-transformers (`pip install listmle-kernels[sentence-transformers]`).
"""

from functools import cache

import torch
from sentence_transformers.cross_encoder import losses as st_losses
from sentence_transformers.util import batch_to_device

from ..functional import listmle_loss

PListMLELambdaWeight = st_losses.PListMLELambdaWeight


@cache
def _default_weights_match_kernel() -> bool:
    """Whether this sentence-transformers' default weights are the kernel's "plistmle" (1-based ranks,
    n = 3 -> (3, 1, 0) / 4, sentence-transformers 6.2). Older releases (6.0.1 included) use 0-based
    ranks, (7, 3, 1) / 11; then the drop-in uses their weights as given, so it stays a drop-in."""
    weights = PListMLELambdaWeight()(torch.ones(1, 3, dtype=torch.bool)).double()
    return torch.allclose(weights / weights.sum(), torch.tensor([[0.75, 0.25, 0.0]], dtype=torch.float64))


def _score_pairs(model, pairs, mini_batch_size, prompt, task):
    """One logit per (query, document) pair, in `mini_batch_size` chunks (sentence-transformers' rule)."""
    logits = []
    for start in range(0, len(pairs), mini_batch_size):
        chunk = pairs[start:start + mini_batch_size]
        if hasattr(model, "preprocess"):  # sentence-transformers >= 6
            features = batch_to_device(model.preprocess(chunk, prompt=prompt, task=task), model.device)
            logits.append(model(features)["scores"].view(-1))
        else:  # 5.x
            features = model.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt").to(model.device)
            logits.append(model.model(**features)[0].view(-1))
    return torch.cat(logits)


class _FusedListMLEForward:
    """The forward both drop-ins share: score all pairs, pad per query, call the fused loss."""

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

        device = logits.device
        lengths = torch.tensor(sizes, device=device)
        real = torch.arange(max(sizes, default=0), device=device)[None, :] < lengths[:, None]
        scores = logits.new_zeros(real.shape).masked_scatter(real, logits)
        label_matrix = torch.zeros(real.shape, device=device).masked_scatter(
            real, torch.cat([torch.as_tensor(row, dtype=torch.float32) for row in labels]).to(device))

        weight = self.lambda_weight
        if (type(weight) is PListMLELambdaWeight and weight.rank_discount_fn is None
                and _default_weights_match_kernel()):
            weight = "plistmle"  # the default weights, computed in the kernel
        return listmle_loss(scores, label_matrix, lengths=lengths, lambda_weight=weight,
                            respect_input_order=self.respect_input_order)


class PListMLELoss(_FusedListMLEForward, st_losses.PListMLELoss):
    """sentence-transformers' `PListMLELoss`, computed by the fused kernel."""


class ListMLELoss(_FusedListMLEForward, st_losses.ListMLELoss):
    """sentence-transformers' `ListMLELoss`, computed by the fused kernel."""
