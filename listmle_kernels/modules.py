"""`nn.Module` wrappers around `listmle_loss`."""

from torch import nn

from .functional import listmle_loss


class ListMLELoss(nn.Module):
    """ListMLE as a module; `forward(scores, labels=None, mask=None, lengths=None)`.

    See `listmle_loss` for the meaning of every argument.
    """

    def __init__(self, lambda_weight=None, respect_input_order=True, ties="stable", reduction="mean",
                 generator=None, backend="auto"):
        super().__init__()
        self.lambda_weight = lambda_weight
        self.respect_input_order = respect_input_order
        self.ties = ties
        self.reduction = reduction
        self.generator = generator
        self.backend = backend

    def forward(self, scores, labels=None, mask=None, lengths=None):
        return listmle_loss(scores, labels, mask=mask, lengths=lengths, lambda_weight=self.lambda_weight,
                            respect_input_order=self.respect_input_order, ties=self.ties,
                            generator=self.generator, reduction=self.reduction, backend=self.backend)

    def extra_repr(self):
        weight = self.lambda_weight if isinstance(self.lambda_weight, (str, type(None))) else "custom"
        return (f"lambda_weight={weight!r}, respect_input_order={self.respect_input_order}, "
                f"ties={self.ties!r}, reduction={self.reduction!r}")


class PListMLELoss(ListMLELoss):
    """p-ListMLE: ListMLE with position-aware lambda weights (default "plistmle")."""

    def __init__(self, lambda_weight="plistmle", respect_input_order=True, ties="stable", reduction="mean",
                 generator=None, backend="auto"):
        super().__init__(lambda_weight, respect_input_order, ties, reduction, generator, backend)
