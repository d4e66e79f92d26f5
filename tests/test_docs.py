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
