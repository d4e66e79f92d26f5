"""What a user of `python -m train` sees and controls: every flag's help with its default, the log on stderr (the
output directory first, each checkpoint as it is saved, --quiet, no progress bars when redirected), how many
checkpoints are kept and whether they carry the optimizer state, and --resume refusing a checkpoint without it."""

import train_fixtures  # noqa: F401  (first: puts the repository root on sys.path)

import logging
import os
import subprocess
import sys

import pytest
import torch

from train.config import DefaultsHelpFormatter, build_parser
from train.logging_setup import LOGGER_NAME, setup_logging
from train.loop import main as train_main

from train_fixtures import REPO_ROOT, make_training_material, read_jsonl, training_args


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    return make_training_material(tmp_path_factory.mktemp("cli_material"))


def run_args(material, out, *extra):
    return training_args(material, out) + ["--train-queries", "12", "--val-queries", "0", "--batch-size", "4",
                                           "--eval-data", "heldout", "--rerank-k", "5", *extra]


def expanded_help(action):
    return DefaultsHelpFormatter("python -m train")._get_help_string(action) % {"default": action.default}


@pytest.mark.parametrize("action", [a for a in build_parser()._actions if a.option_strings and a.dest != "help"],
                         ids=lambda a: a.option_strings[-1])
def test_every_flag_says_what_it_does_and_its_default(action):
    text = expanded_help(action)
    assert len(text) > 20, text  # says what it does
    if action.nargs == 0 and action.default in (False, None):
        assert "off by default" in text  # a switch
    elif action.nargs == 0:
        assert "default" in text  # a switch that is on unless its opposite is given (--respect-input-order)
    elif action.default is None:
        assert "default:" in text or "off by default" in text  # what happens without the flag, in words
    else:
        assert str(action.default) in text and "default" in text


def test_help_lists_the_save_and_logging_flags():
    out = subprocess.run([sys.executable, "-m", "train", "-h"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for phrase in ("--save-total-limit SAVE_TOTAL_LIMIT", "(default: 2)", "--save-only-model", "--quiet",
                   "--log-level {debug,info,warning,error}", "(default: info)", "published model card's recipe"):
        assert phrase in text
    assert "GUIDE" not in text


def test_log_names_the_output_directory_first_then_each_checkpoint(material, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(run_args(material, out, "--max-steps", "3", "--eval-steps", "1")) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if " INFO " in line]
    assert lines[0].endswith(f"INFO output directory: {out}")
    for step in (1, 2, 3):
        assert sum(f"INFO saved {out / f'checkpoint-{step}'} (" in line for line in lines) == 1
    assert sum(f"INFO deleted {out / 'checkpoint-1'} (--save-total-limit 2)" in line for line in lines) == 1
    assert any(f"saved {out / 'best-model'}" in line for line in lines)
    assert "\r" not in err and "it/s" not in err  # stderr is not a terminal here: no progress bars
    assert capsys.readouterr().out == ""


def test_quiet_logs_warnings_only(material, tmp_path, capsys):
    assert train_main(run_args(material, tmp_path / "run", "--max-steps", "1", "--quiet")) == 0
    err = capsys.readouterr().err
    assert "output directory" not in err and " INFO " not in err and "step 0" not in err and "\r" not in err


def test_log_level_flags_and_a_bad_level(capsys):
    assert build_parser().parse_args(["--log-level", "debug"]).log_level == "debug"
    assert build_parser().parse_args(["--quiet"]).log_level == "warning"
    assert build_parser().parse_args([]).log_level == "info"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--quiet", "--log-level", "debug"])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(ValueError, match="level must be one of"):
        setup_logging("verbose")


def test_other_ranks_log_errors_only():
    import transformers

    verbosity = transformers.logging.get_verbosity()
    try:
        logger = setup_logging("debug", rank=1)
        assert not logger.isEnabledFor(logging.WARNING) and logger.isEnabledFor(logging.ERROR)
        assert transformers.logging.get_verbosity() == transformers.logging.ERROR
        assert setup_logging("info", rank=0).isEnabledFor(logging.INFO)
        ours = [h for h in logging.getLogger(LOGGER_NAME).handlers if type(h).__module__ == "train.logging_setup"]
        assert len(ours) == 1  # set up again: replaced, not added
    finally:
        transformers.logging.set_verbosity(verbosity)


def test_save_total_limit_keeps_the_last_n(material, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(run_args(material, out, "--max-steps", "4", "--eval-steps", "1", "--save-total-limit", "3")) == 0
    assert sorted(p for p in os.listdir(out) if p.startswith("checkpoint-")) == [
        "checkpoint-2", "checkpoint-3", "checkpoint-4"]
    for bad in ("0", "-1"):
        with pytest.raises(SystemExit):
            train_main(run_args(material, tmp_path / "x", "--save-total-limit", bad))
        assert f"--save-total-limit must be at least 1, got {bad}" in capsys.readouterr().err


def checkpoint_bytes(path):
    return sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path))


def test_save_only_model_leaves_out_the_optimizer_and_resume_refuses_it(material, tmp_path, capsys):
    full, slim = tmp_path / "full", tmp_path / "slim"
    argv = ["--max-steps", "2", "--eval-steps", "1"]
    assert train_main(run_args(material, full, *argv)) == 0
    assert train_main(run_args(material, slim, *argv, "--save-only-model")) == 0
    capsys.readouterr()

    # the same training either way; the slim checkpoint has the same weights, and no optimizer, scheduler or RNG
    assert [r["loss"] for r in read_jsonl(slim / "train_log.jsonl")] == [
        r["loss"] for r in read_jsonl(full / "train_log.jsonl")]
    full_state = torch.load(full / "checkpoint-2" / "trainer_state.pt", weights_only=False)
    slim_state = torch.load(slim / "checkpoint-2" / "trainer_state.pt", weights_only=False)
    assert set(full_state) == {"optimizer", "scheduler", "step", "best", "args"}
    assert set(slim_state) == {"step", "best", "args"} and slim_state["step"] == 2
    assert sorted(os.listdir(full / "checkpoint-2")) == sorted(os.listdir(slim / "checkpoint-2") + ["rng_state_0.pt"])
    from safetensors.torch import load_file
    full_weights = load_file(full / "checkpoint-2" / "model.safetensors")
    slim_weights = load_file(slim / "checkpoint-2" / "model.safetensors")
    assert full_weights.keys() == slim_weights.keys()
    assert all(torch.equal(full_weights[k], slim_weights[k]) for k in full_weights)
    # AdamW's state is two float32 moments per weight: the slim checkpoint lacks at least twice the model's bytes
    # (more on a model this small, whose tensors are small next to torch.save's per-tensor records)
    model_bytes = os.path.getsize(full / "checkpoint-2" / "model.safetensors")
    assert checkpoint_bytes(full / "checkpoint-2") - checkpoint_bytes(slim / "checkpoint-2") > 1.9 * model_bytes

    assert train_main(run_args(material, slim, *argv, "--resume")) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("python -m train: error: --resume: ")
    assert str(slim / "checkpoint-2") in error and "--save-only-model" in error and "cannot resume" in error
    assert f"--model {slim / 'checkpoint-2'}" in error
    assert [r["step"] for r in read_jsonl(slim / "train_log.jsonl")] == [1, 2]  # nothing touched

    # what the message offers instead: a new run from the checkpoint's weights
    assert train_main(run_args(material, tmp_path / "next", "--max-steps", "1",
                               "--model", str(slim / "checkpoint-2"))) == 0


def test_resume_from_a_directory_that_is_no_checkpoint(material, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(run_args(material, out, "--max-steps", "1")) == 0
    capsys.readouterr()
    assert train_main(run_args(material, out, "--max-steps", "2", "--resume", str(out / "best-model"))) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"python -m train: error: --resume: {out / 'best-model'} is not a checkpoint of python -m train "
                     f"(no trainer_state.pt)")
