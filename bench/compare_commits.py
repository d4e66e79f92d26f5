"""python -m bench.compare_commits REV: this tree's listmle_kernels against commit REV's, interleaved.

On a shared CPU the machine's speed drifts between runs by more than most changes gain, so two
`python -m bench` runs cannot show a 10% change. This times both versions (and the eager
reference) round-robin in one process, on the same rotated inputs, through the bench's own cases
and interleaved timer. REV's package is exported with `git archive` under another name (its
operator namespace renamed, since both register one). CPU, the PyTorch path; prints a table and
writes bench/results/compare-<rev>-<stamp>.json.
"""

from __future__ import annotations

import argparse
import importlib
import io
import itertools
import json
import subprocess
import sys
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench import cases as cases_mod
from bench import report, timing
from bench.impls import ListmleKernels, ReferenceEager

ROOT = Path(__file__).resolve().parent.parent
OLD_NAME = "listmle_kernels_at_rev"


def import_package_at(rev: str, into: Path):
    """listmle_kernels as of `rev`, importable as OLD_NAME (its imports inside the package are relative)."""
    archive = subprocess.run(["git", "archive", rev, "listmle_kernels"], cwd=ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    package = into / OLD_NAME
    (into / "listmle_kernels").rename(package)
    for source in package.rglob("*.py"):
        source.write_text(source.read_text().replace("listmle_kernels::", f"{OLD_NAME}::"))
    sys.path.insert(0, str(into))
    return importlib.import_module(OLD_NAME)


def torch_path_of(package: str, label: str) -> ListmleKernels:
    """The bench's listmle_kernels implementation (PyTorch path) of `package`, named `label`."""
    impl = ListmleKernels("torch", validate=False, package=package)
    impl.name = impl.label = label
    return impl


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.compare_commits", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rev", help="the commit to compare against, e.g. HEAD~3")
    p.add_argument("--shape", type=cases_mod.parse_shapes, default=((256, 100),), help="e.g. 256x100,16x10")
    p.add_argument("--seconds", type=float, default=2.0, help="sampling time per case and implementation")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        import_package_at(args.rev, Path(tmp))
        rev = subprocess.run(["git", "rev-parse", "--short", args.rev], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        impls = {"rev": torch_path_of(OLD_NAME, f"at {rev}"), "now": torch_path_of("listmle_kernels", "now"),
                 "ref": ReferenceEager()}
        rows = []
        for (B, L), direction, weighting, order in itertools.product(
                args.shape, ("fwd+bwd",), ("listmle", "plistmle"), ("input", "labels")):
            case = cases_mod.Case(B, L, direction=direction, weighting=weighting, order=order, ragged=True)
            steps = {}
            for key, impl in impls.items():
                prepared = [impl.prepare(case, cases_mod.make_inputs(case, "cpu", seed)) for seed in range(16)]
                steps[key] = timing.rotating([timing.make_step(one, case) for one in prepared])
            ms = {key: result[0] for key, result in
                  timing.time_cpu_interleaved(steps, min_seconds=args.seconds).items()}
            rows.append(dict(case=case.name(), ms=ms, now_over_rev=ms["rev"] / ms["now"],
                             ref_over_rev=ms["ref"] / ms["rev"], ref_over_now=ms["ref"] / ms["now"]))
            print(f"{case.name():45s} {rev} {ms['rev']:7.3f} ms, now {ms['now']:7.3f} ms "
                  f"({rows[-1]['now_over_rev']:.2f}x faster); speedup over the eager reference ({ms['ref']:.3f} ms) "
                  f"{rows[-1]['ref_over_rev']:.2f}x -> {rows[-1]['ref_over_now']:.2f}x", flush=True)
    meta = report.run_metadata(torch.device("cpu"), dict(vars(args), out=str(args.out), rev=rev))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"compare-{rev}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
