"""What a run ran on: device, library versions and commit, recorded beside its numbers.

The one record format of the project's result files: train's comparisons write it, and bench/ and tools/ import
it from here (train/ depends on the installed package only, never on bench/ or tools/).
"""

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str):
    """Output of a read-only git query (rev-parse, status) in this tree; None without a repository or commit."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def version(module_name: str):
    """The installed distribution's version; for a package run from a source tree (no metadata), its
    __version__ (importing it: sentence-transformers takes seconds, so metadata comes first)."""
    try:
        return importlib.metadata.version(module_name)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        module = __import__(module_name)
    except Exception:
        return None
    return getattr(module, "__version__", "unknown")


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU: {cpu} ({torch.get_num_threads()} torch threads, {os.cpu_count()} cores)"


def run_metadata(device: torch.device, args: dict) -> dict:
    # A copy of the tree without .git (one copied to another machine to run there) names its commit in
    # LISTMLE_GIT_COMMIT. Read first: a copy inside some other git checkout would otherwise record that
    # checkout's commit.
    commit = os.environ.get("LISTMLE_GIT_COMMIT") or git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain")
    uncommitted = dirty.splitlines() if dirty else []
    return {
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device_type": device.type,
        "device": device_description(device),
        "git_commit": commit or "none (no commit yet)",
        "git_dirty": bool(dirty) if dirty is not None else None,
        "git_uncommitted": uncommitted[:20] + ([f"... {len(uncommitted) - 20} more"] if len(uncommitted) > 20 else []),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        **{name: version(name) for name in ("triton", "listmle_kernels", "sentence_transformers", "transformers")},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_load_average_1_5_15min": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "args": args,
    }
