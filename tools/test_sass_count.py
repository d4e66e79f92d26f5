"""tools.sass_count compiles the kernel for sm_90 and counts it (no GPU needed; not under the interpreter)."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_counts_the_linear_path_and_sees_vectorised_score_loads():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a real compile
    code = ("import json; from tools import sass_count; "
            "print(json.dumps(sass_count.main(['--shape', '64x128'])))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (row,) = json.loads(run.stdout.strip().splitlines()[-1])
    assert row["shape"] == "64x128" and row["CHUNKS"] == 1
    # Cutting the log-space branch out leaves a strict subset of the kernel
    assert 0 < row["linear"]["sass"] < row["whole"]["sass"]
    assert row["linear_sass_per_slot"] == row["linear"]["sass"] / (row["ROWS"] * row["BLOCK"] / (32 * row["warps"]))
    # Rows given by lengths, input order: a thread's 4 float32 scores come in one 16-byte load, not four
    assert row["linear"]["memory"].get("LDG.E.128", 0) >= 1
    assert "LDG.E" not in row["linear"]["memory"], row["linear"]["memory"]
