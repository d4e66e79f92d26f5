"""Fused learning-to-rank losses (ListMLE / p-ListMLE, LambdaLoss / RankNet, ListNet): Triton kernels for CUDA, a
vectorised PyTorch path elsewhere."""

from .autograd import LambdaLossFunction, ListMLEFunction, ListNetFunction
from .backends import auto_backend
from .functional import lambda_loss, listmle_loss, listnet_loss, ranknet_loss
from .modules import LambdaLoss, ListMLELoss, ListNetLoss, PListMLELoss, RankNetLoss

__all__ = ["listmle_loss", "ListMLELoss", "PListMLELoss", "ListMLEFunction",
           "lambda_loss", "ranknet_loss", "LambdaLoss", "RankNetLoss", "LambdaLossFunction",
           "listnet_loss", "ListNetLoss", "ListNetFunction", "auto_backend"]
__version__ = "0.1.0"
