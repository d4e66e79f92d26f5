"""train/'s own run record and timer (train/ uses no bench/ code): the benchmark's fields, real timings."""

import subprocess
import time

import pytest
import torch

from bench.report import run_metadata as bench_run_metadata
from train.provenance import ROOT, run_metadata
from train.timing import time_back_to_back


def test_run_metadata_has_the_benchmarks_fields(monkeypatch):
    monkeypatch.delenv("LISTMLE_GIT_COMMIT", raising=False)
    ours = run_metadata(torch.device("cpu"), {"seed": 3})
    theirs = bench_run_metadata(torch.device("cpu"), {"seed": 3})
    assert list(ours) == list(theirs)
    same = ("device_type", "device", "git_commit", "git_dirty", "torch", "triton", "listmle_kernels", "transformers",
            "python", "platform", "args")
    assert {key: ours[key] for key in same} == {key: theirs[key] for key in same}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert ours["git_commit"] == head.stdout.strip()


def test_a_copy_without_history_names_its_commit(monkeypatch):
    monkeypatch.setenv("LISTMLE_GIT_COMMIT", "0123abc")
    assert run_metadata(torch.device("cpu"), {})["git_commit"] == "0123abc"


@pytest.mark.parametrize("sleep_ms", [0.0, 3.0])
def test_time_back_to_back(sleep_ms):
    calls = []

    def step():
        calls.append(1)
        if sleep_ms:
            time.sleep(sleep_ms / 1e3)

    median, q20, q80 = time_back_to_back(step, torch.device("cpu"), min_seconds=0.05, min_samples=5)
    assert q20 <= median <= q80
    assert median >= sleep_ms  # a sleep lasts at least as long as asked
    assert len(calls) >= 1 + 5  # the warm-up call, then at least min_samples samples
