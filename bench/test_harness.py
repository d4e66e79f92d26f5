"""Tests of the benchmark harness itself (not timings): `pytest bench/test_harness.py`.

Skipped by `--benchmark-only`; not collected by `pytest tests/` (see bench/conftest.py).
"""

import json
from collections import Counter

from types import SimpleNamespace

import pytest
import torch

from bench import check, report
from bench.__main__ import main
from bench.cases import Case, make_inputs, minimal_bytes
from bench.impls import ReferenceEager, reference_eager_loss
from bench.timing import balanced_orders


def test_reference_eager_matches_oracle():
    ok, message = check.self_check_reference(torch.device("cpu"))
    assert ok, message


def test_reference_eager_is_exact_for_very_negative_scores():
    # No eps inside the log: two equal scores give log 2 whatever their value.
    scores = torch.full((1, 2), -20.0)
    assert reference_eager_loss(scores, None, None).item() == pytest.approx(0.693147, abs=1e-6)


def test_padding_does_not_change_the_loss_and_gets_zero_gradient():
    case = Case(3, 6, direction="fwd+bwd", ragged=True)
    inputs = make_inputs(case, "cpu", seed=3)
    loss, grad = check.loss_and_grad(ReferenceEager().prepare(case, inputs), case)
    wider = torch.cat([inputs.scores.detach(), torch.full((3, 4), 50.0)], dim=1).requires_grad_(True)
    loss_wide = reference_eager_loss(wider, None, inputs.lengths)
    assert loss_wide.item() == pytest.approx(loss.item(), rel=1e-6)
    assert (grad[~inputs.valid_mask()] == 0).all()


def test_compare_flags_a_wrong_gradient():
    case = Case(2, 5, direction="fwd+bwd", ragged=False)
    inputs = make_inputs(case, "cpu", seed=0)
    loss, grad = check.reference_result(case, inputs)
    assert check.compare(case, (loss, grad), (loss, grad), inputs.valid_mask()).ok
    assert not check.compare(case, (loss, grad * 1.01), (loss, grad), inputs.valid_mask()).ok


def test_minimal_bytes_counts_inputs_and_gradient():
    case = Case(4, 8, direction="fwd+bwd", order="labels", dtype="bfloat16", ragged=True)
    assert minimal_bytes(case) == 4 * 8 * 2 + 4 * 8 * 4 + 4 * 8 + 4 * 8 * 2
    # Ragged rows: only the 20 real scores and labels are read; the gradient is written whole.
    assert minimal_bytes(case, torch.tensor([8, 4, 6, 2])) == 20 * 2 + 20 * 4 + 4 * 8 + 4 * 8 * 2


def test_cli_end_to_end_on_a_tiny_grid(tmp_path, capsys):
    status = main(["--device", "cpu", "--quick", "--B", "4", "--L", "8", "--sweep", "3x5",
                   "--directions", "fwd+bwd", "--weightings", "plistmle", "--dtypes", "float32",
                   "--padding", "ragged", "--impls", "listmle_kernels_torch,reference_eager,reference_oracle",
                   "--out", str(tmp_path)])
    assert status == 0
    (result_json,) = tmp_path.glob("*.json")
    data = json.loads(result_json.read_text())
    assert data["meta"]["device_type"] == "cpu" and data["meta"]["torch"] == torch.__version__
    statuses = {(r["case"], r["impl"]): r["status"] for r in data["results"]}
    assert all(status in ("ok", "skipped") for status in statuses.values()), statuses
    assert any(status == "ok" for status in statuses.values())
    sweep_case = "B3xL5/fwd+bwd/plistmle/input/float32/ragged"
    assert statuses[(sweep_case, "reference_oracle")] == "ok"  # checked against the vectorised reference too
    ours = next(r for r in data["results"] if (r["case"], r["impl"]) == (sweep_case, "listmle_kernels_torch"))
    assert ours["speedup_vs_reference_oracle"] > 0
    assert list(tmp_path.glob("*.csv")) and list(tmp_path.glob("*.png"))
    assert "GPU numbers" in capsys.readouterr().out


def _row(impl, B, L, **values):
    base = dict(Case(B, L).as_dict(), case=f"{B}x{L}", impl=impl, label=impl, status="ok")
    return {**base, **values}


@pytest.mark.parametrize("n", range(1, 8))
def test_balanced_orders_put_each_step_after_each_other_equally_often(n):
    orders = balanced_orders(n)
    assert all(sorted(order) == list(range(n)) for order in orders)
    assert len(set(Counter(order[0] for order in orders).values())) == 1
    follows = Counter((a, b) for order in orders for a, b in zip(order, order[1:]))
    assert len(follows) == n * (n - 1) and len(set(follows.values())) <= 1


def test_targets_report_the_worst_case_and_count_misses():
    from bench.report import PEAK_SLACK_BYTES, format_targets
    grad = lambda B, L: B * L * 4  # noqa: E731  float32
    rows = [
        # small: judged back to back (12x), not on do_bench's device-only time (200x)
        _row("listmle_kernels_triton", 16, 10, speedup_vs_reference_eager=200.0, wall_speedup_vs_reference_eager=12.0,
             peak_extra_bytes=grad(16, 10)),
        _row("listmle_kernels_triton", 4096, 4096, speedup_vs_reference_eager=8.5, pct_copy_bw=80.0,
             peak_extra_bytes=2 * grad(4096, 4096)),
        _row("listmle_kernels_triton", 65536, 512, speedup_vs_reference_eager=30.0, pct_copy_bw=70.0,
             peak_extra_bytes=grad(65536, 512) + PEAK_SLACK_BYTES),
        _row("reference_eager", 16, 10, ms=1.0),
    ]
    text = format_targets(rows, "cuda").splitlines()
    eager = next(line for line in text if "reference eager" in line)
    assert "MISSED 1/3" in eager and "worst 8.5 at 4096 x 4096" in eager
    copy = next(line for line in text if "copy bandwidth" in line)
    assert "MISSED 1/2" in copy and "worst 70 at 65536 x 512" in copy
    memory = next(line for line in text if "peak extra memory" in line)
    assert "MISSED 1/3" in memory and "4096 x 4096" in memory
    assert any(line.strip().startswith("not measured") and "torch.compile" in line for line in text)
    cpu = format_targets([_row("listmle_kernels_torch", 256, 100, speedup_vs_reference_eager=3.4)], "cpu")
    assert "met" in cpu and "worst 3.4 at 256 x 100" in cpu


def test_targets_say_how_many_cases_they_cover_and_where_the_kernel_failed():
    from bench.report import format_targets
    rows = [_row("listmle_kernels_triton", 1024, 1024, speedup_vs_reference_eager=15.0),
            _row("listmle_kernels_triton", 4096, 1024),  # the baseline did not run here: no speedup
            dict(_row("listmle_kernels_triton", 4096, 4096), status="mismatch")]
    eager = next(line for line in format_targets(rows, "cuda").splitlines() if "reference eager" in line)
    assert "met at 1/3" in eager and "our kernel failed at 1" in eager  # never a plain "met" here


def test_cases_run_in_priority_order():
    from bench.cases import by_priority
    cases = [Case(64, 32, direction="fwd"), Case(4096, 1024), Case(16384, 1024), Case(16, 10, group="modes"),
             Case(16384, 1024, dtype="bfloat16", group="modes"), Case(64, 100, direction="fwd", group="modes")]
    assert [(c.B, c.L, c.direction, c.dtype) for c in by_priority(cases)] == [
        (16, 10, "fwd+bwd", "float32"), (64, 100, "fwd", "float32"),   # the recipe's shapes
        (16384, 1024, "fwd+bwd", "float32"),                           # 2^24, float32: the bandwidth target
        (4096, 1024, "fwd+bwd", "float32"),                            # the rest of the fwd+bwd grid
        (64, 32, "fwd", "float32"), (16384, 1024, "fwd+bwd", "bfloat16")]


def test_allrank_listmle_matches_the_reference():
    from bench.impls import AllRankListMLE
    impl = AllRankListMLE()
    available, why = impl.availability(torch.device("cpu"))
    if not available:
        pytest.skip(why)  # `make install` installs it
    case = Case(5, 12, order="labels", weighting="listmle", ragged=True)
    inputs = make_inputs(case, "cpu", seed=3)
    want = check.reference_result(case, inputs)
    got = check.loss_and_grad(impl.prepare(case, inputs), case)
    assert check.compare(case, got, want, inputs.valid_mask()).ok


@pytest.mark.parametrize("zero_based_default", [False, True])
def test_sentence_transformers_plistmle_matches_the_reference(zero_based_default, monkeypatch):
    """Also where the installed release's default weights use 0-based ranks (before 6.2; the GPU machine's 6.0.1):
    the bench gives it the kernel's weights, so its p-ListMLE cases are checked and timed, not reported mismatched."""
    losses = pytest.importorskip("sentence_transformers.cross_encoder.losses")
    from bench.impls import SentenceTransformersLoss
    from cases import pretend_zero_based_plistmle_default  # tests/cases.py
    if zero_based_default:
        pretend_zero_based_plistmle_default(monkeypatch, losses.PListMLELambdaWeight)
    case = Case(5, 12, order="labels", weighting="plistmle", ragged=True)
    inputs = make_inputs(case, "cpu", seed=4)
    got = check.loss_and_grad(SentenceTransformersLoss().prepare(case, inputs), case)
    assert check.compare(case, got, check.reference_result(case, inputs), inputs.valid_mask()).ok


def test_training_step_runs_and_skips_what_does_not_accept_its_case(monkeypatch):
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertForSequenceClassification

    from bench import training_step
    from bench.impls import AllRankListMLE, ListmleKernels

    def tiny_bert(device):  # the step's shapes on a 1-layer BERT: seconds on a CPU, nothing downloaded
        config = BertConfig(vocab_size=30522, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                            intermediate_size=16, num_labels=1)
        torch.manual_seed(0)
        return BertForSequenceClassification(config).to(device).train()

    monkeypatch.setattr(training_step, "build_model", tiny_bert)
    monkeypatch.setitem(training_step.SEQ_LEN, "cpu", 8)
    grid_only = ReferenceEager()
    grid_only.label, grid_only.groups = "grid-only", ("grid",)  # as ref-compile without --compile-sweep
    impls = [ListmleKernels("torch", validate=False), grid_only, AllRankListMLE()]
    device = torch.device("cpu")
    result = training_step.loss_share(impls, {i.name: i.availability(device) for i in impls}, device, quick=False)

    assert result["status"] == "ok"
    statuses = {label: r["status"] for label, r in result["impls"].items()}
    assert statuses["lk-torch"] == "ok" and result["impls"]["lk-torch"]["step_ms"] > 0
    assert statuses["grid-only"].startswith("skipped: only run on the grid cases")
    # allRank's listMLE needs labels, which the step's input-order case has none of
    assert statuses["allrank"].startswith("skipped"), statuses["allrank"]
    assert "grid-only    skipped" in training_step.format_loss_share(result)


def test_back_to_back_timer_reports_per_call_times_of_whole_samples(monkeypatch):
    from bench import timing
    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def step():  # 0.3 ms a call on a fake clock: exact per-call figures, whatever the sample size
        clock[0] += 3e-4

    median, q20, q80 = timing.time_back_to_back(step, torch.device("cpu"), min_seconds=0.05, sample_ms=2.0)
    assert (median, q20, q80) == pytest.approx((0.3, 0.3, 0.3))


def test_wall_clock_speedups_reach_the_table_and_the_targets():
    from bench.report import add_speedups, format_table, format_targets
    rows = [_row("listmle_kernels_triton", 16, 10, ms=0.01, wall_ms=0.05),
            _row("reference_eager", 16, 10, ms=0.2, wall_ms=0.4),
            _row("listmle_kernels_triton", 4096, 4096, ms=1.0),  # large: no wall-clock time
            _row("reference_eager", 4096, 4096, ms=20.0)]
    add_speedups(rows, "cuda")
    assert rows[0]["speedup_vs_reference_eager"] == pytest.approx(20.0)
    assert rows[0]["wall_speedup_vs_reference_eager"] == pytest.approx(8.0)
    assert "wall_speedup_vs_reference_eager" not in rows[2]
    header, _, small, large = format_table(rows, "cuda").splitlines()
    assert "wall ms" in header and "0.0500" in small and " 8.0 " in small
    # The small shape is judged back to back (8x, missed), the large one on do_bench's times (20x, met).
    eager = next(line for line in format_targets(rows, "cuda").splitlines() if "reference eager" in line)
    assert "MISSED 1/2" in eager and "worst 8 at 16 x 10" in eager


def test_cuda_extras_time_small_shapes_back_to_back(monkeypatch):
    """The CUDA-only wiring, with the CUDA timers faked: small cases get a wall-clock time, and a graph
    replay where capturable; large cases neither."""
    from bench import runner, timing
    monkeypatch.setattr(timing, "peak_extra_bytes_cuda", lambda step: 123)
    monkeypatch.setattr(timing, "time_back_to_back", lambda step, device, min_seconds: (0.5, 0.4, 0.6))
    monkeypatch.setattr(timing, "time_cuda_graph", lambda step, rep_ms: (0.1, 0.1, 0.1))
    rows = {}
    for name, (B, L), validate in [("listmle_kernels_triton", (16, 10), False), ("listmle_kernels_torch", (16, 10), False),
                                   ("listmle_kernels_triton", (4096, 4096), False), ("checked", (16, 10), True)]:
        row = rows[name, B] = {}
        impl = SimpleNamespace(name=name, validate=validate)
        runner.measure_cuda_extras(row, Case(B, L), impl, step=lambda: None, quick=False)
    assert rows["listmle_kernels_triton", 16] == dict(peak_extra_bytes=123, wall_ms=0.5, wall_ms_q20=0.4,
                                                      wall_ms_q80=0.6, graph_ms=0.1, graph_ms_q20=0.1,
                                                      graph_ms_q80=0.1)
    torch_path = rows["listmle_kernels_torch", 16]  # syncs with the host: not capturable, still timed
    assert "graph_ms" not in torch_path and torch_path["wall_ms"] == 0.5
    assert rows["listmle_kernels_triton", 4096] == dict(peak_extra_bytes=123)
    assert "graph_ms" not in rows["checked", 16]  # validate=True syncs with the host: not captured


def test_copy_bandwidth_is_matched_to_the_traffic_on_cuda(monkeypatch):
    """The roofline's copy moves about as many bytes as the case: one measurement per power of two."""
    from bench import timing
    measured_buffers = []

    def fake_copy(device, nbytes):
        measured_buffers.append(nbytes)
        return {"bytes_per_s": float(nbytes)}

    monkeypatch.setattr(timing, "copy_bandwidth", fake_copy)
    run_copy = {"bytes_per_s": 3e12, "buffer_bytes": 512 << 20}
    for_cuda = timing.copy_bandwidth_by_size(torch.device("cuda"), run_copy)
    assert for_cuda(128 << 20) == 64 << 20          # 128 MB of traffic: a 64 MB buffer copied
    assert for_cuda(100 << 20) == 64 << 20          # rounded up to a power of two, measured once
    assert for_cuda(1000) == 1 << 20                # at least 1 MiB
    assert for_cuda(4 << 30) == 3e12                # at most the run's own 512 MB copy
    assert measured_buffers == [64 << 20, 1 << 20]
    assert timing.copy_bandwidth_by_size(torch.device("cpu"), run_copy)(128 << 20) == 3e12


def test_mode_flags_accept_only_known_values(capsys):
    from bench.__main__ import parse_args
    assert parse_args(["--dtypes", "bfloat16", "--directions", "fwd+bwd"]).dtypes == ("bfloat16",)
    for flag, value in [("--dtypes", "fp16"), ("--directions", "forward"), ("--orders", "label"),
                        ("--weightings", "ndcg")]:
        with pytest.raises(SystemExit):
            parse_args([flag, value])
        assert "choose from" in capsys.readouterr().err


def test_run_metadata_names_what_was_uncommitted(monkeypatch):
    """A dirty tree's result file says which paths differed from the commit it names, not only that some did."""
    answers = {("rev-parse", "HEAD"): "abc123", ("status", "--porcelain"): " M listmle_kernels/ops.py\n?? notes.txt"}
    monkeypatch.setattr(report, "_git", lambda *args: answers[args])
    monkeypatch.delenv("LISTMLE_GIT_COMMIT", raising=False)
    meta = report.run_metadata(torch.device("cpu"), {})
    assert meta["git_commit"] == "abc123" and meta["git_dirty"] is True
    assert meta["git_uncommitted"] == [" M listmle_kernels/ops.py", "?? notes.txt"]
    answers[("status", "--porcelain")] = "\n".join(f"?? f{i}" for i in range(25))
    assert report.run_metadata(torch.device("cpu"), {})["git_uncommitted"][-1] == "... 5 more"
    answers[("status", "--porcelain")] = ""
    meta = report.run_metadata(torch.device("cpu"), {})
    assert meta["git_dirty"] is False and meta["git_uncommitted"] == []


def test_a_disagreeing_implementation_is_reported_and_never_timed():
    """run_case checks before it times: an implementation whose loss is 1% off keeps status "mismatch" and gets no
    time or speedup, while the agreeing one is timed; times become bandwidth in bytes per second."""
    import dataclasses

    from bench.runner import run_case

    class OnePercentOff(ReferenceEager):
        name, label = "one_percent_off", "off"

        def prepare(self, case, inputs):
            prepared = super().prepare(case, inputs)
            return dataclasses.replace(prepared, loss_fn=lambda: prepared.loss_fn() * 1.01)

    impls = [ReferenceEager(), OnePercentOff()]
    rows = run_case(Case(8, 16), impls, {impl.name: (True, "") for impl in impls}, torch.device("cpu"), seed=0,
                    quick=True, copy_bandwidth_for=lambda nbytes: 2.0 * nbytes / 1e-3, log=lambda *args: None)
    good, bad = rows
    assert bad["status"] == "mismatch" and "ms" not in bad and "loss" in bad["note"]
    assert good["status"] == "ok" and good["ms"] > 0
    assert good["bytes_per_s"] == pytest.approx(good["min_bytes"] / (good["ms"] * 1e-3))
    # the copy moved 2x min_bytes per ms: pct_copy_bw is min_bytes / ms over it
    assert good["pct_copy_bw"] == pytest.approx(100 * good["min_bytes"] / good["ms"] / (2.0 * good["min_bytes"]))


def test_target_boundaries():
    """A speedup exactly at the bound meets it; B*L = 2^16 exactly is still a small shape (judged back to back)."""
    from bench.report import format_targets
    cpu = format_targets([_row("listmle_kernels_torch", 256, 100, speedup_vs_reference_eager=3.0)], "cpu")
    assert "met" in cpu and "MISSED" not in cpu
    at_limit = [_row("listmle_kernels_triton", 64, 1024, speedup_vs_reference_eager=20.0,
                     wall_speedup_vs_reference_eager=8.0)]
    eager = next(line for line in format_targets(at_limit, "cuda").splitlines() if "reference eager" in line)
    assert "MISSED 1/1" in eager and "worst 8" in eager


def test_autograd_floor_step_is_the_gradient_of_a_sum():
    from bench import runner, timing
    scores = torch.randn(3, 4)
    assert timing.autograd_floor_step(scores, "fwd")() == scores.sum()
    (grad,) = timing.autograd_floor_step(scores, "fwd+bwd")()
    assert torch.equal(grad, torch.ones(3, 4)) and not scores.requires_grad  # the case's scores untouched
    assert runner.measure_autograd_floor(Case(3, 4), scores, torch.device("cpu"), quick=True) > 0


def test_misses_beyond_any_autograd_loss_are_counted():
    """Back to back at small shapes: the baseline's time over the autograd floor's bounds every speedup.
    Eager 0.9 ms over a floor of 0.3 ms: 3x at most, so a 10x miss there is beyond reach; over 0.05: 18x, not."""
    from bench.report import format_table, format_targets, speedup_ceiling
    rows = [_row("listmle_kernels_triton", 16, 10, wall_ms=0.45, wall_speedup_vs_reference_eager=2.0,
                 floor_wall_ms=0.3),
            _row("listmle_kernels_triton", 64, 100, wall_ms=0.3, wall_speedup_vs_reference_eager=3.0,
                 floor_wall_ms=0.05),
            _row("listmle_kernels_triton", 4096, 4096, speedup_vs_reference_eager=8.0)]  # large: no floor
    assert speedup_ceiling("reference_eager")(rows[0]) == pytest.approx(3.0)
    assert speedup_ceiling("reference_eager")(rows[2]) is None
    text = format_targets(rows, "cuda").splitlines()
    eager = text.index(next(line for line in text if "reference eager" in line))
    assert "MISSED 3/3" in text[eager]
    assert "1 of the 2 misses at small shapes are beyond any autograd loss" in text[eager + 1]
    assert "3-18x" in text[eager + 1]
    header, _, small, *_ = format_table(rows, "cuda").splitlines()
    assert "floor ms" in header and "0.3000" in small
    # no floor measured: no such line
    no_floor = format_targets([rows[2]], "cuda").splitlines()
    assert not any("autograd loss" in line for line in no_floor)
