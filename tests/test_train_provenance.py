"""The run record and timer that train/, bench/ and tools/ share: the commit, versions and device, real timings."""

import subprocess
import time

import pytest
import torch

from train.provenance import ROOT, run_metadata
from train.timing import time_back_to_back


def test_run_metadata_names_the_commit_and_versions(monkeypatch):
    monkeypatch.delenv("LISTMLE_GIT_COMMIT", raising=False)
    meta = run_metadata(torch.device("cpu"), {"seed": 3})
    assert meta["torch"] == torch.__version__ and meta["device_type"] == "cpu" and meta["args"] == {"seed": 3}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert meta["git_commit"] == head.stdout.strip()


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
