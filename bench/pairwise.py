"""python -m bench.pairwise (or python -m bench pairwise): LambdaLoss, RankNet and ListNet on the CPU or a CUDA
device, ours against sentence-transformers' and allRank's own code: forward+backward time and peak extra memory.

  python -m bench.pairwise --quick                 # 16 x 10 and 64 x 240, every loss (a few minutes)
  python -m bench.pairwise                         # also 256 x 1000 and 16 x 4096
  python -m bench.pairwise --shapes 64x240 --losses listnet --impls listmle_kernels_torch,allrank
  python -m bench.pairwise --device cuda --quick   # every implementation on CUDA tensors, ours the Triton kernels

For each case: every implementation's loss and gradient are checked against the reference on the very inputs
to be timed (bench.pairwise_check), its peak extra memory is measured over one call (bench.cpu_memory), and
those that agree are timed round-robin in one process (bench.timing.time_cpu_interleaved), so that the speed-ups,
a peer's time over ours, are ratios taken under the same load. A peer that holds (B, L, L) tensors is first run
at L = 64, and its peak scaled by (L / 64)^2: if that passes --max-gib it is skipped with the estimate
("skipped: needs ~N GiB") instead of being run.

With --device cuda every implementation gets the same batch as CUDA tensors; the reference is still computed on the
CPU and each result is copied back to be compared with it. The peak is the caching allocator's
(torch.cuda.max_memory_allocated over one call, less what was allocated before it), each implementation is timed
by triton.testing.do_bench (CUDA events, L2 flushed before every call; a GPU is not shared with other jobs' load
the way the CPU is, so no round-robin), and the (B, L, L) estimate's limit is --max-gib or the device's free memory,
whichever is smaller.
"""

from __future__ import annotations

import argparse
import csv
import sys
import textwrap
import time
from pathlib import Path

import torch

from bench import check, report, runner, timing
from bench.cases import parse_shapes
from bench.cpu_memory import peak_extra_bytes_cpu, quadratic_estimate, size_text
from bench.pairwise_cases import DEFAULT_SHAPES, LOSSES, QUICK_SHAPES, PairwiseCase, cases_for, make_inputs
from bench.pairwise_check import reference_result, self_check_reference
from bench.pairwise_impls import all_impls, materialises_pairs

PEERS = ("sentence_transformers", "allrank")
PROBE_LENGTH = 64  # the list length at which a (B, L, L) peer's peak is measured before it runs at a longer one
DEFAULT_MAX_GIB = 4.0
CPU = torch.device("cpu")
DEVICES = ("cpu", "cuda")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.pairwise", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="where every implementation runs (default %(default)s; cuda: ours are the Triton kernels)")
    p.add_argument("--quick", action="store_true", help=f"shapes {QUICK_SHAPES}, shorter timings")
    p.add_argument("--shapes", type=parse_shapes, help="B x L shapes, e.g. 16x10,64x240 "
                   f"(default {','.join(f'{b}x{l}' for b, l in DEFAULT_SHAPES)})")
    p.add_argument("--losses", type=lambda text: tuple(filter(None, text.split(","))), default=LOSSES,
                   help=f"comma-separated subset of {','.join(LOSSES)}")
    p.add_argument("--impls", type=lambda text: tuple(filter(None, text.split(","))),
                   help="only these implementations (names as in the JSON)")
    p.add_argument("--max-gib", type=float, default=DEFAULT_MAX_GIB,
                   help="skip a (B, L, L) peer whose estimated peak passes this many GiB (default %(default)s)")
    p.add_argument("--out", type=Path, default=report.DEFAULT_OUT, help="output directory (default output/bench/)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0 = torch's default)")
    p.add_argument("--time-budget-s", type=float, help="start no new case after this many seconds")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    unknown = set(args.losses) - set(LOSSES)
    if unknown:
        p.error(f"--losses: unknown {sorted(unknown)}; choose from {', '.join(LOSSES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False); "
                "leave --device out to run on the CPU")
    return args


def peak_reader(device: torch.device):
    """The function measuring one step's peak extra bytes on `device`: torch's allocator statistics on CUDA, the
    op-by-op count of bench.cpu_memory on the CPU (where torch keeps none)."""
    return timing.peak_extra_bytes_cuda if device.type == "cuda" else peak_extra_bytes_cpu


def memory_limit_bytes(max_gib: float, free_bytes: int | None) -> int:
    """The most bytes a (B, L, L) peer may be estimated to need and still run: --max-gib, and on a device that
    reports its free memory (CUDA), no more than that."""
    limit = int(max_gib * 2**30)
    return limit if free_bytes is None else min(limit, free_bytes)


def estimate_or_none(impl, case: PairwiseCase, seed: int, device: torch.device = CPU):
    """(estimated peak bytes at the case's shape, the probe's peak) for a (B, L, L) peer past PROBE_LENGTH,
    else None: its peak measured at B x PROBE_LENGTH, times (L / PROBE_LENGTH)^2."""
    if not materialises_pairs(impl, case.loss) or case.L <= PROBE_LENGTH:
        return None
    probe = PairwiseCase(case.loss, case.B, PROBE_LENGTH)
    probe_inputs = make_inputs(probe, seed).to(device)
    probe_bytes = peak_reader(device)(timing.make_step(impl.prepare(probe, probe_inputs), probe))
    return quadratic_estimate(probe_bytes, PROBE_LENGTH, case.L), probe_bytes


def input_copies(case: PairwiseCase, device: torch.device = CPU) -> int:
    """Input copies to rotate through, so that a small case does not run from caches its last call warmed. One
    on CUDA, where do_bench flushes the L2 before every call."""
    if device.type == "cuda":
        return 1
    per_set = case.B * case.L * 8 + case.B * 8  # scores and labels, float32; lengths
    return max(1, min(timing.MAX_ROTATIONS, -(-timing.ROTATE_BYTES_CPU // per_set)))


def run_case(case: PairwiseCase, impls, availability: dict, seed: int, quick: bool, max_bytes: int,
             log=print, device: torch.device = CPU) -> list[dict]:
    """Check, measure the memory of, then time (round-robin on the CPU) every implementation on one case."""
    inputs0 = make_inputs(case, seed)  # on the CPU: the reference's inputs, and the timed ones moved to `device`
    valid0 = inputs0.valid_mask()
    on_device = inputs0.to(device)
    measure_peak = peak_reader(device)
    wanted = []  # the reference, computed once and only if something is to be checked

    def want():
        if not wanted:
            wanted.append(reference_result(case, inputs0))
        return wanted[0]

    rows, steps = [], {}
    for impl in impls:
        row = {**case.as_dict(), "case": case.name(), "impl": impl.name, "label": impl.label}
        rows.append(row)
        available, why = availability[(impl.name, case.loss)]
        if not available:
            row.update(status="skipped", note=why)
            continue
        with runner.recorded_failure(row, case, device, log):
            estimate = estimate_or_none(impl, case, seed, device)
            if estimate is not None:
                row["estimated_peak_bytes"], row["probe_peak_bytes"] = estimate
                if estimate[0] > max_bytes:
                    row.update(status="skipped", note=f"skipped: needs ~{size_text(estimate[0])} (its peak at "
                               f"{case.B} x {PROBE_LENGTH}, {size_text(estimate[1])}, times "
                               f"(L / {PROBE_LENGTH})^2), over --max-gib {max_bytes / 2**30:g}")
                    continue
            started = time.perf_counter()
            got = tuple(t.cpu() for t in check.loss_and_grad(impl.prepare(case, on_device), case))  # waits for it
            row["first_call_s"] = time.perf_counter() - started
            verdict = check.compare(case, got, want(), valid0)
            row.update(loss_rel_err=verdict.loss_rel_err, grad_rel_err=verdict.grad_rel_err)
            if not verdict.ok:
                row.update(status="mismatch", note=verdict.message)
                continue
            row["peak_extra_bytes"] = measure_peak(timing.make_step(impl.prepare(case, on_device), case))
            copies = [on_device] + [make_inputs(case, seed + k).to(device) for k in range(1, input_copies(case, device))]
            steps[impl.name] = timing.rotating([timing.make_step(impl.prepare(case, c), case) for c in copies])
            row["rotations"] = len(copies)
    by_name = {row["impl"]: row for row in rows}
    if steps and device.type == "cuda":
        for name, step in steps.items():
            with runner.recorded_failure(by_name[name], case, device, log):
                median, q20, q80 = timing.time_step(step, device, quick)
                by_name[name].update(status="ok", ms=median, ms_q20=q20, ms_q80=q80)
    elif steps:
        with runner.recorded_failure(None, case, device, log, rows=[by_name[name] for name in steps]):
            times = timing.time_cpu_interleaved(steps, warmup=1, min_rounds=3, min_seconds=0.25 if quick else 0.5)
            for name, (median, q20, q80) in times.items():
                by_name[name].update(status="ok", ms=median, ms_q20=q20, ms_q80=q80)
    add_ratios(rows)
    return rows


def ours_name(rows: list[dict]) -> str | None:
    """Our implementation's name among a case's rows (listmle_kernels_torch on the CPU, _auto on CUDA)."""
    return next((row["impl"] for row in rows if row["impl"] not in PEERS), None)


def add_ratios(rows: list[dict]) -> None:
    """On our row: speedup_vs_<peer> (the peer's time over ours) and memory_vs_<peer> (its peak over ours), where
    both were measured."""
    by_name = {row["impl"]: row for row in rows}
    ours = by_name.get(ours_name(rows))
    if not ours or ours.get("status") != "ok":
        return
    for peer in PEERS:
        other = by_name.get(peer)
        if other and other.get("status") == "ok":
            ours[f"speedup_vs_{peer}"] = other["ms"] / ours["ms"]
            if ours.get("peak_extra_bytes") and other.get("peak_extra_bytes"):
                ours[f"memory_vs_{peer}"] = other["peak_extra_bytes"] / ours["peak_extra_bytes"]


CSV_COLUMNS = ("case", "loss", "B", "L", "impl", "label", "status", "ms", "ms_q20", "ms_q80", "peak_extra_bytes",
               "estimated_peak_bytes", "probe_peak_bytes", "speedup_vs_sentence_transformers", "speedup_vs_allrank",
               "memory_vs_sentence_transformers", "memory_vs_allrank", "loss_rel_err", "grad_rel_err",
               "first_call_s", "rotations", "note")


def _cell(row: dict | None, key: str) -> str:
    if row is None:
        return "-"
    if row.get("status") != "ok":
        return report.STATUS_WORD.get(row.get("status"), str(row.get("status")))
    value = row.get(key)
    if value is None:
        return "-"
    if key == "peak_extra_bytes":
        return f"{value / 2**20:.2f}" if value < 10 * 2**20 else f"{value / 2**20:.0f}"
    return report._ms(value)


def format_table(rows: list[dict], labels: dict[str, str], device_type: str = "cpu") -> str:
    """One line per case: each implementation's median ms and peak extra MiB, then our speed-up over each peer
    (its time over ours). The peaks' ratios (memory_vs_<peer>) are in the JSON and CSV files."""
    ours = ours_name(rows) or "listmle_kernels_torch"
    names = [ours, *PEERS]
    header = ["loss", "B", "L"]
    for name in names:
        header += [f"{labels.get(name, name)} ms", "MiB"]
    header += [f"x {labels.get(p, p)}" for p in PEERS]
    by_case: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["impl"]] = row
    lines = []
    for impls in by_case.values():
        first = next(iter(impls.values()))
        line = [first["loss"], str(first["B"]), str(first["L"])]
        for name in names:
            line += [_cell(impls.get(name), "ms"), _cell(impls.get(name), "peak_extra_bytes")]
        line += [report._num(impls.get(ours, {}).get(f"speedup_vs_{p}"), ".1f") for p in PEERS]
        lines.append(line)
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]

    def join(values):
        return " ".join(v.rjust(w) if i >= 3 else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))

    held = ("torch's storages and numpy's arrays held at once" if device_type == "cpu"
            else "the caching allocator's max_memory_allocated")
    legend = textwrap.wrap(
        f"Forward+backward on {'the CPU' if device_type == 'cpu' else 'CUDA'}, float32, ragged rows. ms: median; "
        f"MiB: peak extra memory of one call ({held}, the returned gradient included). x: a peer's time over ours. "
        "skip / wrong / error: not run (see the list above), disagreed with the reference, or "
        "failed.", report.TABLE_WIDTH)
    return "\n".join([join(header), "-" * len(join(header))] + [join(line) for line in lines] + legend)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    meta = report.run_metadata(device, {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    print(f"device: {meta['device']} | torch {meta['torch']} | commit {meta['git_commit']}")
    impls = all_impls(device)
    if args.impls:
        unknown = set(args.impls) - {i.name for i in impls}
        if unknown:
            sys.exit(f"unknown --impls {sorted(unknown)}; known: {[i.name for i in impls]}")
        impls = [i for i in impls if i.name in args.impls]
    availability = {(impl.name, loss): impl.availability(loss) for impl in impls for loss in args.losses}
    for (name, loss), (ok, why) in availability.items():
        print(f"  {name:<24} {loss:<11} {'available' if ok else why}{' (' + why + ')' if ok and why else ''}")
    ok, message = self_check_reference()
    print(("self-check: " if ok else "SELF-CHECK FAILED: ") + message)

    shapes = args.shapes or (QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
    selected = cases_for(args.losses, shapes)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = report.output_stem(args.out, device, meta["timestamp_utc"])
    stem = stem.with_name(f"pairwise-{stem.name}")
    rows, notes = [], []

    def save():
        meta["wall_s"] = time.perf_counter() - started
        extras = {"notes": notes, "self_check": {"ok": ok, "message": message},
                  "availability": {f"{n}/{loss}": {"available": a, "note": w}
                                   for (n, loss), (a, w) in availability.items()}}
        report.write_json(stem.with_suffix(".json"), meta, rows, extras)
        with stem.with_suffix(".csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: report._csv_value(r.get(k)) for k in CSV_COLUMNS} for r in rows)

    for index, case in enumerate(selected, 1):
        if args.time_budget_s and time.perf_counter() - started > args.time_budget_s:
            notes.append(f"Time budget of {args.time_budget_s:.0f} s reached: {len(selected) - index + 1} of "
                         f"{len(selected)} cases were not run.")
            print(notes[-1])
            break
        t0 = time.perf_counter()
        max_bytes = memory_limit_bytes(args.max_gib, runner.free_device_bytes(device))
        rows += run_case(case, impls, availability, args.seed, args.quick, max_bytes, device=device)
        save()
        timed = ", ".join(f"{r['label']} {r['ms']:.3f}" for r in rows if r["case"] == case.name()
                          and r.get("status") == "ok")
        print(f"[{index}/{len(selected)}] {case.name()}: {timed or 'nothing timed'} ms "
              f"({time.perf_counter() - t0:.1f}s)", flush=True)
    save()
    print(f"\nwrote:\n  {stem.with_suffix('.json')}\n  {stem.with_suffix('.csv')}")
    problems = report.format_problems(rows)
    if problems:
        print("not timed (implementation, status, cases, why):\n" + problems)
    for note in notes:
        print(textwrap.fill(note, report.TABLE_WIDTH))
    print(f"total {time.perf_counter() - started:.0f} s")
    print(format_table(rows, {impl.name: impl.label for impl in all_impls(device)}, device.type))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
