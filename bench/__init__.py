"""Microbenchmarks for listmle_kernels: `python -m bench --help`.

Modules, one job each:
  cases.py          the benchmark cases (shape x mode) and their random inputs
  impls.py          every implementation of the same loss, behind one calling convention
  check.py          equality of loss and gradient between implementations, before any timing
  timing.py         CUDA (do_bench) and CPU (perf_counter) timers, peak memory, copy bandwidth
  cpu_memory.py     peak extra memory of a step on the CPU (torch's tensors op by op, numpy's arrays)
  training_step.py  the loss's share of a MiniLM-sized cross-encoder training step
  report.py         JSON/CSV output, run metadata, the final table
  plots.py          PNG plots (time vs L, speedup heatmap, % of copy bandwidth)
  __main__.py       the command line that ties them together

The pairwise family (LambdaLoss, RankNet, ListNet on the CPU; `python -m bench.pairwise`):
  pairwise_cases.py its cases (loss x shape) and their random inputs
  pairwise_impls.py ours, sentence-transformers' and allRank's own losses, behind impls.py's convention
  pairwise_check.py the reference each implementation is checked against, and its self-check
  pairwise.py       the command line: estimate, check, measure, time round-robin, write, print
"""
