"""The training loss of both architectures: `--loss` and `--loss-backend` -> one call.

`--loss-backend auto|triton|torch` is passed to `listmle_kernels.listmle_loss`; `--loss-backend reference` computes
the same loss with the repository's literal oracle `reference.listmle_reference` (one row at a time, plain autograd
through `torch.logcumsumexp`), so a training run can be compared with one whose loss cannot share a bug with the
package (`python -m train.compare`).

The oracle knows only stable ties. With `--respect-input-order` (the recipe's default) ties play no part and both
compute the same loss; `--sort-by-labels --ties random` is refused for the reference, since the kernel and any
other implementation draw different permutations, so their losses could not be compared step by step anyway.
"""

from listmle_kernels import listmle_loss

import reference

PACKAGE_BACKENDS = ("auto", "triton", "torch")
LOSS_BACKENDS = PACKAGE_BACKENDS + ("reference",)


def reference_unsupported(args):
    """Why `args` cannot run with --loss-backend reference, or None when they can."""
    if args.loss_backend == "reference" and args.ties == "random" and not args.respect_input_order:
        return ("--loss-backend reference supports stable ties only (the oracle cannot draw the kernel's random "
                "tie order); use --ties stable or --respect-input-order")
    return None


def ranking_loss(scores, labels, padding, args, generator=None):
    """ListMLE / p-ListMLE (`args.loss`) of (B, L) scores, mean over the B lists, padding excluded exactly through
    `padding` = {"lengths": ...} or {"mask": ...}; `generator` seeds random ties (package backends only)."""
    lambda_weight = "plistmle" if args.loss == "plistmle" else None
    if args.loss_backend == "reference":
        return reference.listmle_reference(scores, labels, **padding, lambda_weight=lambda_weight,
                                           respect_input_order=args.respect_input_order, reduction="mean")
    return listmle_loss(scores, labels, **padding, lambda_weight=lambda_weight,
                        respect_input_order=args.respect_input_order, ties=args.ties, generator=generator,
                        reduction="mean", backend=args.loss_backend)
