"""What `pip install listmle-kernels` gives a user: the wheel's contents and metadata, and a package that works on
CPU tensors without Triton (which is left to torch's CUDA and ROCm wheels, see pyproject.toml)."""

import math
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    (path,) = out.glob("listmle_kernels-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_installs_only_the_package(wheel):
    top_level = {name.split("/")[0] for name in wheel.namelist()}
    version = Parser().parsestr(wheel.read(next(n for n in wheel.namelist() if n.endswith("/METADATA"))).decode())
    assert top_level == {"listmle_kernels", f"listmle_kernels-{version['Version']}.dist-info"}
    assert "listmle_kernels/integrations/sentence_transformers.py" in wheel.namelist()


def test_wheel_metadata_and_license(wheel):
    metadata = Parser().parsestr(wheel.read(next(n for n in wheel.namelist() if n.endswith("/METADATA"))).decode())
    import listmle_kernels

    assert metadata["Name"] == "listmle-kernels"
    assert metadata["Version"] == listmle_kernels.__version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Requires-Python"] == ">=3.10"  # the README's "Python >= 3.10, torch >= 2.4"
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert any(n.endswith("licenses/LICENSE") for n in wheel.namelist())
    requires = metadata.get_all("Requires-Dist")
    # Hard requirements: torch and numpy only; triton is an extra.
    assert sorted(r for r in requires if "extra ==" not in r) == ["numpy", "torch>=2.4"]
    assert any(r.startswith("triton") and 'extra == "triton"' in r for r in requires)


def test_the_package_parses_as_python_3_10():
    """Requires-Python says 3.10: no later syntax in the package (its modules parsed with 3.10's grammar)."""
    import ast
    for path in sorted((ROOT / "listmle_kernels").rglob("*.py")):
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))


def test_extras_install_only_what_their_code_needs():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["sentence-transformers"] == ["sentence-transformers>=6"]
    assert extras["triton"] == ["triton>=3.0"]
    assert not any("sentence-transformers" in r or "pytest" in r for r in extras["train"] + extras["bench"])


def test_cpu_tensors_work_without_triton():
    """A CPU-only environment has no Triton: the package imports, computes on CPU tensors, and backend='triton'
    is refused with an error that names the cause."""
    code = """
import sys
sys.modules["triton"] = None  # import triton raises ImportError, as where it is not installed
import torch
from listmle_kernels import listmle_loss
scores = torch.tensor([[2.0, 1.0, 0.0]], requires_grad=True)
loss = listmle_loss(scores)
loss.backward()
print(round(loss.item(), 6), scores.grad.abs().sum().item() > 0)
try:
    listmle_loss(scores.detach(), backend="triton")
except ValueError as err:
    print("refused:", err)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT).stdout
    lines = out.splitlines()
    # loss of (2, 1, 0) in input order: -(2 - lse(2,1,0)) - (1 - lse(1,0)) - 0
    expected = -(2 - math.log(math.exp(2) + math.exp(1) + 1)) - (1 - math.log(math.exp(1) + 1))
    assert float(lines[0].split()[0]) == pytest.approx(expected, abs=1e-6)
    assert lines[0].split()[1] == "True"
    assert lines[1].startswith("refused: backend='triton'") and "triton" in lines[1][len("refused: "):]
