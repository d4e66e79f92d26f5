"""Fused ListMLE / p-ListMLE losses: Triton kernels for CUDA, a vectorised PyTorch path elsewhere."""

from .autograd import ListMLEFunction
from .backends import auto_backend
from .functional import listmle_loss
from .modules import ListMLELoss, PListMLELoss

__all__ = ["listmle_loss", "ListMLELoss", "PListMLELoss", "ListMLEFunction", "auto_backend"]
__version__ = "0.1.0"
