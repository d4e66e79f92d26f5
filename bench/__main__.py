"""python -m bench: check, then time every ListMLE implementation over a grid of shapes and modes.

  python -m bench --quick             # a few minutes; CPU implementations only without CUDA
  python -m bench --out DIR           # JSON, CSV and PNGs under DIR (default output/bench/, git-ignored)
  python -m bench.plots RUN.json      # redraw a run's PNGs from its JSON file
  python -m bench --B 64,1024 --L 100,1024 --sweep 64x100 --impls listmle_kernels_torch,reference_eager
  python -m bench pairwise --quick    # LambdaLoss, RankNet and ListNet, on the CPU or --device cuda (bench/pairwise.py)

Without CUDA only the PyTorch implementations are timed, at small sizes: GPU numbers need CUDA, and
interpreted Triton (TRITON_INTERPRET=1) is never timed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import torch

from bench import cases as cases_mod
from bench import check, plots, report, runner, timing, training_step
from bench.impls import all_impls

DEFAULT_OUT = report.DEFAULT_OUT


def int_list(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def str_list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def choice_list(*allowed: str):
    """A comma-separated subset of `allowed` (argparse type)."""
    def parse(text: str) -> tuple[str, ...]:
        values = str_list(text)
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(allowed)} (comma-separated)")
        return values
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small grid, short timings (a few minutes)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="output directory (default: output/bench/ of the repository, which git ignores)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--B", type=int_list, help="batch sizes of the shape grid, e.g. 16,64,256")
    p.add_argument("--L", type=int_list, help="list lengths of the shape grid, e.g. 8,32,100")
    p.add_argument("--sweep", type=cases_mod.parse_shapes, help="shapes of the mode sweep, e.g. 16x10,64x100")
    p.add_argument("--max-elements", type=int, help="skip shapes with B*L above this")
    p.add_argument("--directions", type=choice_list("fwd", "fwd+bwd"), default=("fwd", "fwd+bwd"),
                   help="mode sweep: fwd (loss only) and/or fwd+bwd (default both)")
    p.add_argument("--weightings", type=choice_list("listmle", "plistmle"), default=("listmle", "plistmle"),
                   help="mode sweep: listmle and/or plistmle (default both)")
    p.add_argument("--orders", type=choice_list("input", "labels"), default=("input", "labels"),
                   help="mode sweep: input order and/or sort by labels (default both)")
    p.add_argument("--dtypes", type=choice_list(*cases_mod.DTYPES), default=tuple(cases_mod.DTYPES),
                   help=f"scores' dtypes: {', '.join(cases_mod.DTYPES)} (default both)")
    p.add_argument("--padding", choices=("both", "ragged", "full"), default="both",
                   help="mode sweep: random per-row lengths, full rows, or both")
    p.add_argument("--impls", type=str_list, help="only these implementations (names as in the JSON)")
    p.add_argument("--compile-sweep", action="store_true",
                   help="also time torch.compile on the mode sweep (each mode compiles for 10-40 s); "
                        "default: the shape grid only")
    p.add_argument("--validate", action="store_true",
                   help="time listmle_kernels with validate=True (input checks; may sync the host)")
    p.add_argument("--no-train-step", action="store_true", help="skip the MiniLM cross-encoder step")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU only: torch threads (default 1; on a shared 2-core machine, 2 OpenMP threads "
                        "stall on each other and every op costs milliseconds; 0 = torch's default)")
    p.add_argument("--time-budget-s", type=float,
                   help="stop starting new cases after this many seconds and write what was measured "
                        "(to fit a job's time limit); SIGTERM does the same")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def build_cases(args, device) -> list[cases_mod.Case]:
    grid = cases_mod.default_grid(device.type == "cuda", args.quick)
    max_elements = args.max_elements or grid["max_elements"]
    raggeds = {"both": (True, False), "ragged": (True,), "full": (False,)}[args.padding]
    selected = cases_mod.shape_grid_cases(args.B or grid["B"], args.L or grid["L"], args.directions, max_elements)
    selected += cases_mod.mode_sweep_cases(args.sweep or grid["sweep"], args.directions, args.weightings,
                                           args.orders, args.dtypes, raggeds, max_elements)
    return cases_mod.by_priority(cases_mod.dedupe(selected))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["pairwise"]:  # the pairwise family's benchmark, its own command line
        from bench import pairwise
        return pairwise.main(argv[1:])
    args = parse_args(argv)
    started = time.perf_counter()
    device = pick_device(args.device)
    if device.type == "cpu" and args.threads > 0:
        torch.set_num_threads(args.threads)
    meta = report.run_metadata(device, {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    print(f"device: {meta['device']} | torch {meta['torch']} | triton {meta['triton']} | commit {meta['git_commit']}")
    notes = []
    if device.type != "cuda":
        notes.append("No CUDA device: only the CPU implementations were timed, at small sizes. "
                     "GPU numbers (the Triton kernel, and its speed-up, bandwidth and memory targets) "
                     "need CUDA; "
                     "interpreted Triton is never timed.")
        print(notes[-1])
        load = meta["cpu_load_average_1_5_15min"]
        if load and load[0] > (os.cpu_count() or 1):
            notes.append(f"CPU load average {load[0]:.1f} on {os.cpu_count()} cores while measuring: other jobs "
                         "share this machine, so absolute CPU times are inflated and noisy (ratios hold better; "
                         "implementations are timed round-robin).")
            print(notes[-1])

    impls = all_impls(validate=args.validate)
    if args.impls:
        unknown = set(args.impls) - {i.name for i in impls}
        if unknown:
            sys.exit(f"unknown --impls {sorted(unknown)}; known: {[i.name for i in impls]}")
        impls = [i for i in impls if i.name in args.impls]
    availability = {impl.name: impl.availability(device) for impl in impls}
    if not args.compile_sweep:
        for impl in impls:
            if impl.name == "reference_compiled":
                # Each of the sweep's 32 modes is a new graph to compile (10-40 s each): too slow for
                # --quick and for a full run meant to fit in 10 minutes.
                impl.groups = ("grid",)
    for impl in impls:
        ok, why = availability[impl.name]
        print(f"  {impl.label:<12} {'available' if ok else why}{' (' + why + ')' if ok and why else ''}")

    ok, message = check.self_check_reference(device)
    print(("self-check: " if ok else "SELF-CHECK FAILED: ") + message)
    copy = timing.copy_bandwidth(device)
    print(f"copy bandwidth (read+write): {copy['bytes_per_s'] / 1e9:.1f} GB/s")
    copy_for = timing.copy_bandwidth_by_size(device, copy)

    selected = build_cases(args, device)
    print(f"{len(selected)} cases x {sum(a[0] for a in availability.values())} implementations")
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    stem = report.output_stem(args.out, device, meta["timestamp_utc"])

    def save(step_share):
        """Write the JSON and CSV of all measured so far: after every case, so a killed run keeps them."""
        report.add_speedups(rows, device.type)
        meta["wall_s"] = time.perf_counter() - started
        extras = {"notes": notes, "self_check": {"ok": ok, "message": message}, "copy_bandwidth": copy,
                  "availability": {k: {"available": a, "note": n} for k, (a, n) in availability.items()},
                  "training_step": step_share}
        report.write_json(stem.with_suffix(".json"), meta, rows, extras)
        report.write_csv(stem.with_suffix(".csv"), rows)

    signal.signal(signal.SIGTERM, _raise_interrupt)  # `timeout` sends SIGTERM: still write the results
    try:
        for index, case in enumerate(selected, 1):
            if args.time_budget_s and time.perf_counter() - started > args.time_budget_s:
                notes.append(f"Time budget of {args.time_budget_s:.0f} s reached: {len(selected) - index + 1} "
                             f"of {len(selected)} cases were not run.")
                print(notes[-1])
                break
            t0 = time.perf_counter()
            case_rows = runner.run_case(case, impls, availability, device, args.seed, args.quick, copy_for)
            rows += case_rows
            save({"status": "not measured yet"})
            timed = ", ".join(f"{r['label']} {r['ms']:.3f}" for r in case_rows if r.get("status") == "ok")
            print(f"[{index}/{len(selected)}] {case.name()}: {timed} ms ({time.perf_counter() - t0:.1f}s)", flush=True)
    except KeyboardInterrupt:
        notes.append(f"Interrupted after {len({r['case'] for r in rows})} of {len(selected)} cases.")
        print(notes[-1])
        args.no_train_step = True
    step_share = ({"status": "skipped (--no-train-step, or the run was interrupted)"} if args.no_train_step
                  else training_step.loss_share(impls, availability, device, args.quick))
    save(step_share)
    written = [stem.with_suffix(".json"), stem.with_suffix(".csv")]
    if not args.no_plots:
        written += plots.write_plots(rows, meta, stem)

    print()
    print("wrote:\n" + "\n".join(f"  {p}" for p in written))
    problems = report.format_problems(rows)
    if problems:
        print("not timed (implementation, status, cases, why):\n" + problems)
    for line in training_step.format_loss_share(step_share).splitlines():
        print(textwrap.fill(line, report.TABLE_WIDTH, subsequent_indent="    "))
    for note in notes:
        print(textwrap.fill(note, report.TABLE_WIDTH))
    print(f"total {time.perf_counter() - started:.0f} s")
    print(report.format_table(rows, device.type))
    print(report.format_targets(rows, device.type))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
