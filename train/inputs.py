"""Command-line inputs that cannot work, reported as one line naming the flag (exit code 2) before any hub access.

A value for --model, --train-data, --eval-data or --candidates dense:... is either a local path or a hub id
(`name` or `org/name`). One that can only be a local path but does not exist would otherwise fall through to the
hub loaders and be reported as an unreachable hub.
"""

import os
import sys

from .hub import HubUnavailableError

LOCAL_PREFIXES = ("/", "./", "../", "~")
LOCAL_SUFFIXES = (".json", ".jsonl", "/")


class UsageError(ValueError):
    """A flag's value cannot work; the CLIs print it argparse-style and exit with status 2."""


# What the CLIs catch around their work: an input that cannot work, reported by `report_input_error`.
INPUT_ERRORS = (HubUnavailableError, UsageError)


def report_input_error(prog, exc):
    """Print an INPUT_ERRORS exception for the user (the hub's paragraph as it is, a UsageError as one argparse-style
    line) and return the exit status, 2."""
    print(exc if isinstance(exc, HubUnavailableError) else f"{prog}: error: {exc}", file=sys.stderr)
    return 2


def looks_like_local_path(value):
    """True when `value` cannot be a hub id: an explicit path, a file name, or more than `org/name`.

    `org/name` stays a hub id even when a local directory `org/` exists (a folder named `microsoft/`
    must not turn the default model into a missing path); the hub error then says that no local path
    of that name exists either."""
    if value.startswith(LOCAL_PREFIXES) or value.endswith(LOCAL_SUFFIXES):
        return True
    return len(value.split("/")) > 2


def parse_candidates(candidates):
    """'bm25' -> None; 'dense:MODEL_DIR' -> MODEL_DIR."""
    if candidates == "bm25":
        return None
    if candidates.startswith("dense:") and len(candidates) > len("dense:"):
        return candidates[len("dense:") :]
    raise UsageError(f"--candidates must be 'bm25' or 'dense:MODEL_DIR', got {candidates!r}")


def input_paths(args):
    """[(flag, value)] of the inputs that may name local paths (`python -m train` and `train.evaluate` share them)."""
    paths = [("--model", args.model), ("--train-data", args.train_data)]
    if args.eval_data != "heldout":
        paths.append(("--eval-data", args.eval_data))
    dense_dir = parse_candidates(args.candidates)
    if dense_dir is not None:
        paths.append(("--candidates", dense_dir))
    return paths


def check_local_paths(args):
    """Raise UsageError for the first input that is clearly a local path and does not exist."""
    for flag, value in input_paths(args):
        if value and looks_like_local_path(value) and not os.path.exists(value):
            raise UsageError(f"{flag}: no such file or directory: {value} (hub ids look like 'org/name')")
