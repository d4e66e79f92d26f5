"""What the documentation promises about itself: the README stays a short page for users, every tracked result
file is one a document cites, and every relative link in the Markdown files resolves."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_WORD_BUDGET = 1800
MAX_RESULT_FILES = 30


def tracked(*paths):
    try:
        out = subprocess.run(["git", "ls-files", *paths], cwd=ROOT, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [Path(line) for line in out.stdout.splitlines()]


def markdown_files():
    return [p for p in tracked("*.md") if (ROOT / p).exists()]


def test_readme_is_within_its_word_budget():
    words = len((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert words <= README_WORD_BUDGET, f"README.md has {words} words; details belong in docs/"


def test_tracked_results_are_few_and_cited():
    results = tracked("bench/results", "train/results")
    assert len(results) <= MAX_RESULT_FILES, f"{len(results)} tracked result files"
    text = "\n".join((ROOT / p).read_text(encoding="utf-8") for p in markdown_files())
    # A file is cited by its path or name, or (train/results/<run>/...) by its run's folder.
    uncited = [p for p in results
               if str(p) not in text and p.name not in text
               and not (p.parts[0] == "train" and f"train/results/{p.parts[2]}" in text)]
    assert not uncited, f"tracked but cited by no document: {uncited}"


def test_relative_links_resolve():
    broken = []
    for md in markdown_files():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / md).read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            if not ((ROOT / md).parent / target).exists():
                broken.append(f"{md}: {target}")
    assert not broken, broken


def python_blocks(section):
    """The ```python blocks of a `## section` of the README, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_readme_examples_run():
    """The Quick start, the plain-PyTorch and allRank lines of "Drop it in" and the pairwise losses' example run as
    written, on CPU tensors (the sentence-transformers lines need a model and have their own tests)."""
    import torch
    namespace = {}
    (quick_start,) = python_blocks("Quick start")
    exec(quick_start, namespace)
    assert namespace["scores"].grad is not None and torch.isfinite(namespace["loss"])
    namespace.update(torch=torch, mask=torch.arange(10)[None, :] < namespace["lengths"][:, None],
                     y_pred=torch.randn(4, 6), y_true=torch.tensor([[2.0, 1.0, 0.0, -1.0, -1.0, -1.0]] * 4))
    plain, allrank = [block for block in python_blocks("Drop it in") if "integrations" not in block]
    for block in (plain, allrank):
        exec(block, namespace)
        assert torch.isfinite(namespace["loss"])
    pairwise = python_blocks("LambdaLoss, RankNet and ListNet")[0]
    exec(pairwise, namespace)
    assert torch.isfinite(namespace["loss"])
