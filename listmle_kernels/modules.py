"""`nn.Module` wrappers around the functional losses. Each checks its options when it is built: a misspelt
reduction fails where the loss is configured, not at the first batch of a training run."""

from torch import nn

from .functional import lambda_loss, listmle_loss, listnet_loss
from .validation import check_choices, check_generator, check_lambdaloss_options, check_listmle_options


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
        check_listmle_options(lambda_weight, respect_input_order, ties, reduction, backend)
        check_generator(generator)
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


class LambdaLoss(nn.Module):
    """LambdaLoss as a module; `forward(scores, labels, mask=None, lengths=None)`.

    See `lambda_loss` for the definition and the meaning of every argument.

    Shape:
        - scores: (B, L), B lists of L documents, float16/bfloat16/float32/float64.
        - labels: (B, L), bool, integer or float16/bfloat16/float32/float64 relevance.
        - mask: (B, L) bool, True at real documents; or lengths: (B,) integer, real documents first.
        - Output: a scalar for reduction "mean" or "sum"; (B,) for "none".

    Examples:
        >>> import torch
        >>> from listmle_kernels import LambdaLoss
        >>> scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]], requires_grad=True)
        >>> labels = torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
        >>> LambdaLoss(reduction="none")(scores, labels)  # row 0 ranked right, row 1 reversed
        tensor([ 1.7601, 10.6938], grad_fn=<LambdaLossFunctionBackward>)
        >>> loss = LambdaLoss(weighting_scheme="lambdarank", k=2)(scores, labels, lengths=torch.tensor([3, 2]))
        >>> loss  # the sum of the row losses over the 4 pairs counted in the batch
        tensor(0.1422, grad_fn=<LambdaLossFunctionBackward>)
        >>> loss.backward()
        >>> scores.grad.shape
        torch.Size([2, 3])
    """

    def __init__(self, weighting_scheme="ndcgloss2pp", k=None, sigma=1.0, mu=10.0, eps=1e-10, reduction_log="binary",
                 reduction="mean", backend="auto"):
        super().__init__()
        check_lambdaloss_options(weighting_scheme, k, sigma, mu, eps, reduction_log, reduction, backend)
        self.weighting_scheme = weighting_scheme
        self.k = k
        self.sigma = sigma
        self.mu = mu
        self.eps = eps
        self.reduction_log = reduction_log
        self.reduction = reduction
        self.backend = backend

    def forward(self, scores, labels, mask=None, lengths=None):
        return lambda_loss(scores, labels, mask=mask, lengths=lengths, weighting_scheme=self.weighting_scheme,
                           k=self.k, sigma=self.sigma, mu=self.mu, eps=self.eps, reduction_log=self.reduction_log,
                           reduction=self.reduction, backend=self.backend)

    def extra_repr(self):
        return (f"weighting_scheme={self.weighting_scheme!r}, k={self.k}, sigma={self.sigma}, mu={self.mu}, "
                f"reduction_log={self.reduction_log!r}, reduction={self.reduction!r}")


class RankNetLoss(LambdaLoss):
    """RankNet: LambdaLoss with every counted pair weighing 1 (`ranknet_loss`).

    Shape: as `LambdaLoss`.

    Examples:
        >>> import torch
        >>> from listmle_kernels import RankNetLoss
        >>> scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
        >>> labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
        >>> RankNetLoss(reduction="none")(scores, labels)  # two pairs a row: the positive above each negative
        tensor([0.6351, 4.9631])
        >>> RankNetLoss()(scores, labels)  # "mean": over the batch's 4 counted pairs
        tensor(1.3996)
    """

    def __init__(self, k=None, sigma=1.0, eps=1e-10, reduction_log="binary", reduction="mean", backend="auto"):
        super().__init__("none", k, sigma, 10.0, eps, reduction_log, reduction, backend)

    def extra_repr(self):
        return f"k={self.k}, sigma={self.sigma}, reduction_log={self.reduction_log!r}, reduction={self.reduction!r}"


class ListNetLoss(nn.Module):
    """ListNet as a module; `forward(scores, labels, mask=None, lengths=None)` (see `listnet_loss`).

    Shape: as `LambdaLoss`.

    Examples:
        >>> import torch
        >>> from listmle_kernels import ListNetLoss
        >>> scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]], requires_grad=True)
        >>> labels = torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, float("-inf")]])  # -inf: probability 0
        >>> ListNetLoss(reduction="none")(scores, labels)
        tensor([0.8324, 2.1387], grad_fn=<ListNetFunctionBackward>)
        >>> ListNetLoss()(scores, labels, lengths=torch.tensor([3, 2]))  # row 1: two real documents
        tensor(0.9384, grad_fn=<ListNetFunctionBackward>)
    """

    def __init__(self, reduction="mean", backend="auto"):
        super().__init__()
        check_choices(reduction, backend)
        self.reduction = reduction
        self.backend = backend

    def forward(self, scores, labels, mask=None, lengths=None):
        return listnet_loss(scores, labels, mask=mask, lengths=lengths, reduction=self.reduction, backend=self.backend)

    def extra_repr(self):
        return f"reduction={self.reduction!r}"
