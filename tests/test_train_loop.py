"""`python -m train` end to end on a tiny random BERT and data made here: the loss goes down, evaluation runs and
writes sentence-transformers' keys, the best model loads, --resume continues exactly, torchrun with 2 processes."""

import train_fixtures  # noqa: F401  (first: puts the repository root on sys.path)

import json
import os

import pytest

from train.evaluate import main as evaluate_main
from train.loop import main as train_main

from train_fixtures import (assert_resume_is_exact, assert_two_processes_match_one, best_so_far,
                            make_training_material, read_jsonl, training_args)


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    return make_training_material(tmp_path_factory.mktemp("train_material"))


def common(material, out, model="bert"):
    return training_args(material, out, model)


def test_loss_decreases_eval_runs_best_model_loads(material, tmp_path):
    out = tmp_path / "run"
    argv = common(material, out, "bert_no_dropout") + [
        "--train-queries", "9", "--val-queries", "2", "--batch-size", "6", "--epochs", "10", "--lr", "3e-3",
        "--warmup-ratio", "0", "--eval-steps", "5", "--eval-data", material["nano"], "--eval-datasets", "msmarco"]
    assert train_main(argv) == 0
    losses = [r["loss"] for r in read_jsonl(out / "train_log.jsonl")]
    assert len(losses) == 10 and losses[-1] < 0.8 * losses[0]
    log = read_jsonl(out / "train_log.jsonl")[0]
    assert set(log) == {"step", "epoch", "loss", "lr", "grad_norm", "queries_per_s"}

    evals = read_jsonl(out / "eval_results.jsonl")
    assert [e["step"] for e in evals] == [0, 5, 10]
    for key in ("NanoMSMARCO_R100_ndcg@10", "NanoMSMARCO_R100_mrr@10", "NanoMSMARCO_R100_map",
                "NanoMSMARCO_R100_base_ndcg@10", "NanoBEIR_R100_mean_ndcg@10", "NanoBEIR_R100_mean_base_map"):
        assert all(0.0 <= e[key] <= 1.0 for e in evals)
    assert all(e["val_loss"] > 0 for e in evals)  # logged; too few queries here to expect it to fall
    assert sorted(os.listdir(out)) == ["best-model", "checkpoint-10", "checkpoint-5", "eval_results.jsonl",
                                       "train_log.jsonl"]

    # the best model re-evaluates to the logged numbers through `python -m train.evaluate`
    best = max(evals, key=lambda e: e["NanoBEIR_R100_mean_ndcg@10"])
    result_file = tmp_path / "eval.json"
    assert evaluate_main(["--model", str(out / "best-model"), "--eval-data", material["nano"], "--eval-datasets",
                          "msmarco", "--max-length", "64", "--device", "cpu", "--output", str(result_file)]) == 0
    again = json.loads(result_file.read_text())
    assert again == pytest.approx({k: v for k, v in best.items() if k in again}, abs=1e-6)

    from transformers import AutoModelForSequenceClassification
    assert AutoModelForSequenceClassification.from_pretrained(out / "best-model").config.num_labels == 1
    cross_encoder = pytest.importorskip("sentence_transformers").CrossEncoder
    assert len(cross_encoder(str(out / "best-model"), device="cpu").predict([("a", "b"), ("c", "d")])) == 2


def test_resume_continues_exactly(material, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    argv = ["--train-queries", "32", "--val-queries", "4", "--batch-size", "4", "--max-steps", "6", "--eval-steps",
            "3", "--lr", "1e-3", "--eval-data", "heldout", "--loss", "plistmle", "--sort-by-labels", "--ties", "random"]
    assert_resume_is_exact(train_main, common(material, full), common(material, resumed), argv, full, resumed)


def test_schedule_clipping_and_best_model_rules(material, tmp_path, monkeypatch):
    """Each step logs the lr it used: ceil(warmup_ratio * steps) warmup steps from 0, then linear decay to 0 (as
    transformers' linear schedule); gradients are clipped to norm 1.0 and the pre-clip norm is logged; an equal score
    keeps the earlier best model (as the HF Trainer does), and --resume carries the best over."""
    import shutil

    import torch
    import train.loop

    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm, *args, **kwargs):
        norm = clip(parameters, max_norm, *args, **kwargs)
        norms.append((max_norm, norm.item()))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    monkeypatch.setattr(train.loop, "run_evaluation", lambda *args: ({"score": 0.5}, "", "score"))  # every eval ties
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    argv = ["--train-queries", "9", "--val-queries", "0", "--batch-size", "4", "--max-steps", "6", "--eval-steps", "3",
            "--lr", "1e-3", "--warmup-ratio", "0.1", "--eval-data", "heldout"]
    assert train_main(common(material, full) + argv) == 0
    log = read_jsonl(full / "train_log.jsonl")
    assert [r["lr"] for r in log] == pytest.approx([0.0, 1e-3, 8e-4, 6e-4, 4e-4, 2e-4], abs=1e-12)  # ceil(0.6) = 1
    assert [max_norm for max_norm, _ in norms] == [1.0] * 6
    assert [r["grad_norm"] for r in log] == pytest.approx([norm for _, norm in norms], rel=1e-6)
    assert best_so_far(full / "checkpoint-6") == {"score": 0.5, "step": 0, "key": "score"}

    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "checkpoint-6")
    assert train_main(common(material, resumed) + argv + ["--resume"]) == 0
    assert best_so_far(resumed / "checkpoint-6") == {"score": 0.5, "step": 0, "key": "score"}


def test_torchrun_two_processes_match_one(material, tmp_path):
    """...and only rank 0 logs: one announcement of the output directory, one transformers load report of the new
    one-label head (rank 1 loads the same model), no progress bars in the redirected stderr."""
    run = assert_two_processes_match_one(train_main, lambda out: training_args(material, out, "bert_no_dropout"),
                                         tmp_path, rel=1e-4)
    assert run.stderr.count("output directory: ") == 1
    assert run.stderr.count("LOAD REPORT") == 1 and "classifier.weight" in run.stderr
    assert run.stderr.count(f"saved {tmp_path / 'ddp' / 'checkpoint-4'} ") == 1
    assert "\r" not in run.stderr and "it/s" not in run.stderr


def test_fresh_run_into_an_earlier_runs_directory(material, tmp_path, capsys):
    """An earlier run's higher-numbered checkpoints would outlive the new run's in the keep-the-last-two rotation
    (the new checkpoint-1 deleted right after it was written) and be what --resume picks up: a fresh run stops
    with one line naming --resume and --overwrite-output-dir, and --overwrite-output-dir starts afresh."""
    out = tmp_path / "run"
    argv = common(material, out) + ["--train-queries", "12", "--val-queries", "0", "--batch-size", "4",
                                    "--eval-data", "heldout", "--rerank-k", "5"]
    assert train_main(argv + ["--max-steps", "3", "--eval-steps", "2"]) == 0
    earlier = sorted(os.listdir(out))
    assert earlier == ["best-model", "checkpoint-2", "checkpoint-3", "eval_results.jsonl", "train_log.jsonl"]

    capsys.readouterr()
    assert train_main(argv + ["--max-steps", "1", "--eval-steps", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--resume" in error and "--overwrite-output-dir" in error
    assert sorted(os.listdir(out)) == earlier  # nothing touched

    assert train_main(argv + ["--max-steps", "1", "--eval-steps", "1", "--overwrite-output-dir"]) == 0
    assert sorted(os.listdir(out)) == ["best-model", "checkpoint-1", "eval_results.jsonl", "train_log.jsonl"]
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [1]
    assert [r["step"] for r in read_jsonl(out / "eval_results.jsonl")] == [0, 1]
