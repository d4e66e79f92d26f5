"""python -m bench.sort_timing: where the CPU sort-by-labels time goes (the figures in bench/NOTES.md).

Times, on one torch thread, `target_order` at 256 x 100 (80% real documents, stable and random ties)
against sorting the same packed int64 keys with torch.sort (values and indices), and the bare sorts.
"""

import numpy as np
import torch

from bench.timing import time_cpu
from listmle_kernels.target_order import packed_keys, target_order


def main(batch=256, length=100):
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    labels = torch.rand(batch, length, generator=gen)
    real = torch.rand(batch, length, generator=gen) < 0.8
    packed = packed_keys(labels, real, False, 0)
    rows = [
        ("target_order, stable ties", lambda: target_order(labels, real, False, 0)),
        ("target_order, random ties", lambda: target_order(labels, real, True, 0)),
        ("torch.sort of the packed keys (values + indices)", lambda: torch.sort(packed, dim=1)),
        ("np.argsort of the packed keys", lambda: np.argsort(packed.numpy(), axis=1)),
        ("np.sort of the packed keys (values)", lambda: np.sort(packed.numpy(), axis=1)),
    ]
    print(f"{batch} x {length}, one torch thread, median ms")
    for name, fn in rows:
        print(f"  {time_cpu(fn, warmup=10, min_seconds=0.5, max_repeats=300)[0]:7.3f}  {name}")


if __name__ == "__main__":
    main()
