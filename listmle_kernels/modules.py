"""`nn.Module` wrappers around `listmle_loss`."""

from torch import nn

from .functional import listmle_loss


class ListMLELoss(nn.Module):
    """ListMLE as a module; `forward(scores, labels=None, mask=None, lengths=None)`.

    See `listmle_loss` for the meaning of every argument.

    Shape:
        - scores: (B, L), B lists of L documents, float16/bfloat16/float32/float64.
        - labels: (B, L), bool, integer or float16/bfloat16/float32/float64; needed when respect_input_order=False.
        - mask: (B, L) bool, True at real documents; or lengths: (B,) integer, real documents first.
        - Output: a scalar for reduction "mean" or "sum"; (B,) for "none".

    Examples:
        >>> import torch
        >>> from listmle_kernels import ListMLELoss
        >>> scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]], requires_grad=True)
        >>> ListMLELoss(reduction="none")(scores)  # the input order is the target ranking
        tensor([0.7209, 3.7209], grad_fn=<ListMLEFunctionBackward>)
        >>> ListMLELoss(reduction="none")(scores, lengths=torch.tensor([3, 2]))  # row 1: two real documents
        tensor([0.7209, 1.3133], grad_fn=<ListMLEFunctionBackward>)
        >>> labels = torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
        >>> loss = ListMLELoss(respect_input_order=False)(scores, labels)  # target: labels descending
        >>> loss
        tensor(2.2209, grad_fn=<ListMLEFunctionBackward>)
        >>> loss.backward()
        >>> scores.grad.shape
        torch.Size([2, 3])
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
    """p-ListMLE: ListMLE with position-aware lambda weights (default "plistmle").

    Shape: as `ListMLELoss`.

    Examples:
        >>> import torch
        >>> from listmle_kernels import PListMLELoss
        >>> scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
        >>> PListMLELoss(reduction="none")(scores)  # rank weights (3, 1, 0) / 4: the top rank weighs most
        tensor([0.3840, 2.1340])
    """

    def __init__(self, lambda_weight="plistmle", respect_input_order=True, ties="stable", reduction="mean",
                 generator=None, backend="auto"):
        super().__init__(lambda_weight, respect_input_order, ties, reduction, generator, backend)
