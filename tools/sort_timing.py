"""python -m tools.sort_timing [--shape BxL,...]: where the CPU sort-by-labels time goes (docs/performance-record.md).

Times, on one torch thread, at 256 x 100 or each given shape (80% real documents, stable and random ties): the
CPU path's target order, each of its builds forced (numpy's packed keys, the small batches' torch sort, the torch
build CUDA tensors take), and bare sorts of random int64 keys of the same shape: torch's, numpy's whole rows and
numpy's runs of at most NETWORK_SORT_MAX merged (`sort_rows_`; `sort_in_runs` says which one this CPU takes).
"""

import argparse

import numpy as np
import torch

from bench.cases import parse_shapes
from bench.timing import time_cpu
from listmle_kernels.target_order import (numpy_target_order, small_stable_order, sort_in_runs, sort_rows_,
                                          target_order, torch_target_order)


def main(batch=256, length=100):
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    labels = torch.rand(batch, length, generator=gen)
    real = torch.rand(batch, length, generator=gen) < 0.8
    keys = torch.randint(0, 2 ** 62, (batch, length), generator=gen)  # for the bare sorts
    rows = [
        ("target_order, stable ties (the CPU path)", lambda: target_order(labels, real, False, 0)),
        ("target_order, random ties (the CPU path)", lambda: target_order(labels, real, True, 0)),
        ("numpy_target_order, stable ties", lambda: numpy_target_order(labels, real, False, 0)),
        ("numpy_target_order, random ties", lambda: numpy_target_order(labels, real, True, 0)),
        ("small_stable_order", lambda: small_stable_order(labels, real)),
        ("torch_target_order, stable ties (the CUDA path)", lambda: torch_target_order(labels, real, False, 0)),
        ("torch_target_order, random ties", lambda: torch_target_order(labels, real, True, 0)),
        ("torch.sort of random int64 keys (values + indices)", lambda: torch.sort(keys, dim=1)),
        ("np.argsort of random int64 keys", lambda: np.argsort(keys.numpy(), axis=1)),
        ("np.sort of random int64 keys (values), whole rows", lambda: sort_rows_(keys.numpy().copy(), False)),
        ("np.sort of random int64 keys (values), in runs", lambda: sort_rows_(keys.numpy().copy(), True)),
    ]
    print(f"{batch} x {length}, one torch thread, median ms; rows of wide keys sorted "
          f"{'in runs' if sort_in_runs() else 'whole'} here")
    for name, fn in rows:
        print(f"  {time_cpu(fn, warmup=10, min_seconds=0.5, max_repeats=300)[0]:7.3f}  {name}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=parse_shapes, default="256x100", help="B x L, e.g. 256x100,64x4096")
    for batch, length in parser.parse_args().shape:
        main(batch, length)
