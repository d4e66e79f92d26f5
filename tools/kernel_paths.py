"""python -m tools.kernel_paths: run every Triton code path once, small, and check it against float64.

Meant for `compute-sanitizer --tool memcheck python3 -m tools.kernel_paths` on a GPU machine (every path
launched: masks, lengths (strided too), weights, the in-kernel order's three ways with both tie policies, the
chunked scan, the sort pre-pass, packed short rows, each dtype, the in-place backward; then LambdaLoss's: one
kernel, sort and tiles, host sort and tiles; ListNet's: one block, chunked rows), and as a quick smoke test of a
fresh GPU. Prints one line a path;
exit status 1 if any path disagrees with the float64 PyTorch path (LambdaLoss and ListNet: with their float64
oracles, so their rows are short).
Without CUDA it runs the Triton interpreter on the CPU (TRITON_INTERPRET=1 is set for it).
"""

import os
import sys

import torch

PATHS = [  # (name, batch, length, dtype, keyword arguments of listmle_loss)
    ("input order, full rows", 8, 100, torch.float32, {}),
    ("input order, mask", 8, 100, torch.float32, {"mask": "random"}),
    ("input order, lengths, p-ListMLE", 8, 100, torch.bfloat16, {"lengths": "random", "lambda_weight": "plistmle"}),
    ("weights tensor, float16", 5, 60, torch.float16, {"lambda_weight": "tensor"}),
    ("order counted in kernel", 8, 300, torch.float32, {"respect_input_order": False}),
    ("order sorted in kernel, int32 keys", 8, 300, torch.float32, {"respect_input_order": False, "labels": "wide"}),
    ("order sorted in kernel, int64 keys", 8, 300, torch.float32, {"respect_input_order": False, "labels": "distinct"}),
    # Random ties over labels with no ties: one target order, whichever build draws the tie bits
    ("random ties in kernel, int32 keys", 6, 100, torch.float16,
     {"respect_input_order": False, "ties": "random", "mask": "random", "labels": "permutation"}),
    ("random ties in kernel, int64 keys", 4, 300, torch.bfloat16,
     {"respect_input_order": False, "ties": "random", "mask": "random", "labels": "distinct"}),
    ("random ties, sort pre-pass, mask", 4, 4096, torch.bfloat16,
     {"respect_input_order": False, "ties": "random", "mask": "random", "labels": "distinct"}),
    ("packed short rows, float64", 300, 7, torch.float64, {"lengths": "random"}),
    ("strided lengths", 8, 100, torch.float32, {"lengths": "strided"}),
    ("chunked scan, lengths", 2, 9000, torch.float32, {"lengths": "random"}),
    ("sort pre-pass, p-ListMLE", 2, 5000, torch.float32, {"respect_input_order": False, "lambda_weight": "plistmle"}),
    ("reduction none, per-row backward", 6, 50, torch.float32, {"reduction": "none"}),
]


LAMBDALOSS_PATHS = [  # (name, batch, length, dtype, scheme, k, launcher keywords of triton_lambdaloss)
    ("lambdaloss, one kernel, 16 x 10", 16, 10, torch.float32, "ndcgloss2pp", 0, {}),
    ("lambdaloss, sort + tiles, mask, k", 3, 90, torch.bfloat16, "lambdarank", 5, {}),
    ("lambdaloss, host sort + tiles", 2, 70, torch.float32, "ndcgloss1", 0, {"sort_max_block": 64}),
    ("lambdaloss, float64 (host sort)", 3, 40, torch.float64, "none", 0, {}),
]

LISTNET_PATHS = [  # (name, batch, length, dtype, launcher keywords of triton_listnet)
    ("listnet, one block, mask", 6, 50, torch.float32, {}),
    ("listnet, chunked rows, mask", 3, 100, torch.float16, {"max_block": 32}),
]


def make_problem(batch, length, options, device, seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, length, generator=gen)
    kwargs = dict(options)
    kind = kwargs.pop("labels", "graded")
    if kind == "distinct":  # continuous: the int64 keys' path
        labels = torch.randn(batch, length, generator=gen)
    elif kind == "permutation":  # whole steps, none tied
        labels = torch.stack([torch.randperm(length, generator=gen) for _ in range(batch)])
    else:  # grades 0-4, counted; or 0-99, too many to count: the int32 keys' path
        labels = torch.randint(0, 100 if kind == "wide" else 5, (batch, length), generator=gen)
    if kwargs.get("mask") == "random":
        kwargs["mask"] = torch.rand(batch, length, generator=gen) < 0.7
    if kwargs.get("lengths") == "random":
        kwargs["lengths"] = torch.randint(0, length + 1, (batch,), generator=gen)
    elif kwargs.get("lengths") == "strided":  # a column of a (batch, 2) tensor: stride 2
        kwargs["lengths"] = torch.randint(0, length + 1, (batch, 2), generator=gen)[:, 0]
    if kwargs.get("lambda_weight") == "tensor":
        kwargs["lambda_weight"] = torch.rand(batch, length, generator=gen)
    moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    return scores.to(device), labels.to(device), moved


def loss_and_grad(scores, labels, kwargs, backend):
    from listmle_kernels import listmle_loss
    scores = scores.detach().clone().requires_grad_(True)
    loss = listmle_loss(scores, labels, backend=backend, **kwargs)
    weights = torch.linspace(0.5, 2.0, loss.numel(), device=loss.device).reshape(loss.shape)
    loss.backward(weights)  # not all ones: the backward kernel's multiply runs too
    return loss.detach().double(), scores.grad.double()


def relative_error(got, want):
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def lambdaloss_errors(batch, length, dtype, scheme, k, launch, device, seed):
    """Relative errors of triton_lambdaloss's row losses and gradient against the float64 oracle."""
    from listmle_kernels.inputs import WEIGHTING_SCHEMES, LambdaLossInputs
    from listmle_kernels.triton_lambdaloss import triton_lambdaloss
    from reference import lambdaloss_reference
    gen = torch.Generator().manual_seed(seed)
    scores = (torch.randn(batch, length, generator=gen) * 2).to(dtype)
    labels = torch.randint(0, 4, (batch, length), generator=gen).float()
    mask = torch.rand(batch, length, generator=gen) < 0.8
    inputs = LambdaLossInputs(scores.to(device), labels.to(device), mask.to(device), None,
                              WEIGHTING_SCHEMES.index(scheme), k, 1.0, 10.0, 1e-10, 1.0)
    loss, _, grad = triton_lambdaloss(inputs, True, **launch)
    leaf = scores.double().requires_grad_(True)
    ref_loss = lambdaloss_reference(leaf, labels, mask=mask, weighting_scheme=scheme, k=k or None,
                                    reduction_log="natural", reduction="none")
    ref_loss.sum().backward()
    return relative_error(loss.cpu().double(), ref_loss.detach()), relative_error(grad.cpu().double(), leaf.grad)


def listnet_errors(batch, length, dtype, launch, device, seed):
    """Relative errors of triton_listnet's row losses and gradient (reduction "mean") against the float64 oracle."""
    from listmle_kernels.inputs import ListNetInputs
    from listmle_kernels.triton_listnet import triton_listnet
    from reference import listnet_reference
    gen = torch.Generator().manual_seed(seed)
    scores = (torch.randn(batch, length, generator=gen) * 2).to(dtype)
    labels = torch.randint(0, 4, (batch, length), generator=gen).float()
    mask = torch.rand(batch, length, generator=gen) < 0.8
    mask[:, 0] = True  # every row holds a real document
    inputs = ListNetInputs(scores.to(device), labels.to(device), mask.to(device), None)
    loss, grad = triton_listnet(inputs, batch, True, **launch)
    leaf = scores.double().requires_grad_(True)
    ref_loss = listnet_reference(leaf, labels, mask=mask, reduction="none")
    (ref_loss.sum() / batch).backward()
    return relative_error(loss.cpu().double(), ref_loss.detach()), relative_error(grad.cpu().double(), leaf.grad)


def main() -> int:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    failures = 0
    for seed, (name, batch, length, dtype, scheme, k, launch) in enumerate(LAMBDALOSS_PATHS):
        errors = lambdaloss_errors(batch, length, dtype, scheme, k, launch, device, seed)
        ok = max(errors) <= (1e-12 if dtype == torch.float64 else 1e-5)  # float32 accumulation for the others
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name:38} {batch:4d} x {length:5d} {str(dtype):15} "
              f"loss rel err {errors[0]:.1e}, grad rel err {errors[1]:.1e}")
    for seed, (name, batch, length, dtype, launch) in enumerate(LISTNET_PATHS):
        errors = listnet_errors(batch, length, dtype, launch, device, seed)
        ok = max(errors) <= (1e-5 if dtype == torch.float32 else 1e-2)  # the gradient in the scores' dtype
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name:38} {batch:4d} x {length:5d} {str(dtype):15} "
              f"loss rel err {errors[0]:.1e}, grad rel err {errors[1]:.1e}")
    for seed, (name, batch, length, dtype, options) in enumerate(PATHS):
        scores, labels, kwargs = make_problem(batch, length, options, device, seed)
        loss, grad = loss_and_grad(scores.to(dtype), labels, kwargs, "triton")
        ref_loss, ref_grad = loss_and_grad(scores.to(dtype).double(), labels, kwargs, "torch")
        errors = relative_error(loss, ref_loss), relative_error(grad, ref_grad)
        # float64 to ~1e-15 (the mean's 1/B must not pass through float32); float32 to its rounding
        tolerance = {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 1e-2)
        ok = max(errors) <= tolerance
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name:38} {batch:4d} x {length:5d} {str(dtype):15} "
              f"loss rel err {errors[0]:.1e}, grad rel err {errors[1]:.1e}")
    total = len(PATHS) + len(LAMBDALOSS_PATHS) + len(LISTNET_PATHS)
    print(f"{total - failures}/{total} kernel paths agree with float64 on {device}")
    return 1 if failures else 0


if __name__ == "__main__":
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
    sys.exit(main())
