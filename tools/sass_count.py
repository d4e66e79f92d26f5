"""python -m tools.sass_count: count the kernel's sm_90 machine instructions, on any machine.

On the H100 the kernel at 16384 x 4096 was bound by issuing instructions, not by memory (Nsight
Compute, docs/performance-record.md). How many instructions a thread runs can be read without a
GPU: Triton's bundled ptxas compiles for sm_90 and cuobjdump disassembles the result.

For each shape and variant (float32 scores, ragged lengths: ListMLE in input order, p-ListMLE in input
order, and, where the launcher orders rows by labels in the kernel, ListMLE by labels each way the kernel may
take: with stable ties counted, the path of graded labels, or sorted with int32 keys (labels in more steps) or
int64 keys (any others); with random ties sorted with int32 or int64 keys; `LABEL_CASES` below), at the
configuration the launcher picks, this prints registers and the SASS count of the linear-sums path: the
kernel compiled with its log-space branch cut out, and for the by-labels variants with the branches between
those ways cut to the one taken (the checks that choose stay: their results also give the row's count).
That path is straight-line code for one-chunk rows (checked: no backward branch), so its count is
what every thread of a program on that path issues, for ROWS * BLOCK / (32 * warps) slots each: "a slot"
below. Beside it: the ratio to the minimal kernel
(tools/minimal_listmle.py, the simplest case's sums and nothing else) compiled at the same tile, the ratio to
ListMLE in input order at the same shape, the whole kernel's count, and the global loads and stores by
width (LDG.E.128 moves 16 bytes a thread). Where the kernel sorts, two more lines count tl.sort alone at that
tile, of int64 keys (the kernel's) and of int32 keys: what a sort of either width costs before any sums.

`--lambdaloss` counts the LambdaLoss kernels instead (triton_lambdaloss.py): per scheme and tile, registers,
spills, the SASS of the loop over tiles of positions j, and that loop's SASS per pair (cell) of a thread:
the loop body issues once per tile of TILE x TILE cells, TILE^2 / (32 x warps) of them a thread.

`--package-dir DIR` counts another copy of the package too (as in tools.compare_commits), e.g. the
commit before a change: `git archive REV listmle_kernels | tar -x -C DIR`.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.compiler import ASTSource

from bench import cases as cases_mod
from tools.compare_commits import import_package_at
from tools.minimal_listmle import bare_sort_kernel, minimal_listmle_kernel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from compile_for_gpu import compile_for_h100, compile_lambdaloss_for_h100, compile_sm90, ptxas_resources  # noqa: E402

H100_SMS = 132
LOG_SPACE_BRANCH = "        if linear:\n"  # the kernel's choice between its two ways to take the sums
# Its choices of how to order rows by labels (_sorted_by_labels): count label groups or sort, then int32 or int64 keys
BY_LABELS_BRANCHES = ("counted", "narrow")
SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
MEMORY_OP = re.compile(r"^(LDG|STG)")
# (name, constexprs over the launcher's, by-labels branches cut to the way taken: None in input order); by labels only
# where the launcher orders rows in the kernel
VARIANTS = (("ListMLE, input order", dict(ORDER=0, WEIGHTS=0), None),
            ("p-ListMLE, input order", dict(ORDER=0, WEIGHTS=1), None),
            ("ListMLE, counted in kernel", dict(ORDER=1, WEIGHTS=0), (("counted", True),)),
            ("ListMLE, sorted, int32 keys", dict(ORDER=1, WEIGHTS=0), (("counted", False), ("narrow", True))),
            ("ListMLE, sorted, int64 keys", dict(ORDER=1, WEIGHTS=0), (("counted", False), ("narrow", False))),
            ("random ties, int32 keys", dict(ORDER=1, WEIGHTS=0, RANDOM_TIES=True), (("narrow", True),)),
            ("random ties, int64 keys", dict(ORDER=1, WEIGHTS=0, RANDOM_TIES=True), (("narrow", False),)))
LABELS = "fp32"  # the bench's labels
# Which labels take each by-labels variant's path
LABEL_CASES = {
    "ListMLE, counted in kernel": "stable ties, every row's labels a whole number of steps, fewer than the "
                                  "launcher's label_groups(block), below its top (graded relevance 0..4)",
    "ListMLE, sorted, int32 keys": "stable ties, labels in more steps than that, fewer than 2^key_group_bits(block) "
                                   "(grades 0..100): the checks, then tl.sort of int32 keys",
    "ListMLE, sorted, int64 keys": "stable ties, labels that miss those steps in some row of the program (float "
                                   "relevance): the checks, then tl.sort of int64 keys",
    "random ties, int32 keys": "random ties, labels in fewer than 2^key_group_bits(block) steps (graded "
                               "relevance): the check, then tl.sort of int32 keys with random tie bits",
    "random ties, int64 keys": "random ties, any other labels: the check, then tl.sort of int64 keys",
}


def linear_path_only(package_dir: Path, into: Path, ways=None):
    """A copy of the package in `package_dir` whose kernel always takes the linear sums, imported; `ways` (pairs of a
    BY_LABELS_BRANCHES name and True or False): by labels, it also always takes those branches. None where the
    package lacks a branch that a way takes (a copy that predates it); a branch it lacks that a way skips is left
    as it is (the copy only ever took the other way)."""
    copy = into / ("linear_only_src_" + "_".join(f"{name}_{taken}" for name, taken in ways or ()))
    shutil.copytree(package_dir, copy)
    source = copy / "triton_listmle.py"
    text = source.read_text()
    if text.count(LOG_SPACE_BRANCH) != 1:
        raise ValueError(f"{package_dir}/triton_listmle.py: expected one {LOG_SPACE_BRANCH.strip()!r} line to cut")
    text = text.replace(LOG_SPACE_BRANCH, "        if True:\n")
    for name, taken in ways or ():
        if name not in BY_LABELS_BRANCHES:
            raise ValueError(f"no by-labels branch {name!r}: the kernel's are {BY_LABELS_BRANCHES}")
        branch = re.compile(rf"^(\s+)if {name}:$", re.MULTILINE)
        if taken and not branch.search(text):
            return None
        text = branch.sub(rf"\g<1>if {taken}:", text)
    source.write_text(text)
    return import_package_at("linear-only", into, copy)


def sass(compiled) -> list[tuple[int, str, str]]:
    """(address, opcode with modifiers, operands) of each instruction of a compiled kernel's SASS, in order."""
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        listing = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    return [(int(address, 16), op, operands) for address, op, operands in SASS_LINE.findall(listing)]


def straight_line(instructions) -> bool:
    """No branch goes backwards, so every thread issues each instruction at most once (the
    `BRA` to itself after the last `EXIT` is padding, never reached)."""
    for address, op, operands in instructions:
        target = re.search(r"0x([0-9a-f]+)", operands) if op.startswith("BRA") else None
        if target and int(target.group(1), 16) < address:
            return False
    return True


def summary(compiled) -> dict:
    instructions = sass(compiled)
    ops = [op for _, op, _ in instructions]
    resources = ptxas_resources(compiled)
    registers = re.match(r"(\d+) registers", resources)
    return dict(resources=resources, registers=int(registers.group(1)) if registers else -1, sass=len(ops),
                straight_line=straight_line(instructions),
                memory=dict(collections.Counter(op for op in ops if MEMORY_OP.match(op))))


def launcher_config(package, batch: int, length: int, sort_by_labels: bool):
    """(constexprs, warps), or None where the launcher would not sort in the kernel: what the launcher of
    `package` picks for (batch, length), float32, lengths."""
    kernels = importlib.import_module(package.__name__ + ".triton_listmle")
    sort_in_kernel, block, chunks = kernels.row_geometry(length, sort_by_labels)
    if sort_by_labels and not sort_in_kernel:
        return None
    rows, warps = kernels.launch_config(block, chunks, batch, sort_in_kernel, H100_SMS)
    return dict(REAL=2, ORDER=0, WEIGHTS=0, RANDOM_TIES=False, STORE_GRAD=True, ROWS=rows, BLOCK=block,
                CHUNKS=chunks), warps


def compile_minimal(rows: int, block: int, warps: int, aligned: bool):
    """The minimal kernel at a tile, specialised as a launch on contiguous float32 rows and int64 lengths."""
    signature = dict(scores_ptr="*fp32", lengths_ptr="*i64", loss_ptr="*fp32", grad_ptr="*fp32", B="i32",
                     L="i32", row_divisor="i32", ROWS="constexpr", BLOCK="constexpr", FAST="constexpr")
    divisible = ["scores_ptr", "lengths_ptr", "loss_ptr", "grad_ptr"] + (["B", "L"] if aligned else [])
    attrs = {(list(signature).index(name),): [["tt.divisibility", 16]] for name in divisible}
    source = ASTSource(fn=minimal_listmle_kernel, signature=signature,
                       constexprs=dict(ROWS=rows, BLOCK=block, FAST=True), attrs=attrs)
    return compile_sm90(source, warps)


def compile_bare_sort(keys: str, rows: int, block: int, warps: int):
    """tl.sort alone of rows x block keys ("i64" or "i32"), at a tile."""
    source = ASTSource(fn=bare_sort_kernel, signature=dict(keys_ptr="*" + keys, out_ptr="*" + keys, ROWS="constexpr",
                                                           BLOCK="constexpr"),
                       constexprs=dict(ROWS=rows, BLOCK=block), attrs={(0,): [["tt.divisibility", 16]],
                                                                       (1,): [["tt.divisibility", 16]]})
    return compile_sm90(source, warps)


def count(package, shapes, label: str) -> list[dict]:
    results = []
    minimal, whole = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        copies = {ways: linear_path_only(Path(package.__file__).parent, Path(tmp), ways)
                  for ways in dict.fromkeys(ways for _, _, ways in VARIANTS)}
        for batch, length in shapes:
            aligned = length % 16 == 0 and batch % 16 == 0
            input_order = None
            for variant, change, ways in VARIANTS:
                config = launcher_config(package, batch, length, sort_by_labels=change["ORDER"] == 1)
                if config is None or copies[ways] is None:
                    continue
                linear_only = copies[ways]
                constants, warps = config
                constants.update(change)
                tile = (constants["ROWS"], constants["BLOCK"], warps)
                if (tile, aligned) not in minimal:
                    minimal[tile, aligned] = summary(compile_minimal(*tile, aligned))
                row = dict(shape=f"{batch}x{length}", package=label, variant=variant, warps=warps, **constants,
                           labels=LABEL_CASES.get(variant, "not read"), minimal=minimal[tile, aligned])
                compiled = {}
                for path, copy in (("whole", package), ("linear", linear_only)):
                    key = (path, tuple(sorted(constants.items())), warps, aligned)
                    if path == "linear" or key not in whole:  # counted and sorted share the uncut kernel
                        kernel = importlib.import_module(copy.__name__ + ".triton_listmle")._listmle_kernel
                        compiled[key] = summary(compile_for_h100("fp32", constants, warps, aligned, kernel,
                                                                 pointers=dict(labels_ptr=LABELS)))
                        if path == "whole":
                            whole[key] = compiled[key]
                    row[path] = whole[key] if path == "whole" else compiled[key]
                slots = constants["ROWS"] * constants["BLOCK"] / (32 * warps)
                per_slot = constants["CHUNKS"] == 1 and row["linear"]["straight_line"]
                row["slots_per_thread"] = slots
                row["linear_sass_per_slot"] = row["linear"]["sass"] / slots if per_slot else None
                row["over_minimal"] = row["linear"]["sass"] / row["minimal"]["sass"]
                input_order = input_order or row
                row["over_input_order"] = row["linear"]["sass"] / input_order["linear"]["sass"]
                results.append(row)
                print(line(row), flush=True)
                if variant == "ListMLE, sorted, int64 keys":
                    for keys in ("i64", "i32"):
                        alone = summary(compile_bare_sort(keys, constants["ROWS"], constants["BLOCK"], warps))
                        sort_row = dict(row, variant=f"tl.sort alone, {keys} keys", linear=alone, whole=alone,
                                        labels="keys only",
                                        linear_sass_per_slot=alone["sass"] / slots if alone["straight_line"] else None,
                                        over_minimal=alone["sass"] / row["minimal"]["sass"],
                                        over_input_order=alone["sass"] / input_order["linear"]["sass"])
                        results.append(sort_row)
                        print(line(sort_row), flush=True)
    return results


LAMBDALOSS_SCHEMES = ("none", "ndcgloss1", "ndcgloss2", "lambdarank", "ndcgloss2pp")
# (score type, tile, warps): the launcher's pick and its neighbours
LAMBDALOSS_TILES = (("fp32", 32, 4), ("fp32", 64, 8), ("fp32", 64, 4), ("fp64", 32, 8), ("fp64", 32, 4))


def loop_span(instructions):
    """(first, last) index of the instructions of the outermost loop: from the earliest target of a backward
    branch to that branch; None for straight-line code."""
    spans = []
    for index, (address, op, operands) in enumerate(instructions):
        target = re.search(r"0x([0-9a-f]+)", operands) if op.startswith("BRA") else None
        if target and int(target.group(1), 16) < address:
            start = next(i for i, (a, _, _) in enumerate(instructions) if a >= int(target.group(1), 16))
            spans.append((start, index))
    return min(spans) if spans else None


def count_lambdaloss(tiles=LAMBDALOSS_TILES, schemes=LAMBDALOSS_SCHEMES) -> list[dict]:
    """Registers, spills and SASS of `_pair_tiles_kernel` per (score type, tile, warps) and scheme, with the
    gradient; the SASS of its loop over tiles of j, per cell of a thread."""
    from listmle_kernels import triton_lambdaloss
    results = []
    print(f"triton {triton.__version__}, sm_90 via Triton's ptxas; _pair_tiles_kernel with the gradient, FAST_MATH "
          f"{triton_lambdaloss.FAST_MATH_FLOAT32} for float32; a pair = one cell (i, j) of a thread's share of a tile")
    print(f"{'scores':>6s} {'scheme':>11s} {'tile, warps':>11s} {'regs':>4s} {'spills st/ld B':>14s} {'SASS':>5s} "
          f"{'loop SASS':>9s} {'cells/thread':>12s} {'SASS/pair':>9s} | loop's MUFU, loads and stores", flush=True)
    for score_type, tile, warps in tiles:
        for scheme in schemes:
            compiled = compile_lambdaloss_for_h100(
                "_pair_tiles_kernel", score_type,
                dict(SCHEME=LAMBDALOSS_SCHEMES.index(scheme), TOP_K=False, STORE_GRAD=True, TILE=tile), warps)
            instructions = sass(compiled)
            resources = ptxas_resources(compiled)
            numbers = re.match(r"(\d+) registers, spills (\d+) B stored / (\d+) B loaded", resources)
            span = loop_span(instructions)
            body = [op for _, op, _ in instructions[span[0]:span[1] + 1]] if span else []
            cells = tile * tile / (32 * warps)
            row = dict(scores=score_type, scheme=scheme, tile=tile, warps=warps, resources=resources,
                       registers=int(numbers.group(1)) if numbers else -1,
                       spills=(int(numbers.group(2)), int(numbers.group(3))) if numbers else None,
                       sass=len(instructions), loop_sass=len(body), cells_per_thread=cells,
                       sass_per_pair=len(body) / cells if body else None,
                       loop_ops=dict(collections.Counter(op.split(".")[0] for op in body
                                                         if op.startswith(("MUFU", "LDG", "STG", "STL", "LDL")))))
            results.append(row)
            spills = f"{row['spills'][0]}/{row['spills'][1]}" if row["spills"] else "?"
            print(f"{score_type:>6s} {scheme:>11s} {tile:5d}, {warps:2d}  {row['registers']:4d} {spills:>14s} "
                  f"{row['sass']:5d} {row['loop_sass']:9d} {cells:12.0f} "
                  f"{row['sass_per_pair'] or float('nan'):9.1f} | "
                  + " ".join(f"{op} x{n}" for op, n in sorted(row["loop_ops"].items())), flush=True)
    return results


HEADER = (f"{'package':>10s} {'shape':>11s} {'variant':27s} {'rows x block, warps':>19s} {'regs':>4s} "
          f"{'SASS/thread':>11s} {'SASS/slot':>9s} {'x minimal':>9s} {'x input':>7s} | minimal: {'SASS':>4s} "
          f"{'/slot':>5s} {'regs':>4s} | whole kernel SASS, regs | loads and stores")


def line(row: dict) -> str:
    per_slot = row["linear_sass_per_slot"]
    linear, minimal = row["linear"], row["minimal"]
    return (f"{row['package']:>10s} {row['shape']:>11s} {row['variant']:27s} "
            f"{row['ROWS']:5d} x {row['BLOCK']:4d}, {row['warps']:2d} {linear['registers']:4d} "
            f"{linear['sass']:11d} {per_slot if per_slot else float('nan'):9.1f} {row['over_minimal']:9.2f} "
            f"{row['over_input_order']:7.2f} | minimal: {minimal['sass']:4d} "
            f"{minimal['sass'] / row['slots_per_thread']:5.1f} {minimal['registers']:4d} | "
            f"{row['whole']['sass']:5d}, {row['whole']['registers']:3d} | "
            + " ".join(f"{op} x{n}" for op, n in sorted(linear["memory"].items()))
            + ("" if linear["straight_line"] else " | LOOPS: not straight-line"))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.sass_count", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=cases_mod.parse_shapes, default=((16384, 4096), (65536, 1024), (65536, 128)),
                   help="B x L cases, e.g. 16384x4096,64x100")
    p.add_argument("--package-dir", type=Path, help="also count the listmle_kernels copy in this directory")
    p.add_argument("--lambdaloss", action="store_true", help="count the LambdaLoss kernels instead")
    args = p.parse_args(argv)
    if args.lambdaloss:
        return count_lambdaloss()
    import listmle_kernels

    print(f"triton {triton.__version__}, sm_90 via Triton's ptxas; float32 scores, int64 lengths, float32 labels; "
          "registers and SASS of the linear-sums path; a slot = rows x block / (32 x warps) of a thread")
    for variant, labels in LABEL_CASES.items():
        print(f"  {variant}: {labels}")
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.package_dir is not None:
            count(import_package_at("other", Path(tmp), args.package_dir), args.shape, args.package_dir.name)
        return count(listmle_kernels, args.shape, "this tree")


if __name__ == "__main__":
    main()
