"""Benchmark cases: which (shape, mode) pairs are measured, and the random inputs for each.

A case is one batch shape (B queries x L slots) in one mode:
  direction  "fwd" (loss only) or "fwd+bwd" (loss and gradient w.r.t. the scores)
  weighting  "listmle" (w_r = 1) or "plistmle" (sentence-transformers' default p-ListMLE weights)
  order      "input" (the input order is the target permutation) or "labels" (sort by labels)
  dtype      the scores' dtype: "float32" or "bfloat16"
  ragged     True: random per-row lengths (padding at the end of each row), as real batches have

The grid is split in two so that a full run fits the device's 10-minute command limit:
  * the shape grid (B x L) in the headline mode for each direction, and
  * a mode sweep (every combination of the five switches) at a few representative shapes,
    which always include the training recipe's shapes (16 x 10 and 64 x 100).
Cases run in priority order (`by_priority`), so a run cut by its time budget has measured what the
targets need first.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# Headline mode of the shape grid: what ListMLE training with sentence-transformers' defaults does.
HEADLINE = dict(weighting="listmle", order="input", dtype="float32", ragged=True)

FULL_B = (16, 64, 256, 1024, 4096, 16384, 65536)
FULL_L = (8, 32, 100, 128, 512, 1024, 4096, 16384)
RECIPE_SHAPES = ((16, 10), (64, 100))

# Small shapes: launch overhead is a visible part of the time, so on CUDA the CUDA-graph replay and
# back-to-back wall-clock times (host included) are measured too, and the speedup targets use the latter.
MAX_ELEMENTS_SMALL = 1 << 16
# Largest B*L measured. 2^27 float32 scores = 512 MiB; baselines allocate several such tensors.
MAX_ELEMENTS_GPU = 1 << 27
# On the CPU the literal baselines take ~0.1 s per million elements, so stay small there.
MAX_ELEMENTS_CPU = 1 << 19


@dataclass(frozen=True)
class Case:
    B: int
    L: int
    direction: str = "fwd+bwd"
    weighting: str = "listmle"
    order: str = "input"
    dtype: str = "float32"
    ragged: bool = True
    group: str = "grid"  # "grid" (shape sweep) or "modes" (mode sweep)

    @property
    def elements(self) -> int:
        return self.B * self.L

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def mode_name(self) -> str:
        return "/".join(
            [self.direction, self.weighting, self.order, self.dtype, "ragged" if self.ragged else "full"]
        )

    def name(self) -> str:
        return f"B{self.B}xL{self.L}/{self.mode_name()}"

    def as_dict(self) -> dict:
        return asdict(self)


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """'16x10,64x100' -> [(16, 10), (64, 100)]."""
    shapes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        b, l = item.lower().split("x")
        shapes.append((int(b), int(l)))
    return shapes


def shape_grid_cases(batch_sizes, lengths, directions, max_elements) -> list[Case]:
    return [
        Case(B, L, direction=d, group="grid", **HEADLINE)
        for B, L in itertools.product(batch_sizes, lengths)
        if B * L <= max_elements
        for d in directions
    ]


def mode_sweep_cases(shapes, directions, weightings, orders, dtypes, raggeds, max_elements) -> list[Case]:
    return [
        Case(B, L, direction=d, weighting=w, order=o, dtype=t, ragged=r, group="modes")
        for B, L in shapes
        if B * L <= max_elements
        for d, w, o, t, r in itertools.product(directions, weightings, orders, dtypes, raggeds)
    ]


def default_grid(on_cuda: bool, quick: bool) -> dict:
    """Grid settings before command-line overrides."""
    if on_cuda:
        if quick:
            return dict(B=(64, 1024, 16384), L=(32, 128, 1024), sweep=((16, 10), (64, 100), (4096, 1024)),
                        max_elements=MAX_ELEMENTS_GPU)
        return dict(B=FULL_B, L=FULL_L, sweep=RECIPE_SHAPES + ((4096, 1024), (16384, 4096)),
                    max_elements=MAX_ELEMENTS_GPU)
    if quick:
        # 256 x 100 is the shape of the CPU target (torch path >= 3x the reference eager, fwd+bwd).
        return dict(B=(16, 64, 256), L=(8, 32, 100), sweep=((16, 10), (256, 100)), max_elements=MAX_ELEMENTS_CPU)
    return dict(B=(16, 64, 256, 1024), L=(8, 32, 100, 128, 512), sweep=RECIPE_SHAPES + ((256, 100),),
                max_elements=MAX_ELEMENTS_CPU)


def by_priority(cases: list[Case]) -> list[Case]:
    """Stable order for a run that a time budget may cut: the recipe's shapes (what training runs),
    then forward+backward float32 at B*L >= 2^24 (the bandwidth target, both orders), then the rest
    of the forward+backward grid (the speedup targets), then everything else."""
    def rank(case: Case) -> int:
        if (case.B, case.L) in RECIPE_SHAPES:
            return 0
        if case.direction == "fwd+bwd" and case.dtype == "float32" and case.elements >= 1 << 24:
            return 1
        return 2 if case.direction == "fwd+bwd" and case.group == "grid" else 3
    return sorted(cases, key=rank)


def dedupe(cases: list[Case]) -> list[Case]:
    """Drop mode-sweep cases that repeat a grid case (same shape and mode)."""
    seen, kept = set(), []
    for case in cases:
        key = (case.B, case.L, case.mode_name())
        if key not in seen:
            seen.add(key)
            kept.append(case)
    return kept


@dataclass
class Inputs:
    """One batch. `scores` is a leaf; labels/lengths are None when the case does not use them."""

    scores: torch.Tensor  # (B, L), case dtype, requires_grad for fwd+bwd
    labels: torch.Tensor | None  # (B, L) float32, distinct values, only for order="labels"
    lengths: torch.Tensor | None  # (B,) int64, only for ragged cases

    def valid_mask(self) -> torch.Tensor:
        B, L = self.scores.shape
        if self.lengths is None:
            return torch.ones(B, L, dtype=torch.bool, device=self.scores.device)
        return torch.arange(L, device=self.scores.device) < self.lengths[:, None]


def make_inputs(case: Case, device: torch.device | str, seed: int) -> Inputs:
    """Random inputs for a case.

    Scores ~ N(0, 2): the spread of a cross-encoder's logits. Labels are continuous and distinct
    (uniform), so every tie policy (stable, random, sentence-transformers' unstable sort, allRank's
    shuffle) gives the same permutation and all implementations can be compared exactly. Ragged rows
    have lengths uniform in [ceil(L/2), L] with row 0 full, so the padded width is always L.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    B, L = case.B, case.L
    scores = (2.0 * torch.randn(B, L, generator=gen)).to(device=device, dtype=case.torch_dtype)
    scores.requires_grad_(case.direction == "fwd+bwd")
    labels = torch.rand(B, L, generator=gen).to(device) if case.order == "labels" else None
    lengths = None
    if case.ragged:
        lengths = torch.randint((L + 1) // 2, L + 1, (B,), generator=gen)
        lengths[0] = L
        lengths = lengths.to(device)
    return Inputs(scores, labels, lengths)


def minimal_bytes(case: Case, lengths: torch.Tensor | None = None) -> int:
    """Bytes any implementation must move: every real input read once, the gradient written once.

    With ragged rows only the real entries (`lengths`, when given) need reading: padding scores and
    labels need not be loaded (the kernel does not), but the gradient is a dense (B, L) tensor,
    zeros at padding, so it is written whole. p-ListMLE's default weights are a function of (rank,
    row length), computed in place, so they cost no traffic. The scalar loss output is negligible.
    """
    itemsize = case.torch_dtype.itemsize
    real = int(lengths.sum()) if case.ragged and lengths is not None else case.elements
    total = real * itemsize  # read scores
    if case.order == "labels":
        total += real * 4  # read float32 labels
    if case.ragged:
        total += case.B * 8  # read int64 lengths
    if case.direction == "fwd+bwd":
        total += case.elements * itemsize  # write d loss / d scores
    return total
