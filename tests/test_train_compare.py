"""`python -m train.compare` and `--loss-backend reference` on a tiny random BERT and data made here: the fused run
(the Triton kernel, interpreted on CPU) and the reference run train identically, the reference run computes every
loss with the oracle and the fused run never does, the second run is what it would be alone (no state leaks from
the first), the report has its keys, and the tolerance check fails when the losses differ."""

import train_fixtures  # noqa: F401  (first: puts the repository root on sys.path)

import json
import random
from types import SimpleNamespace

import pytest
import torch

import reference
import train.loop
import train.losses
from listmle_kernels import listmle_loss
from train.compare import main as compare_main
from train.comparison import loss_check, step_differences, summarise
from train.config import parse_args
from train.losses import ranking_loss

from train_fixtures import make_training_material, read_jsonl, training_args

# 3 steps of 4 queries; evaluations (validation loss of 4 queries + held-out reranking) at steps 0 and 3.
RUN_FLAGS = ["--train-queries", "36", "--val-queries", "4", "--batch-size", "4", "--max-steps", "3",
             "--eval-steps", "3", "--lr", "1e-3", "--eval-data", "heldout", "--loss", "plistmle", "--sort-by-labels",
             "--ties", "stable"]
# With a GPU the suite runs the kernel compiled, which needs CUDA tensors (no interpreter); float32 there too.
ON_DEVICE = ["--device", "cuda", "--bf16", "off"] if torch.cuda.is_available() else []


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    return make_training_material(tmp_path_factory.mktemp("compare_material"))


def counting(function, name, calls):
    def wrapper(*args, **kwargs):
        calls[name] += 1
        return function(*args, **kwargs)
    return wrapper


def without_timing(log):
    return [{k: v for k, v in r.items() if k != "queries_per_s"} for r in log]


def test_fused_and_reference_runs_train_alike(material, tmp_path, monkeypatch, capsys):
    calls = {"reference": 0, "listmle_loss": 0}
    monkeypatch.setattr(reference, "listmle_reference", counting(reference.listmle_reference, "reference", calls))
    monkeypatch.setattr(train.losses, "listmle_loss", counting(listmle_loss, "listmle_loss", calls))
    calls_by_run, real_train = {}, train.loop.train

    def train_counting_calls(args):
        before = dict(calls)
        code = real_train(args)
        calls_by_run[args.loss_backend] = {k: calls[k] - before[k] for k in calls}
        return code

    monkeypatch.setattr(train.loop, "train", train_counting_calls)
    out = tmp_path / "compare"
    random.seed(123)
    torch.manual_seed(123)
    state_before = (random.getstate(), torch.get_rng_state())
    # training_args' --output-dir is the comparison's; --loss-backend triton: the kernel (interpreted on CPU)
    assert compare_main(training_args(material, out) + RUN_FLAGS + ON_DEVICE + ["--loss-backend", "triton",
                                                                                "--timing-skip-steps", "1"]) == 0

    # 3 training steps + 2 validation batches each; the reference oracle only in the reference run
    assert calls_by_run == {"triton": {"reference": 0, "listmle_loss": 5},
                            "reference": {"reference": 5, "listmle_loss": 0}}
    assert random.getstate() == state_before[0]  # the caller's RNG states are left alone
    assert torch.equal(torch.get_rng_state(), state_before[1])

    comparison = json.loads((out / "comparison.json").read_text())
    assert {"command", "metadata", "batch_size", "runs", "loss", "eval", "speed", "per_step"} <= set(comparison)
    assert {"device", "git_commit", "torch", "triton", "transformers"} <= set(comparison["metadata"])
    assert comparison["runs"]["fused"] == {"loss_backend": "triton", "package_backend": "triton",
                                           "output_dir": str(out / "fused")}
    loss = comparison["loss"]
    assert loss["passed"] and loss["failures"] == [] and loss["steps"] == 3
    assert loss["max_rel_diff"] < 1e-5  # fp32 on CPU: only the loss's rounding differs
    assert [r["step"] for r in comparison["per_step"]] == [1, 2, 3]
    assert {"loss_fused", "loss_reference", "loss_abs_diff", "loss_rel_diff", "grad_norm_rel_diff"} <= set(
        comparison["per_step"][0])
    fused_log = read_jsonl(out / "fused" / "train_log.jsonl")
    reference_log = read_jsonl(out / "reference" / "train_log.jsonl")
    assert [r["loss_fused"] for r in comparison["per_step"]] == [r["loss"] for r in fused_log]
    assert [r["loss_reference"] for r in comparison["per_step"]] == [r["loss"] for r in reference_log]

    for which, step in (("first", 0), ("last", 3)):
        fused, ref = comparison["eval"][which]["fused"], comparison["eval"][which]["reference"]
        assert fused["step"] == ref["step"] == step and set(fused) == set(ref)
        assert "HeldOut_R100_mean_ndcg@10" in fused and fused["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)
    assert comparison["eval"]["first"]["fused"]["HeldOut_R100_mean_ndcg@10"] == \
        comparison["eval"]["first"]["reference"]["HeldOut_R100_mean_ndcg@10"]  # same initial model
    for name in ("fused", "reference"):
        speed = comparison["speed"][name]
        assert speed["timed_steps"] == [2, 3] and speed["median_queries_per_s"] > 0
        assert speed["median_steps_per_s"] == pytest.approx(speed["median_queries_per_s"] / 4)
    assert comparison["speed"]["skipped_warmup_steps"] == 1 and comparison["speed"]["fused_over_reference"] > 0
    # the loss alone at the first batch's shapes (4 queries of the made-up data), and its share of a step
    alone = comparison["speed"]["reference"]["loss_alone"]
    assert alone["shape"][0] == 4 and alone["ms"] > 0 and 0 < alone["share_of_median_step"] < 1
    if torch.cuda.is_available():  # the kernel compiled
        assert comparison["speed"]["fused"]["loss_alone"]["ms"] > 0
    else:  # the kernel interpreted: never timed as performance
        assert "interpreted" in comparison["speed"]["fused"]["loss_alone"]["not_timed"]

    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "comparison.md").read_text()
    assert "**PASS**" in markdown and "## Evaluation" in markdown and "## Speed" in markdown
    assert "loss share of a step" in markdown and f"{100 * alone['share_of_median_step']:.3g}%" in markdown
    assert markdown in capsys.readouterr().out

    # the second run is exactly what it would have been on its own: nothing leaked from the first
    alone = tmp_path / "reference-alone"
    assert train.loop.main(training_args(material, alone) + RUN_FLAGS + ON_DEVICE + ["--loss-backend", "reference"]) == 0
    pairs = [(without_timing(read_jsonl(alone / "train_log.jsonl")), without_timing(reference_log)),
             (read_jsonl(alone / "eval_results.jsonl"), read_jsonl(out / "reference" / "eval_results.jsonl"))]
    for got, expected in pairs:
        if torch.cuda.is_available():  # CUDA backward kernels add with atomics: the last bits may differ
            expected = [{k: pytest.approx(v, rel=1e-4) if isinstance(v, float) else v for k, v in record.items()}
                        for record in expected]
        assert got == expected


@pytest.mark.parametrize("padding", ["lengths", "mask"])
@pytest.mark.parametrize("loss", ["listmle", "plistmle"])
@pytest.mark.parametrize("respect_input_order", [True, False])
def test_reference_backend_computes_the_package_loss(padding, loss, respect_input_order):
    """Loss and gradient of `--loss-backend reference` equal the package's, with lengths (cross-encoder) and with a
    mask (bi-encoder), for both losses and both target orders."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 7, generator=generator)
    labels = torch.randint(0, 3, (5, 7), generator=generator).float()
    lengths = torch.tensor([7, 3, 1, 0, 5])
    mask = torch.arange(7)[None, :] < lengths[:, None]
    pad = {"lengths": lengths} if padding == "lengths" else {"mask": mask}
    results = []
    for backend in ("torch", "reference"):
        leaf = scores.clone().requires_grad_()
        args = SimpleNamespace(loss=loss, loss_backend=backend, respect_input_order=respect_input_order, ties="stable")
        value = ranking_loss(leaf, labels, pad, args)
        value.backward()
        results.append((value.detach(), leaf.grad))
    (package_loss, package_grad), (reference_loss, reference_grad) = results
    assert reference_loss == pytest.approx(package_loss.item(), rel=1e-6)
    torch.testing.assert_close(reference_grad, package_grad, rtol=1e-5, atol=1e-7)


def test_reference_backend_refuses_random_ties(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--loss-backend", "reference", "--sort-by-labels", "--ties", "random"])
    assert "stable ties only" in capsys.readouterr().err
    parse_args(["--loss-backend", "reference", "--ties", "random"])  # input order: ties play no part


def test_compare_refuses_a_reference_fused_run(tmp_path):
    with pytest.raises(SystemExit):
        compare_main(["--output-dir", str(tmp_path), "--loss-backend", "reference"])


def test_loss_check_tolerances():
    def row(step, loss_rel_diff, grad_norm_rel_diff=0.0):
        return {"step": step, "loss_fused": 1.0, "loss_reference": 1.0, "loss_rel_diff": loss_rel_diff,
                "grad_norm_rel_diff": grad_norm_rel_diff}

    assert loss_check([row(1, 1e-7), row(2, 5e-3)], loss_rtol=1e-2, first_step_rtol=1e-4) == []
    failures = loss_check([row(1, 1e-7, 2e-4), row(2, 2e-2)], loss_rtol=1e-2, first_step_rtol=1e-4)
    assert len(failures) == 2 and "step 2" in failures[0] and "grad_norm" in failures[1]


def test_non_finite_losses_never_pass():
    """A NaN compares False with any tolerance: a run that went NaN (or inf) must fail, not pass."""
    nan, inf = float("nan"), float("inf")
    logs = [{"step": 1, "loss": 2.0, "grad_norm": 1.0}, {"step": 2, "loss": nan, "grad_norm": nan},
            {"step": 3, "loss": inf, "grad_norm": 1.0}]
    reference = [{"step": s, "loss": 2.0, "grad_norm": 1.0} for s in (1, 2, 3)]
    steps = step_differences(logs, reference)
    assert [r["loss_rel_diff"] for r in steps] == [0.0, inf, inf]
    failures = loss_check(steps, loss_rtol=1e-2, first_step_rtol=1e-4)
    assert [f.split(":")[0] for f in failures] == ["step 2", "step 3"]
    both_nan = step_differences([logs[1]], [dict(logs[1])])
    assert loss_check(both_nan, loss_rtol=1e-2, first_step_rtol=1e-4)  # NaN in both runs is no agreement


def test_loss_alone_is_not_timed_where_its_shape_or_speed_means_nothing():
    from train.compare import time_loss_alone
    cpu = torch.device("cpu")
    assert "in-batch" in time_loss_alone(SimpleNamespace(arch="bi-encoder"), cpu, "torch")["not_timed"]
    if not torch.cuda.is_available():  # conftest runs Triton interpreted here
        assert "interpreted" in time_loss_alone(SimpleNamespace(arch="cross-encoder"), cpu, "triton")["not_timed"]


def test_summary_of_hand_written_runs(tmp_path):
    """summarise on two made-up run directories: the speed ratio is fused over reference, medians skip the warm-up
    steps, and the largest loss difference is found with its step."""
    runs = {"fused": (tmp_path / "fused", [1.0, 0.9, 0.8, 0.7], [5.0, 20.0, 20.0, 22.0]),
            "reference": (tmp_path / "reference", [1.0, 0.9, 0.8 * (1 + 1e-3), 0.7], [4.0, 10.0, 10.0, 11.0])}
    for directory, losses, speeds in runs.values():
        directory.mkdir()
        (directory / "train_log.jsonl").write_text("".join(
            json.dumps({"step": i + 1, "loss": loss, "grad_norm": 1.0, "queries_per_s": speed}) + "\n"
            for i, (loss, speed) in enumerate(zip(losses, speeds))))
        (directory / "eval_results.jsonl").write_text(json.dumps({"step": 0, "score": 0.5}) + "\n")
    summary = summarise({name: str(directory) for name, (directory, _, _) in runs.items()}, loss_rtol=1e-2,
                        first_step_rtol=1e-4, timing_skip_steps=1, batch_size=4)
    assert summary["speed"]["fused"]["median_queries_per_s"] == 20.0  # steps 2-4, step 1 skipped
    assert summary["speed"]["reference"]["median_queries_per_s"] == 10.0
    assert summary["speed"]["fused_over_reference"] == pytest.approx(2.0)
    assert summary["loss"]["step_of_max_rel_diff"] == 3 and summary["loss"]["passed"]
