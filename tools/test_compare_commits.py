"""`python -m tools.compare_commits`: another commit's package runs beside this one, on the same cases."""

import json
import shutil
import subprocess

import pytest
import torch

from tools import compare_commits


@pytest.mark.skipif(shutil.which("git") is None or subprocess.run(["git", "rev-parse", "HEAD"], cwd=compare_commits.ROOT,
                    capture_output=True).returncode != 0, reason="needs a git checkout")
def test_compares_head_with_this_tree(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        compare_commits.main(["HEAD", "--shape", "3x5", "--seconds", "0.01", "--out", str(tmp_path)])
    finally:  # main() times on one thread; the tests after this one in the process keep theirs
        torch.set_num_threads(threads)
    import listmle_kernels
    old = compare_commits.sys.modules[compare_commits.OLD_NAME]
    assert old is not listmle_kernels and old.__file__ != listmle_kernels.__file__
    (result,) = tmp_path.glob("compare-*.json")
    rows = json.loads(result.read_text())["rows"]
    assert len(rows) == 4 and all(min(row["ms"].values()) > 0 for row in rows)
    assert "faster" in capsys.readouterr().out


def test_a_package_directory_stands_in_for_git(tmp_path, capsys):
    """The GPU machine's copy has no usable history: the older package comes from a directory, the package
    itself or the folder `git archive ... | tar -x` leaves, and each copy imports as its own module."""
    import listmle_kernels
    from pathlib import Path
    source = Path(listmle_kernels.__file__).parent
    holder = tmp_path / "holder"
    shutil.copytree(source, holder / "listmle_kernels")
    first = compare_commits.import_package_at("x", tmp_path / "a", package_dir=source)
    second = compare_commits.import_package_at("x", tmp_path / "b", package_dir=holder)
    assert first is not second and first.__name__ != second.__name__
    assert Path(first.__file__).is_relative_to(tmp_path / "a") and Path(second.__file__).is_relative_to(tmp_path / "b")
    scores = torch.randn(2, 3)
    torch.testing.assert_close(second.listmle_loss(scores), listmle_kernels.listmle_loss(scores))
    with pytest.raises(ValueError, match="holds no listmle_kernels package"):
        compare_commits.import_package_at("x", tmp_path / "c", package_dir=tmp_path / "a")
    threads = torch.get_num_threads()
    try:
        compare_commits.main(["old", "--package-dir", str(holder), "--shape", "3x5", "--orders", "labels",
                              "--labels", "graded", "--seconds", "0.01", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    (result,) = tmp_path.glob("compare-old-*.json")
    rows = json.loads(result.read_text())["rows"]
    assert [row["case"].split("/")[-1] for row in rows] == ["graded", "graded"]


def test_graded_labels_are_grades_with_ties():
    from bench.cases import Case
    case = Case(64, 100, order="labels")
    labels = compare_commits.inputs_for(case, "cpu", seed=0, labels="graded").labels
    assert set(labels.unique().tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}
    assert compare_commits.inputs_for(Case(4, 5), "cpu", 0, "graded").labels is None  # input order: none


def test_cuda_rounds_alternate_and_small_shapes_add_back_to_back_times(monkeypatch):
    from bench import timing
    from bench.cases import Case
    calls = []
    monkeypatch.setattr(timing, "time_cuda", lambda step: (calls.append(step()) or {"a": 1.0, "b": 3.0}[step()],))
    monkeypatch.setattr(timing, "time_back_to_back", lambda step, device: (10.0 * {"a": 1.0, "b": 3.0}[step()],))
    steps = {"a": lambda: "a", "b": lambda: "b"}
    ms = compare_commits.time_on_cuda(steps, Case(16, 10), rounds=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert ms == {"a": 1.0, "b": 3.0, "a wall": 10.0, "b wall": 30.0}
    assert set(compare_commits.time_on_cuda(steps, Case(4096, 4096), rounds=1)) == {"a", "b"}
