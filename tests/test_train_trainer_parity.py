"""`python -m train` takes the same training steps as sentence-transformers' CrossEncoderTrainer with its own
ListMLELoss, the published model card's recipe: a tiny random BERT with dropout on, trained 6 steps of 4 queries
both ways by `python -m train.trainer_parity` (which runs `python -m train` through its argv entry and the trainer
as the card's script set it up), compared here from the two runs' own logs and saved weights.

Tolerances, and why:
- learning rate: equal, both from transformers' linear warmup schedule at the same step.
- step 1's loss and grad norm: 1e-6 relative. Same weights, batch, tokenised pairs and dropout masks; only the two
  losses' float32 arithmetic differs (sentence-transformers' logcumsumexp over flipped scores, listmle_kernels'
  own), by a few ulps (~1e-7).
- every step's loss and grad norm: 1e-5 relative. Later steps start from weights that carry the earlier rounding
  differences (measured here: losses 2.2e-7 apart at most, grad norms 2.9e-7). Other dropout masks alone move
  step 1's loss by 8% (the last test).
- final parameters: 1e-6 absolute, a few float32 ulps at magnitude 1, while Adam moves each parameter by up to
  about lr = 1e-3 a step (1.2e-7 measured). The attention key biases and the head's bias are compared through
  the model's scores instead: their gradient is zero in exact arithmetic (see train.trainer_parity.gradient_free),
  so Adam moves them on rounding noise, differently in each run (the head's biases end 6.6e-4 apart), and no
  ranking depends on them.
- final scores, less the head's bias: 1e-5 absolute on scores up to 0.3 (7.6e-7 measured).
"""

import train_fixtures  # noqa: F401  (first: puts the repository root on sys.path)

import json
import os

import pytest
import torch

pytest.importorskip("sentence_transformers", reason="the comparison trains with sentence-transformers' trainer")

from train.loop import main as train_main  # noqa: E402
from train.trainer_parity import gradient_free, main as parity_main  # noqa: E402
from train_fixtures import make_training_material, read_jsonl  # noqa: E402

STEPS = 6


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    return make_training_material(tmp_path_factory.mktemp("parity_material"))


def run_argv(material):
    """The `python -m train` flags of both runs but --output-dir (the tiny BERT with dropout 0.1; 35 training
    queries, 8 held out)."""
    return ["--model", material["bert"], "--train-data", material["rows"], "--max-length", "64", "--device", "cpu",
            "--seed", "5", "--train-queries", "40", "--val-queries", "0", "--batch-size", "4",
            "--max-steps", str(STEPS), "--lr", "1e-3", "--eval-data", "heldout", "--rerank-k", "5"]


@pytest.fixture(scope="module")
def parity(material, tmp_path_factory):
    out = tmp_path_factory.mktemp("parity")
    code = parity_main(["--output-dir", str(out)] + run_argv(material))
    return out, code


def weights(directory):
    from safetensors.torch import load_file
    return load_file(os.path.join(directory, "model.safetensors"))


def test_same_steps_and_final_parameters(parity):
    out, code = parity
    loop, trainer = read_jsonl(out / "loop" / "train_log.jsonl"), read_jsonl(out / "trainer" / "train_log.jsonl")
    assert [r["step"] for r in loop] == [r["step"] for r in trainer] == list(range(1, STEPS + 1))
    assert [r["lr"] for r in loop] == [r["lr"] for r in trainer]
    assert trainer[0]["lr"] == 0.0 and trainer[1]["lr"] == 1e-3  # ceil(0.1 * 6) = 1 warmup step
    for key in ("loss", "grad_norm"):
        assert loop[0][key] == pytest.approx(trainer[0][key], rel=1e-6, abs=0)
        assert [r[key] for r in loop] == pytest.approx([r[key] for r in trainer], rel=1e-5, abs=0)

    start, ours, theirs = (weights(out / "initial-model"), weights(out / "loop" / f"checkpoint-{STEPS}"),
                           weights(out / "trainer" / "final-model"))
    assert set(ours) == set(theirs) == set(start)
    free = sorted(name for name in start if gradient_free(name))
    assert free == ["bert.encoder.layer.0.attention.self.key.bias", "bert.encoder.layer.1.attention.self.key.bias",
                    "classifier.bias"]
    for name in set(start) - set(free):
        assert torch.allclose(ours[name], theirs[name], rtol=0, atol=1e-6), name
        assert not torch.equal(theirs[name], start[name]) or name.startswith("bert.pooler"), name  # trained

    result = json.loads((out / "parity.json").read_text())
    assert code == 0 and result["passed"] and result["same_training_lists"]
    assert result["parameters"]["max_abs_update"] > 1e-3  # the tolerance is far below what training moved


def test_final_models_score_alike(parity, material):
    """The gradient-free tensors apart from the comparison above do not change a ranking: both final models give
    every training pair the same score once the head's bias (one constant for all pairs) is taken off."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from train.data import load_msmarco_rows, to_listwise

    out, _ = parity
    records = to_listwise(load_msmarco_rows(material["rows"])[:40])
    queries = [r["query"] for r in records for _ in r["docs"]]
    docs = [d for r in records for d in r["docs"]]
    encoded = AutoTokenizer.from_pretrained(out / "initial-model")(queries, docs, padding=True, truncation=True,
                                                                    max_length=64, return_tensors="pt")
    scores = []
    for directory in (out / "loop" / f"checkpoint-{STEPS}", out / "trainer" / "final-model"):
        model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
        with torch.inference_mode():
            scores.append(model(**encoded).logits[:, 0] - model.classifier.bias)
    assert torch.allclose(scores[0], scores[1], rtol=0, atol=1e-5)


def test_other_dropout_masks_change_the_loss(parity, material, tmp_path):
    """The comparison can tell: the loop on the same start and batch, but its pairs in one forward (so other
    dropout masks, drawn for other shapes), takes a step 1 whose loss is far outside the tolerance."""
    out, _ = parity
    argv = run_argv(material) + ["--model", str(out / "initial-model"), "--batch-order", "trainer",
                                 "--max-steps", "1", "--output-dir", str(tmp_path / "one-forward")]
    assert train_main(argv) == 0
    one_forward = read_jsonl(tmp_path / "one-forward" / "train_log.jsonl")[0]["loss"]
    trainer = read_jsonl(out / "trainer" / "train_log.jsonl")[0]["loss"]
    assert abs(one_forward - trainer) / trainer > 1e-3


@pytest.mark.parametrize("argv, message", [
    (["--pairs-per-forward", "0"], "--pairs-per-forward must be at least 1"),
    (["--pairs-per-forward", "4", "--arch", "bi-encoder"], "--pairs-per-forward applies to --arch cross-encoder"),
    (["--batch-order", "sorted"], "--batch-order: invalid choice"),
])
def test_parity_flags_that_cannot_work(argv, message, capsys):
    with pytest.raises(SystemExit):
        train_main(argv)
    assert message in capsys.readouterr().err


def test_pairs_per_forward_is_refused_under_torchrun(material, tmp_path, monkeypatch, capsys):
    """DDP broadcasts buffers at every forward, so ranks with different numbers of forwards would wait forever."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = run_argv(material) + ["--pairs-per-forward", "4", "--output-dir", str(tmp_path / "out")]
    assert train_main(argv) == 2
    assert "--pairs-per-forward runs in one process only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
