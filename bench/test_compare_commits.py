"""`python -m bench.compare_commits`: another commit's package runs beside this one, on the same cases."""

import json
import shutil
import subprocess

import pytest
import torch

from bench import compare_commits


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
