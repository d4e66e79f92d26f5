"""python -m tools.compare_commits REV: this tree's listmle_kernels against commit REV's, interleaved.

On a shared CPU the machine's speed drifts between runs by more than most changes gain, so two
`python -m bench` runs cannot show a 10% change. This times both versions (and the eager
reference) round-robin in one process, on the same rotated inputs, through the bench's own cases
and interleaved timer. REV's package is exported with `git archive` under another name (its
operator namespace renamed, since both register one); `--package-dir DIR` takes a copy of the
package from DIR instead (for a copy of the tree without usable history, as on a GPU machine: export it
with `git archive REV listmle_kernels | tar -x -C DIR`).

On the CPU it runs the PyTorch path; with CUDA the Triton backend: do_bench (device time) in
alternating rounds, and back to back with the host included where B*L <= 2^16. `--labels graded`
draws relevance grades 0-4 (ties, as real labels have) instead of distinct continuous labels.
`--baselines` picks what else runs in the same rounds: the eager reference (`ref`, the default), its
torch.compile (`compile`), allRank's listMLE (`allrank`, plain ListMLE only). allRank always sorts by its
labels, after a shuffle (random ties): in input order it is given labels that descend along each row, so it
sorts them back into input order; by labels it sorts the case's labels, like `--ties random` of ours.
Prints a table and writes bench/results/compare-<rev>-<stamp>.json.
"""

from __future__ import annotations

import argparse
import importlib
import io
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench import cases as cases_mod
from bench import report, timing
from bench.__main__ import choice_list
from bench.impls import AllRankListMLE, ListmleKernels, Prepared, ReferenceCompiled, ReferenceEager

ROOT = Path(__file__).resolve().parent.parent
OLD_NAME = "listmle_kernels_at_rev"


def import_package_at(rev: str, into: Path, package_dir: Path | None = None):
    """listmle_kernels as of `rev` (or the copy in `package_dir`: the package itself, or a folder holding
    it, as `git archive REV listmle_kernels | tar -x -C DIR` leaves it), imported under a name of its own:
    OLD_NAME, or OLD_NAME_2, ... when an earlier call in this process took it (its imports inside the
    package are relative; its operator namespace is renamed to match, since each copy registers one)."""
    name, copies = OLD_NAME, 1
    while name in sys.modules:
        copies += 1
        name = f"{OLD_NAME}_{copies}"
    package = into / name
    if package_dir is not None:
        if (package_dir / "listmle_kernels" / "__init__.py").is_file():
            package_dir = package_dir / "listmle_kernels"
        if not (package_dir / "__init__.py").is_file():
            raise ValueError(f"--package-dir {package_dir} holds no listmle_kernels package (no __init__.py in it "
                             "or in its listmle_kernels/)")
        shutil.copytree(package_dir, package)
    else:
        archive = subprocess.run(["git", "archive", rev, "listmle_kernels"], cwd=ROOT, capture_output=True,
                                 check=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(into, filter="data")
        (into / "listmle_kernels").rename(package)
    for source in package.rglob("*.py"):
        source.write_text(source.read_text().replace("listmle_kernels::", f"{name}::"))
    sys.path.insert(0, str(into))
    return importlib.import_module(name)


def kernels_of(package: str, label: str, backend: str, ties: str = "stable") -> ListmleKernels:
    """The bench's listmle_kernels implementation of `package` on `backend`, named `label`."""
    impl = ListmleKernels(backend, validate=False, package=package, ties=ties)
    impl.name = impl.label = label
    return impl


def inputs_for(case: cases_mod.Case, device: torch.device, seed: int, labels: str) -> cases_mod.Inputs:
    """The bench's inputs; with labels="graded", relevance grades 0-4 at the real documents."""
    inputs = cases_mod.make_inputs(case, device, seed)
    if labels == "graded" and inputs.labels is not None:
        # another seed than the scores': the grades must not share their random bits
        grades = torch.randint(0, 5, (case.B, case.L), generator=torch.Generator().manual_seed(seed + 1_000_003))
        inputs = cases_mod.Inputs(inputs.scores, grades.float().to(device), inputs.lengths)
    return inputs


class AllRankAnyOrder(AllRankListMLE):
    """allRank's listMLE; in input order given labels that descend along each row (it sorts them back)."""

    def supports(self, case):
        if case.weighting != "listmle":
            return False, "allRank's listMLE has no lambda weights"
        return True, ""

    def prepare(self, case, inputs):
        if case.order == "labels":
            return super().prepare(case, inputs)
        descending = torch.arange(case.L, 0, -1, dtype=torch.float32, device=inputs.scores.device).expand(case.B, -1)
        return super().prepare(case, cases_mod.Inputs(inputs.scores, descending.contiguous(), inputs.lengths))


BASELINES = {"ref": ReferenceEager, "compile": ReferenceCompiled, "allrank": AllRankAnyOrder}


def time_on_cuda(steps: dict, case: cases_mod.Case, rounds: int) -> dict[str, float]:
    """Per name, the median over `rounds` alternating rounds of do_bench's median (ms); and, at small
    shapes, "<name> wall": back to back with the host included."""
    samples = {name: [] for name in steps}
    for round_ in range(rounds):
        for name in (list(steps) if round_ % 2 == 0 else list(steps)[::-1]):
            samples[name].append(timing.time_cuda(steps[name])[0])
    ms = {name: statistics.median(values) for name, values in samples.items()}
    if case.elements <= cases_mod.MAX_ELEMENTS_SMALL:
        for name, step in steps.items():
            ms[f"{name} wall"] = timing.time_back_to_back(step, torch.device("cuda"))[0]
    return ms


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.compare_commits", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rev", help="the commit to compare against, e.g. HEAD~3 (with --package-dir: its name)")
    p.add_argument("--package-dir", type=Path, help="take REV's listmle_kernels from this directory, not git")
    p.add_argument("--shape", type=cases_mod.parse_shapes, default=((256, 100),), help="e.g. 256x100,16x10")
    p.add_argument("--orders", type=choice_list("input", "labels"), default=("input", "labels"))
    p.add_argument("--labels", choices=("distinct", "graded"), default="distinct",
                   help="labels-order cases: the bench's distinct continuous labels, or grades 0-4 with ties")
    p.add_argument("--baselines", type=choice_list(*BASELINES), default=("ref",),
                   help="what else is timed in the same rounds: ref (eager reference), compile, allrank")
    p.add_argument("--ties", choices=("stable", "random"), default="stable", help="ours (both commits), by labels")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seconds", type=float, default=2.0, help="CPU: sampling time per case and implementation")
    p.add_argument("--rounds", type=int, default=3, help="CUDA: alternating do_bench rounds per case")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    backend = "triton" if device.type == "cuda" else "torch"
    if device.type == "cpu":
        torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        old = import_package_at(args.rev, Path(tmp), args.package_dir)
        rev = args.rev if args.package_dir else subprocess.run(
            ["git", "rev-parse", "--short", args.rev], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        impls = {"rev": kernels_of(old.__name__, f"at {rev}", backend, args.ties),
                 "now": kernels_of("listmle_kernels", "now", backend, args.ties)}
        impls.update((name, BASELINES[name]()) for name in args.baselines)
        rows = []
        for (B, L), weighting, order in itertools.product(args.shape, ("listmle", "plistmle"), args.orders):
            case = cases_mod.Case(B, L, direction="fwd+bwd", weighting=weighting, order=order, ragged=True)
            copies = 16 if device.type == "cpu" else 1  # do_bench flushes the L2 itself
            steps = {}
            for key, impl in impls.items():
                if not impl.supports(case)[0]:
                    continue
                prepared = [impl.prepare(case, inputs_for(case, device, seed, args.labels)) for seed in range(copies)]
                steps[key] = timing.rotating([timing.make_step(one, case) for one in prepared])
                if key == "compile":  # compiled (and recompiled for dynamic shapes) before the timed rounds
                    for _ in range(3):
                        steps[key]()
            if device.type == "cuda":
                ms = time_on_cuda(steps, case, args.rounds)
            else:
                ms = {key: result[0] for key, result in
                      timing.time_cpu_interleaved(steps, min_seconds=args.seconds).items()}
            name = case.name() + ("" if order == "input" or args.labels == "distinct" else "/graded")
            name += "/random-ties" if order == "labels" and args.ties == "random" else ""
            row = dict(case=name, ms=ms, now_over_rev=ms["rev"] / ms["now"])
            over = []
            for base in (base for base in args.baselines if base in ms):
                row[f"{base}_over_rev"], row[f"{base}_over_now"] = ms[base] / ms["rev"], ms[base] / ms["now"]
                over.append(f"over {base} ({ms[base]:.4f} ms) {row[f'{base}_over_rev']:.2f}x -> "
                            f"{row[f'{base}_over_now']:.2f}x")
            rows.append(row)
            wall = (f"; back to back {ms['rev wall']:.4f} -> {ms['now wall']:.4f} ms" if "now wall" in ms else "")
            print(f"{name:52s} {rev} {ms['rev']:7.4f} ms, now {ms['now']:7.4f} ms "
                  f"({row['now_over_rev']:.2f}x faster); speedup {'; '.join(over)}{wall}", flush=True)
            del steps
    meta = report.run_metadata(device, dict(vars(args), out=str(args.out), package_dir=str(args.package_dir),
                                            rev=rev))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"compare-{rev.replace('/', '-')}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
