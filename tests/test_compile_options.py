"""Every Triton launch passes the package's compile options (`triton_common.COMPILE_OPTIONS`).

A launch that leaves fused multiply-adds to Triton's default gets a warning from Triton 3.9 and other arithmetic
from 3.10 on, whose default turns them off: the kernels' error bounds and instruction counts assume them.
"""

import pytest
import torch

from listmle_kernels import lambda_loss, listmle_loss, listnet_loss
from listmle_kernels import triton_lambdaloss, triton_listmle, triton_listnet, triton_scale
from listmle_kernels.triton_common import COMPILE_OPTIONS

from cases import DEVICE

pytest.importorskip("triton")

KERNELS = {"listmle": (triton_listmle, "_listmle_kernel"), "listnet": (triton_listnet, "_listnet_kernel"),
           "lambdaloss sort": (triton_lambdaloss, "_sort_rows_kernel"),
           "lambdaloss pairs": (triton_lambdaloss, "_pair_tiles_kernel"),
           "scale": (triton_scale, "_scale_rows_kernel")}


def test_every_launch_passes_the_compile_options(monkeypatch):
    launches = []
    for name, (module, attribute) in KERNELS.items():
        kernel = getattr(module, attribute)

        def recording_run(*args, _run=kernel.run, _name=name, **kwargs):
            launches.append((_name, {key: kwargs.get(key) for key in COMPILE_OPTIONS}))
            return _run(*args, **kwargs)

        monkeypatch.setattr(kernel, "run", recording_run)  # `kernel[grid](...)` calls the instance's run

    generator = torch.Generator().manual_seed(0)
    for length in (6, 40):  # LambdaLoss: one fused kernel for short rows, a sort then pair tiles past 32
        scores = torch.randn(3, length, generator=generator).to(DEVICE)
        labels = torch.randint(0, 4, (3, length), generator=generator).float().to(DEVICE)
        for loss in (lambda s: listmle_loss(s, labels, respect_input_order=False, backend="triton"),
                     lambda s: lambda_loss(s, labels, backend="triton"),
                     lambda s: listnet_loss(s, labels, backend="triton")):
            loss(scores.clone().requires_grad_(True)).backward()
    # a bfloat16 gradient is scaled by grad_output in a kernel (in float32, rounded once)
    listmle_loss(scores.bfloat16().requires_grad_(True), backend="triton").backward()

    assert {name for name, _ in launches} == set(KERNELS)
    assert all(options == COMPILE_OPTIONS for _, options in launches), launches
