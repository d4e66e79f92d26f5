"""python -m tools.peak_memory [--rev REV] [--shape 4096x4096]: peak extra memory of forward+backward on the CPU,
over the gradient's size, per mode (ListMLE / p-ListMLE, input order / by labels, stable and random ties).

Counted by bench.cpu_memory (torch's tensors op by op, plus numpy's arrays: an upper bound, deterministic),
the returned gradient included, with the bench's ragged inputs. With --rev, the same for commit REV's package
(imported as tools.compare_commits imports it). Writes DIR/peak-memory-<stamp>.json.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench import cases as cases_mod
from bench import report
from bench.cpu_memory import peak_extra_bytes_cpu
from tools.compare_commits import ROOT, import_package_at

MODES = (("input", None, "stable"), ("input", "plistmle", "stable"), ("labels", None, "stable"),
         ("labels", None, "random"), ("labels", "plistmle", "stable"))


def peak_over_gradient(package: str, B: int, L: int, order: str, weight, ties: str) -> float:
    inputs = cases_mod.make_inputs(cases_mod.Case(B, L, order=order), "cpu", seed=0)
    loss = functools.partial(importlib.import_module(package).listmle_loss, inputs.scores, inputs.labels,
                             lengths=inputs.lengths, lambda_weight=weight, respect_input_order=order == "input",
                             ties=ties, validate=False)
    peak = peak_extra_bytes_cpu(lambda: torch.autograd.grad(loss(), inputs.scores))
    return peak / (B * L * inputs.scores.element_size())


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.peak_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", help="also measure this commit's package")
    p.add_argument("--shape", type=cases_mod.parse_shapes, default=((4096, 4096),))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        packages = {"now": "listmle_kernels"}
        if args.rev:
            packages[args.rev] = import_package_at(args.rev, Path(tmp)).__name__
        for (B, L), (order, weight, ties) in ((shape, mode) for shape in args.shape for mode in MODES):
            mode = f"{B}x{L} {order} {weight or 'listmle'} {ties}"
            ratios = {name: peak_over_gradient(package, B, L, order, weight, ties) for name, package in packages.items()}
            rows.append(dict(B=B, L=L, order=order, weighting=weight or "listmle", ties=ties, peak_over_gradient=ratios))
            print(f"{mode:40s} " + ", ".join(f"{name} {ratio:.3f}x the gradient" for name, ratio in ratios.items()),
                  flush=True)
    meta = report.run_metadata(torch.device("cpu"), {k: str(v) for k, v in vars(args).items()})
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"peak-memory-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
