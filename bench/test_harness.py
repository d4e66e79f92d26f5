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
from train import provenance


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
    # Padding must get exactly zero gradient, whatever the tolerance: 1e-30 there is far below it
    ragged = Case(4, 8, direction="fwd+bwd", ragged=True)
    inputs = make_inputs(ragged, "cpu", seed=0)
    valid = inputs.valid_mask()
    loss, grad = check.reference_result(ragged, inputs)
    assert (~valid).any() and check.compare(ragged, (loss, grad), (loss, grad), valid).ok
    leaked = check.compare(ragged, (loss, grad.masked_fill(~valid, 1e-30)), (loss, grad), valid)
    assert not leaked.ok and "nonzero gradient on padding" in leaked.message


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
    assert list(tmp_path.glob("*.csv"))
    assert sorted(p.name[len(result_json.stem):] for p in tmp_path.glob("*.png")) == [
        "-bandwidth.png", "-speedup.png", "-time-vs-L.png"]
    assert "GPU numbers" in capsys.readouterr().out


def _row(impl, B, L, **values):
    label = {"listmle_kernels_triton": "lk-triton", "listmle_kernels_torch": "lk-torch",
             "reference_eager": "ref-eager"}.get(impl, impl)
    base = dict(Case(B, L).as_dict(), case=f"{B}x{L}", impl=impl, label=label, status="ok")
    return {**base, **values}


def _verdict_lines(text: str, target_words: str) -> list[str]:
    """The indented lines under the first target whose title contains `target_words`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  ") and not line.startswith("    ")
                 and target_words in line)
    verdict = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        verdict.append(line[4:])
    return verdict


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
    eager = _verdict_lines(format_targets(rows, "cuda"), "eager vectorised reference")
    assert eager[0] == "MISSED in 1 of 3 measured cases" and eager[1].startswith("worst: 8.5x at 4096 x 4096, fwd+bwd")
    copy = _verdict_lines(format_targets(rows, "cuda"), "copy bandwidth")
    assert copy[0] == "MISSED in 1 of 2 measured cases" and copy[1].startswith("worst: 70% at 65536 x 512")
    memory = _verdict_lines(format_targets(rows, "cuda"), "peak extra memory")
    assert memory[0] == "MISSED in 1 of 3 measured cases" and "MiB over that at 4096 x 4096" in memory[1]
    compiled = _verdict_lines(format_targets(rows, "cuda"), "torch.compile")
    assert compiled == ["not measured in any of its 3 cases (3 of its 3 cases not measured: 3 without a baseline time)"]
    cpu = _verdict_lines(format_targets([_row("listmle_kernels_torch", 256, 100, speedup_vs_reference_eager=3.4)],
                                        "cpu"), "eager vectorised reference")
    assert cpu == ["met in the 1 measured case", "worst: 3.4x at 256 x 100, fwd+bwd, listmle, input order, float32, "
                   "ragged rows"]


def test_targets_say_how_many_cases_they_cover_and_where_the_kernel_failed():
    from bench.report import format_targets
    rows = [_row("listmle_kernels_triton", 1024, 1024, speedup_vs_reference_eager=15.0),
            _row("listmle_kernels_triton", 4096, 1024),  # the baseline did not run here: no speedup
            dict(_row("listmle_kernels_triton", 4096, 4096), status="mismatch")]
    eager = _verdict_lines(format_targets(rows, "cuda"), "eager vectorised reference")
    assert eager[0] == ("met in the 1 measured case (2 of its 3 cases not measured: 1 without a baseline time, "
                        "1 where our kernel failed or disagreed)")


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
    """Also where the installed release's default weights use 0-based ranks (before 6.2, e.g. 6.0.1):
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
    top, bottom, _, mode, small, large, *legend = format_table(rows, "cuda").splitlines()
    assert top.split() == ["lk-triton", "wall", "graph", "floor", "%copy", "peak", "ref-eager"]
    assert bottom.split() == ["B", "L", "ms", "ms", "ms", "ms", "BW", "MB", "x"]
    assert mode == "-- fwd+bwd, listmle, input order, float32, ragged rows"
    # The small shape's speed-up is the back-to-back one (8x, starred), the large one on do_bench's times (20x).
    assert small.split() == ["16", "10", "0.0100", "0.0500", "-", "-", "-", "-", "8.0*"]
    assert large.split() == ["4096", "4096", "1.0000", "-", "-", "-", "-", "-", "20.0"]
    assert any("x* = speed-up on the wall times" in line for line in [" ".join(legend)])
    eager = _verdict_lines(format_targets(rows, "cuda"), "eager vectorised reference")
    assert eager[:2] == ["MISSED in 1 of 2 measured cases",
                         "worst: 8x at 16 x 10, fwd+bwd, listmle, input order, float32, ragged rows"]


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
    """The copy that %copy BW compares with moves about as many bytes as the case: one measurement per power of two."""
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
    monkeypatch.setattr(provenance, "git", lambda *args: answers[args])
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
    assert _verdict_lines(cpu, "eager vectorised reference")[0] == "met in the 1 measured case"
    at_limit = [_row("listmle_kernels_triton", 64, 1024, speedup_vs_reference_eager=20.0,
                     wall_speedup_vs_reference_eager=8.0)]
    eager = _verdict_lines(format_targets(at_limit, "cuda"), "eager vectorised reference")
    assert eager[0] == "MISSED in 1 of 1 measured cases" and eager[1].startswith("worst: 8x at 64 x 1024")


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
    eager = _verdict_lines(format_targets(rows, "cuda"), "eager vectorised reference")
    assert eager[0] == "MISSED in 3 of 3 measured cases"
    assert eager[2] == "1 of the 2 misses at B*L <= 2^16 are beyond any autograd-based loss:"
    assert "time is 3-18x the autograd floor's" in eager[3]
    top, bottom, _, _, small, *_ = format_table(rows, "cuda").splitlines()
    assert top.split()[3] == "floor" and small.split()[5] == "0.3000"
    # no floor measured: no such line
    assert not any("autograd" in line for line in _verdict_lines(format_targets([rows[2]], "cuda"), "eager"))


# --------------------------------------------------------------------------------------------------
# What a user sees: the table, the target lines, the output folder, the plots
# --------------------------------------------------------------------------------------------------

LABELS = {"listmle_kernels_triton": "lk-triton", "listmle_kernels_torch": "lk-torch", "reference_eager": "ref-eager",
          "reference_oracle": "oracle", "reference_compiled": "ref-compile", "sentence_transformers": "st",
          "allrank": "allrank"}


def _run_rows(device_type: str) -> list[dict]:
    """A run with every baseline timed and the widest values a full CUDA grid produces (B = 65536,
    L = 8192, thousands of ms, thousand-fold speed-ups, 512 MB of memory), a baseline skipped with a
    long note and one that disagreed, in the grid and the sweep; speed-ups from report.add_speedups."""
    kernel = report.KERNEL_BY_DEVICE[device_type]
    slower = {"reference_eager": 8.0, "reference_oracle": 3202.8, "reference_compiled": 0.45,
              "sentence_transformers": 371.2, "allrank": 1.3}
    rows = []
    for B, L, direction, group in [(16, 8, "fwd+bwd", "grid"), (16, 1024, "fwd+bwd", "grid"),
                                   (4096, 8, "fwd+bwd", "grid"), (4096, 1024, "fwd+bwd", "grid"),
                                   (65536, 1024, "fwd+bwd", "grid"), (16384, 8192, "fwd+bwd", "grid"),
                                   (4096, 1024, "fwd", "grid"), (64, 100, "fwd+bwd", "modes")]:
        case = Case(B, L, direction=direction, group=group, order="labels" if group == "modes" else "input")
        small = B * L <= 1 << 16
        for impl in [kernel, *slower]:
            factor = slower.get(impl, 1.0)
            row = dict(case.as_dict(), case=case.name(), impl=impl, label=LABELS[impl], status="ok",
                       ms=1234.5678 * factor / 1000, pct_copy_bw=99.94, peak_extra_bytes=B * L * 4 + (1 << 10))
            if device_type == "cuda" and small:
                row.update(wall_ms=row["ms"] * 1.5, graph_ms=0.0044, floor_wall_ms=0.1)
            rows.append(row)
        if B * L > 1 << 18:
            rows[-2].update(status="skipped", note="B*L > 262144: per-pair Python lists dominate " + "x" * 150)
            del rows[-2]["ms"]
    rows[-1].update(status="mismatch", note="grad max rel err 0.0117")
    report.add_speedups(rows, device_type)
    return rows


META = {"device_type": "cuda", "device": "NVIDIA Test GPU", "git_commit": "0123456789abcdef",
        "timestamp_utc": "2026-01-01T00:00:00+00:00", "args": {"quick": False, "max_elements": 1 << 27}}


@pytest.mark.parametrize("device_type", ["cuda", "cpu"])
def test_the_printed_table_and_target_lines_fit_100_columns(device_type):
    rows = _run_rows(device_type)
    table = report.format_table(rows, device_type)
    text = "\n".join([table, report.format_targets(rows, device_type), report.format_problems(rows)])
    widest = max(text.splitlines(), key=len)
    assert len(widest) <= 100, widest
    # every baseline has its column, and the widest values are printed whole
    assert table.splitlines()[0].split()[-5:] == ["ref-eager", "oracle", "ref-compile", "st", "allrank"]
    assert "3202.8" in table and "65536" in table and "8192" in table


def test_runs_go_to_a_git_ignored_folder_by_default():
    import shutil
    import subprocess
    from pathlib import Path

    from bench.__main__ import parse_args
    root = Path(report.__file__).resolve().parent.parent
    assert parse_args([]).out == report.DEFAULT_OUT == root / "output" / "bench"
    git = shutil.which("git")
    if git is None or subprocess.run([git, "-C", str(root), "rev-parse"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    probe = report.DEFAULT_OUT / "cpu-20260101T000000.json"
    assert subprocess.run([git, "-C", str(root), "check-ignore", "-q", str(probe)]).returncode == 0
    tracked = root / "bench" / "results" / "cpu-20260101T000000.json"  # where runs used to go: not ignored
    assert subprocess.run([git, "-C", str(root), "check-ignore", "-q", str(tracked)]).returncode == 1


def _draw(rows, meta, stem, monkeypatch):
    """write_plots, keeping each figure's title and axes for inspection before it is closed."""
    from bench import plots
    drawn = {}
    save = plots._save

    def keep(fig, lines, path):
        drawn[path.name[len(stem.name) + 1:]] = ("\n".join(lines), list(fig.axes))
        return save(fig, lines, path)

    monkeypatch.setattr(plots, "_save", keep)
    paths = plots.write_plots(rows, meta, stem)
    assert [p.name[len(stem.name) + 1:] for p in paths] == list(drawn) and all(p.stat().st_size > 0 for p in paths)
    return drawn


@pytest.mark.parametrize("device_type", ["cuda", "cpu"])
def test_every_plot_names_mode_dtype_and_device_and_every_panel_has_a_legend(device_type, tmp_path, monkeypatch):
    meta = dict(META, device_type=device_type, device="NVIDIA Test GPU" if device_type == "cuda" else "CPU: Test")
    drawn = _draw(_run_rows(device_type), meta, tmp_path / "run", monkeypatch)
    assert list(drawn) == ["time-vs-L.png", "speedup.png", "bandwidth.png"]  # nothing called a roofline
    for name, (title, axes) in drawn.items():
        assert meta["device"] in title and "commit 0123456789" not in title and "commit 012345678" in title, name
        assert "listmle" in title and "input order" in title and "float32" in title and "ragged rows" in title, name
        panels = [ax for ax in axes if ax.get_label() != "<colorbar>" and ax.axison]
        assert panels and all(ax.get_legend() is not None for ax in panels), name
    assert "fwd+bwd" in drawn["time-vs-L.png"][0] and "fwd+bwd" in drawn["speedup.png"][0]


def test_speedup_panels_share_one_colour_scale_mark_targets_and_say_what_was_skipped(tmp_path, monkeypatch):
    title, axes = _draw(_run_rows("cuda"), META, tmp_path / "run", monkeypatch)["speedup.png"]
    colourbars = [ax for ax in axes if ax.get_label() == "<colorbar>"]
    panels = {ax.get_title().split(":")[0]: ax for ax in axes if ax.get_label() != "<colorbar>"}
    assert len(colourbars) == 1 and set(panels) == {f"over {LABELS[b]}" for b in report.BASELINES}
    assert [t.get_text() for t in colourbars[0].get_yticklabels() if "target" in t.get_text()] == [
        "3 target", "10 target"]
    legend = lambda name: [t.get_text() for t in panels[name].get_legend().get_texts()]  # noqa: E731
    texts = lambda name: [t.get_text() for t in panels[name].texts]  # noqa: E731
    outlined = lambda name: [p for p in panels[name].patches if not p.get_fill()]  # noqa: E731
    # st is 371x faster where it runs (16 x 8, 16 x 1024, 4096 x 8): those cells meet its 10x target
    assert "meets the target >= 10x" in legend("over st") and len(outlined("over st")) == 3
    assert "meets the target >= 10x (no cell does)" in legend("over ref-eager") and not outlined("over ref-eager")
    assert "no target for this baseline" in legend("over oracle")
    # st skipped above B*L = 2^18: those cells say "skip", and the panel's legend says why
    assert texts("over st").count("skip") == 3
    assert any(t.startswith("skip: st skipped: B*L > 262144") for t in legend("over st"))
    # small shapes are judged back to back on CUDA, and say so
    assert "371*" in texts("over st") and "x*: back to back, host time included (B*L <= 2^16)" in legend("over st")
    # allRank disagreed in the sweep only: the grid's cells are all timed
    assert "wrong" not in texts("over allrank")
    # cells the grid had but the run did not reach, and cells beyond the grid's B*L limit, are told apart
    assert texts("over ref-eager").count("not run") == 5 and texts("over ref-eager").count("-") == 1
    assert "-: B*L > 2^27, beyond the grid" in legend("over ref-eager")


def test_bandwidth_plot_marks_the_target_on_cuda_only(tmp_path, monkeypatch):
    title, (ax,) = _draw(_run_rows("cuda"), META, tmp_path / "cuda", monkeypatch)["bandwidth.png"]
    assert "achieved bandwidth" in title and "% of copy bandwidth" in title
    assert any(t.get_text().startswith("target: fwd+bwd >= 75% of copy bandwidth, float32 at B*L >= 2^24")
               for t in ax.get_legend().get_texts())
    cpu_meta = dict(META, device_type="cpu", device="CPU: Test")
    _, (ax,) = _draw(_run_rows("cpu"), cpu_meta, tmp_path / "cpu", monkeypatch)["bandwidth.png"]
    assert not any("target" in t.get_text() for t in ax.get_legend().get_texts())


def test_plots_are_redrawn_from_a_result_file(tmp_path, capsys):
    from bench.plots import main as plots_main
    result = tmp_path / "cuda-20260101T000000.json"
    result.write_text(json.dumps({"meta": META, "results": _run_rows("cuda")}))
    assert plots_main([str(result), "--out", str(tmp_path / "png")]) == 0
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [
        "cuda-20260101T000000-bandwidth.png", "cuda-20260101T000000-speedup.png", "cuda-20260101T000000-time-vs-L.png"]
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    for bad in (tmp_path / "missing.json", tmp_path / "other.json"):
        with pytest.raises(SystemExit):
            plots_main([str(bad), "--out", str(tmp_path / "png")])
        assert "result: " in capsys.readouterr().err


def test_cpu_peak_memory_counts_live_tensors_and_numpy_arrays():
    """(x + 1) * 2 holds two buffers at its peak; a view, a detach and an in-place op add none; numpy's arrays count."""
    import numpy as np

    from bench.cpu_memory import peak_extra_bytes_cpu

    x = torch.ones(1000, 250)
    nbytes = x.numel() * 4
    python_objects = 1 << 16  # tracemalloc also counts the Python objects a call makes (wrappers, finalizers)
    assert 2 * nbytes <= peak_extra_bytes_cpu(lambda: (x + 1) * 2) < 2 * nbytes + python_objects
    assert peak_extra_bytes_cpu(lambda: x.detach()[:, 1:].add_(0)) < python_objects
    with_numpy = peak_extra_bytes_cpu(lambda: torch.from_numpy(np.ones((1000, 250), dtype=np.float32)) + 1)
    assert 2 * nbytes <= with_numpy < 2 * nbytes + python_objects


# --------------------------------------------------------------------------------------------------
# The pairwise family (python -m bench.pairwise)
# --------------------------------------------------------------------------------------------------


def test_pairwise_reference_matches_the_oracles():
    from bench.pairwise_check import self_check_reference
    pytest.importorskip("sentence_transformers")
    ok, message = self_check_reference()
    assert ok, message


def test_counted_pairs_counts_real_pairs_with_a_greater_label():
    from bench.pairwise_cases import counted_pairs
    labels = torch.tensor([[2.0, 0.0, 2.0, 1.0, 9.0], [1.0, 1.0, 0.0, 3.0, 3.0]])
    valid = torch.tensor([[True, True, True, True, False], [True, True, True, True, True]])
    brute = [sum(labels[b, i] > labels[b, j] for i in range(5) for j in range(5) if valid[b, i] and valid[b, j])
             for b in range(2)]
    assert counted_pairs(labels, valid).tolist() == [int(n) for n in brute] == [5, 8]


@pytest.mark.parametrize("loss", ["lambdaloss", "ranknet", "listnet"])
def test_pairwise_peers_agree_with_the_reference(loss):
    """Their own code, on ragged graded-label batches: what makes their timings timings of the same loss."""
    pytest.importorskip("sentence_transformers")
    from bench.pairwise_cases import PairwiseCase, make_inputs
    from bench.pairwise_check import reference_result
    from bench.pairwise_impls import AllRank, SentenceTransformers
    case = PairwiseCase(loss, 4, 11)
    inputs = make_inputs(case, seed=5)
    want = reference_result(case, inputs)
    for impl in (SentenceTransformers(), AllRank()):
        available, why = impl.availability(loss)
        if not available:
            continue  # allRank: `make install` installs it
        verdict = check.compare(case, check.loss_and_grad(impl.prepare(case, inputs), case), want,
                                inputs.valid_mask())
        assert verdict.ok, (impl.name, verdict.message)


def test_quadratic_estimate_scales_with_the_square_of_the_length():
    from bench.cpu_memory import quadratic_estimate
    assert quadratic_estimate(100, 64, 128) == 400


def _fake_ours(scale=1.0):
    """A module with our three public functions' signatures, computed by the oracles (times `scale`)."""
    import types
    from reference import lambdaloss_reference, listnet_reference, ranknet_reference
    module = types.ModuleType("fake_pairwise_losses")
    module.lambda_loss = lambda s, y, *, lengths, weighting_scheme, reduction, validate, backend: scale * \
        lambdaloss_reference(s, y, lengths=lengths, weighting_scheme=weighting_scheme, reduction=reduction)
    module.ranknet_loss = lambda s, y, *, lengths, reduction, validate, backend: scale * \
        ranknet_reference(s, y, lengths=lengths, reduction=reduction)
    module.listnet_loss = lambda s, y, *, lengths, reduction, validate, backend: scale * \
        listnet_reference(s, y, lengths=lengths, reduction=reduction)
    return module


def test_pairwise_cli_checks_measures_and_times_every_implementation(tmp_path, capsys, monkeypatch):
    pytest.importorskip("sentence_transformers")
    import sys
    from bench import pairwise
    from bench.pairwise_impls import AllRank, Ours, SentenceTransformers
    monkeypatch.setitem(sys.modules, "fake_pairwise_losses", _fake_ours())
    monkeypatch.setattr(pairwise, "all_impls", lambda device: [Ours(package="fake_pairwise_losses"),
                                                              SentenceTransformers(), AllRank()])
    assert main(["pairwise", "--shapes", "3x6", "--out", str(tmp_path)]) == 0  # through python -m bench
    (result_json,) = tmp_path.glob("pairwise-cpu-*.json")
    data = json.loads(result_json.read_text())
    rows = {(r["loss"], r["impl"]): r for r in data["results"]}
    assert data["meta"]["device_type"] == "cpu" and data["self_check"]["ok"]
    for loss in ("lambdaloss", "ranknet", "listnet"):
        ours = rows[(loss, "listmle_kernels_torch")]
        assert ours["status"] == "ok" and ours["ms"] > 0 and ours["peak_extra_bytes"] > 0
        assert ours["speedup_vs_sentence_transformers"] == pytest.approx(
            rows[(loss, "sentence_transformers")]["ms"] / ours["ms"])
        assert ours["memory_vs_sentence_transformers"] > 0
    assert list(tmp_path.glob("pairwise-cpu-*.csv"))
    out = capsys.readouterr().out
    assert "lk-torch ms" in out and "x st" in out
    assert all(len(line) <= report.TABLE_WIDTH for line in out[out.index("\nloss ") + 1:].splitlines())


def test_pairwise_reports_a_wrong_implementation_and_never_times_it(tmp_path, monkeypatch):
    import sys
    from bench import pairwise
    from bench.pairwise_cases import PairwiseCase
    from bench.pairwise_impls import Ours
    monkeypatch.setitem(sys.modules, "fake_pairwise_losses", _fake_ours(scale=1.01))
    impl = Ours(package="fake_pairwise_losses")
    case = PairwiseCase("listnet", 3, 6)
    (row,) = pairwise.run_case(case, [impl], {(impl.name, "listnet"): (True, "")}, seed=0, quick=True,
                               max_bytes=1 << 30)
    assert row["status"] == "mismatch" and "loss" in row["note"] and "ms" not in row


def test_pairwise_skips_a_peer_whose_estimated_peak_passes_the_limit():
    """Estimated from its peak at L = 64 before it runs; ListNet holds no (B, L, L) tensor and is not estimated."""
    pytest.importorskip("sentence_transformers")
    from bench import pairwise
    from bench.pairwise_cases import PairwiseCase
    from bench.pairwise_impls import SentenceTransformers
    impl = SentenceTransformers()
    availability = {(impl.name, loss): (True, "") for loss in ("lambdaloss", "listnet")}
    (pairs,) = pairwise.run_case(PairwiseCase("lambdaloss", 2, 128), [impl], availability, 0, True, 1 << 20)
    assert pairs["status"] == "skipped" and pairs["note"].startswith("skipped: needs ~")
    assert pairs["estimated_peak_bytes"] == pytest.approx(4 * pairs["probe_peak_bytes"], rel=1e-6)
    assert pairs["estimated_peak_bytes"] > 1 << 20 and "ms" not in pairs
    (listnet,) = pairwise.run_case(PairwiseCase("listnet", 2, 128), [impl], availability, 0, True, 1 << 20)
    assert listnet["status"] == "ok" and "estimated_peak_bytes" not in listnet


def test_pairwise_table_fits_100_columns_at_the_widest_cells():
    from bench.pairwise import format_table
    rows = []
    for loss, B, L in [("lambdaloss", 256, 1000), ("ranknet", 16, 4096)]:
        case = dict(loss=loss, B=B, L=L, case=f"{loss}/B{B}xL{L}")
        rows += [dict(case, impl="listmle_kernels_torch", label="lk-torch", status="ok", ms=12345.6,
                      peak_extra_bytes=123 * 2**30, speedup_vs_sentence_transformers=1234.5, speedup_vs_allrank=0.1),
                 dict(case, impl="sentence_transformers", label="st", status="skipped"),
                 dict(case, impl="allrank", label="allrank", status="mismatch")]
    table = format_table(rows, {"listmle_kernels_torch": "lk-torch", "sentence_transformers": "st",
                                "allrank": "allrank"})
    assert all(len(line) <= report.TABLE_WIDTH for line in table.splitlines())
    assert "1234.5" in table and "skip" in table and "wrong" in table


def test_pairwise_device_option_defaults_to_the_cpu_and_refuses_cuda_without_a_device(monkeypatch, capsys):
    from bench import pairwise
    assert pairwise.parse_args([]).device == "cpu"
    assert pairwise.parse_args(["--device", "cpu"]).device == "cpu"
    with pytest.raises(SystemExit) as refused:
        pairwise.parse_args(["--device", "tpu"])
    assert refused.value.code == 2 and "--device" in capsys.readouterr().err
    # What a machine without CUDA answers, whether or not this one has a GPU: an argparse error, before any work.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as refused:
        pairwise.parse_args(["--device", "cuda", "--quick"])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "--device cuda" in err and "is_available() is False" in err


def test_pairwise_memory_reader_and_limit_follow_the_device():
    """The CPU's reader counts a known allocation; CUDA's is the allocator-statistics one (bench.timing); the
    (B, L, L) estimate's limit is --max-gib, capped by the free memory where the device reports it."""
    from bench import pairwise, timing
    from bench.cpu_memory import peak_extra_bytes_cpu
    reader = pairwise.peak_reader(torch.device("cpu"))
    assert reader is peak_extra_bytes_cpu
    assert reader(lambda: torch.ones(1 << 18)) >= 4 << 18
    assert pairwise.peak_reader(torch.device("cuda")) is timing.peak_extra_bytes_cuda
    assert pairwise.memory_limit_bytes(4.0, None) == 4 << 30
    assert pairwise.memory_limit_bytes(4.0, 1 << 30) == 1 << 30
    assert pairwise.memory_limit_bytes(0.5, 8 << 30) == 1 << 29


def test_pairwise_inputs_move_as_a_leaf_and_ours_follow_the_device():
    from bench.pairwise_cases import PairwiseCase, make_inputs
    from bench.pairwise_impls import all_impls
    inputs = make_inputs(PairwiseCase("listnet", 3, 6), seed=0)
    assert inputs.to(torch.device("cpu")) is inputs
    moved = inputs.to("meta")  # a device other than the CPU that every torch build has
    assert moved.scores.is_leaf and moved.scores.requires_grad and moved.scores.device.type == "meta"
    assert moved.valid_mask().device.type == "meta"
    assert [i.name for i in all_impls(torch.device("cpu"))][0] == "listmle_kernels_torch"
    assert [i.name for i in all_impls(torch.device("cuda"))] == ["listmle_kernels_auto", "sentence_transformers",
                                                                 "allrank"]
