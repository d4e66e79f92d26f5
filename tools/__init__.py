"""Lab tooling for kernel work, beside the benchmark in bench/: each Python module runs as `python -m tools.NAME`.

  compare_commits.py  this tree's package against another commit's, timed interleaved
  host_profile.py     where the host time of a training-sized call goes
  peak_memory.py      peak extra memory of forward+backward on the CPU, over the gradient, per mode
  kernel_paths.py     every Triton code path once, small (for compute-sanitizer on a GPU)
  sass_count.py       the kernel's sm_90 instructions, counted without a GPU, against minimal_listmle.py
                      (--lambdaloss: the LambdaLoss tile kernel's, per pair)
  minimal_listmle.py  the simplest case's sums as one small kernel: the floor sass_count compares with
  sort_timing.py      where the CPU sort-by-labels time goes
  tune.py             the launch-configuration sweep on a GPU
  gpu_check.sh        the GPU check: native kernel tests, memcheck, a compact benchmark grid, the pairwise
                      family, the by-labels order against an older package, in one command
"""
