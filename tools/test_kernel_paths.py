"""tools.kernel_paths names the kernel's ways of ordering rows by labels: each by-labels path it launches (for
memcheck on a GPU) must take the way its name says, or a way would go unchecked there. Run interpreted, in a
process of its own (Triton picks the interpreter at import)."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAYS = {"counted": "_partitioned_by_labels", "int32 keys": "_sorted_groups", "int64 keys": "_sorted_positions"}

WATCH_PATHS = """
import json
from unittest import mock
import torch
import listmle_kernels.triton_listmle as triton_listmle
from tools import kernel_paths
helpers = %r
taken = {}
for name, batch, length, dtype, options in kernel_paths.PATHS:
    if "in kernel" not in name:
        continue
    calls = []
    patches = [mock.patch.object(triton_listmle, helper, lambda *a, helper=helper, original=getattr(triton_listmle,
               helper), **k: calls.append(helper) or original(*a, **k)) for helper in helpers]
    scores, labels, kwargs = kernel_paths.make_problem(batch, length, options, "cpu", 0)
    for patch in patches:
        patch.start()
    loss, grad = kernel_paths.loss_and_grad(scores.to(dtype), labels, kwargs, "triton")
    mock.patch.stopall()
    ref_loss, ref_grad = kernel_paths.loss_and_grad(scores.to(dtype).double(), labels, kwargs, "torch")
    taken[name] = dict(helpers=sorted(set(calls)), error=max(kernel_paths.relative_error(loss, ref_loss),
                                                             kernel_paths.relative_error(grad, ref_grad)))
print(json.dumps(taken))
"""


def test_each_in_kernel_path_takes_the_way_it_is_named_for():
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-c", WATCH_PATHS % (list(WAYS.values()),)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    taken = json.loads(run.stdout.strip().splitlines()[-1])
    assert {way for name in taken for way in WAYS if way in name} == set(WAYS)  # every way is launched
    assert {"random" in name for name in taken} == {True, False}  # with both tie policies
    for name, seen in taken.items():
        assert seen["helpers"] == sorted(WAYS[way] for way in WAYS if way in name), (name, seen)
        assert seen["error"] < 1e-2, (name, seen)  # bfloat16's tolerance in kernel_paths
