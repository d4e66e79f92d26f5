#!/usr/bin/env bash
# The GPU check: one command on a CUDA machine with a clone of the project, at most 8 minutes in all, every
# result written under $OUT (default output/gpu-check) and a short table printed last.
#
#   OUT=output/gpu-check bash tools/gpu_check.sh
#
#   1. device and versions (nvidia-smi, torch, triton, commit)                        gpu.txt
#   2. the kernel tests natively, Triton compiled (train tests left out), <= 150 s      pytest.log, pytest.xml
#   3. compute-sanitizer memcheck over every kernel path (tools.kernel_paths), <= 60 s  memcheck.log
#   4. a compact benchmark grid (python -m bench), cases cut at 80 s, <= 140 s in all   bench/*.json|csv|png
#   5. the pairwise family on CUDA (python -m bench.pairwise --device cuda --quick), <= 60 s
#                                                                                      bench-pairwise/*.json|csv
#   6. the in-kernel order by labels against an older copy of the package (OLD_PACKAGE), <= 70 s
#                                                                                      compare.log, compare/*.json
#
# Each stage has its own timeout, so a hung stage costs its cap, not the rest of the run; a failed stage is reported and
# the next one runs. The static cost model (python -m tools.sass_count) needs no GPU: run it beside, on any
# machine, at the same commit. Without CUDA the script still runs end to end (tests interpreted, the benchmark's
# CPU cases), which is how it is rehearsed; TESTS narrows the test selection for such a rehearsal.
set -uo pipefail
out=${OUT:-output/gpu-check}
py=${PYTHON:-python3}
tests=${TESTS:-tests}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
start=$SECONDS
status() { printf '%-10s %-8s %4ss  %s\n' "$1" "$2" "$3" "$4" >> "$out/summary.txt"; }
: > "$out/summary.txt"

# 1. Device and versions
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null \
        || echo "nvidia-smi: not available"
    "$py" -c 'import torch, triton, sys; print("python", sys.version.split()[0], "| torch", torch.__version__,
              "| triton", triton.__version__, "| cuda", torch.cuda.is_available())'
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo "${LISTMLE_GIT_COMMIT:-unknown}")"
} > "$out/gpu.txt" 2>&1
status device "$(grep -q '^python .* torch' "$out/gpu.txt" && echo ok || echo failed)" $((SECONDS - start)) \
    "$(grep -m1 '^python' "$out/gpu.txt" || tail -1 "$out/gpu.txt")"

# 2. Kernel tests, natively where CUDA is present (tests/conftest.py sets the interpreter otherwise)
t=$SECONDS
timeout 150 "$py" -m pytest "$tests" -q -n "${WORKERS:-12}" -p no:cacheprovider \
    --ignore-glob='tests/test_train_*' --junitxml "$out/pytest.xml" > "$out/pytest.log" 2>&1
rc=$?
status tests "$([ $rc = 0 ] && echo ok || echo "rc=$rc")" $((SECONDS - t)) "$(tail -1 "$out/pytest.log")"

# 3. memcheck over every kernel path (without the caching allocator every tensor is its own allocation, so
#    small overruns are caught)
t=$SECONDS
if command -v compute-sanitizer > /dev/null; then
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 \
        "$py" -m tools.kernel_paths > "$out/memcheck.log" 2>&1
    rc=$?
    status memcheck "$([ $rc = 0 ] && echo ok || echo "rc=$rc")" $((SECONDS - t)) "$(grep -m1 'ERROR SUMMARY' "$out/memcheck.log")"
else
    status memcheck skipped 0 "compute-sanitizer not found"
fi

# 4. A compact benchmark grid: the headline mode over shapes from the recipe's to 2^26 elements, and every mode
#    at the recipe's two shapes and the largest; cases run in priority order until the budget is spent.
t=$SECONDS
train_step=$("$py" -c 'import torch; print("" if torch.cuda.is_available() else "--no-train-step")' 2>/dev/null)
timeout 140 "$py" -m bench $train_step --B 16,64,256,4096,16384,65536 --L 10,100,1024,4096 --max-elements $((1 << 26)) \
    --sweep 16x10,64x100,16384x4096 --dtypes float32 --time-budget-s 80 --out "$out/bench" > "$out/bench.log" 2>&1
rc=$?
status bench "$([ $rc = 0 ] && echo ok || echo "rc=$rc")" $((SECONDS - t)) "$(ls "$out"/bench/*.json 2>/dev/null | head -1)"

# 5. LambdaLoss, RankNet and ListNet on CUDA tensors, ours (the Triton kernels) against sentence-transformers' and
#    allRank's (each skipped with the reason where not installed). Without CUDA it refuses at once (an argparse
#    error), which is reported as a skip with that error.
t=$SECONDS
timeout 60 "$py" -m bench.pairwise --device cuda --quick --time-budget-s 40 --out "$out/bench-pairwise" \
    > "$out/bench-pairwise.log" 2>&1
rc=$?
if [ $rc = 0 ]; then
    status pairwise ok $((SECONDS - t)) "$(ls "$out"/bench-pairwise/*.json 2>/dev/null | head -1)"
elif grep -q 'torch sees no CUDA device' "$out/bench-pairwise.log"; then
    status pairwise skipped $((SECONDS - t)) "$(tail -1 "$out/bench-pairwise.log")"
else
    status pairwise "rc=$rc" $((SECONDS - t)) "$(tail -1 "$out/bench-pairwise.log")"
fi

# 6. Graded labels with random ties, the in-kernel order whose keys and tie bits the static model prices most
#    differently between versions, timed against an older copy of the package: OLD_PACKAGE, a folder that
#    `git archive REV listmle_kernels | tar -x -C DIR` filled, carried to the machine (it has no git history).
#    BY_LABELS_SHAPES narrows the shapes for a rehearsal on a CPU.
t=$SECONDS
if [ -n "${OLD_PACKAGE:-}" ]; then
    timeout 70 "$py" -m tools.compare_commits "$(basename "$OLD_PACKAGE")" --package-dir "$OLD_PACKAGE" \
        --shape "${BY_LABELS_SHAPES:-16384x1024}" --orders labels --labels graded --ties random --rounds 3 \
        --seconds 1 --out "$out/compare" > "$out/compare.log" 2>&1
    rc=$?
    status by-labels "$([ $rc = 0 ] && echo ok || echo "rc=$rc")" $((SECONDS - t)) \
        "$(grep -m1 'random-ties' "$out/compare.log" | cut -c1-100)"
else
    status by-labels skipped 0 "OLD_PACKAGE not set"
fi

echo "== gpu check: $((SECONDS - start)) s; files under $out"
cat "$out/summary.txt"
# The benchmark's table and target lines, from its JSON (written as cases finish, so there after a timeout too)
"$py" -c 'import json, sys
from bench import report
run = json.load(open(sys.argv[1]))
kind = run["meta"]["device_type"]
print(report.format_table(run["results"], kind))
print(report.format_targets(run["results"], kind))' "$(ls "$out"/bench/*.json | tail -1)"
# The pairwise family's table, where its run wrote a JSON
if ls "$out"/bench-pairwise/*.json > /dev/null 2>&1; then
    "$py" -c 'import json, sys
from bench.pairwise import format_table
run = json.load(open(sys.argv[1]))
labels = {r["impl"]: r["label"] for r in run["results"]}
print(format_table(run["results"], labels, run["meta"]["device_type"]))' "$(ls "$out"/bench-pairwise/*.json | tail -1)"
fi
# The by-labels comparison's table, where it ran
[ -s "$out/compare.log" ] && grep -E 'random-ties|wrote' "$out/compare.log"
