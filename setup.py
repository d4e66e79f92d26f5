from setuptools import find_packages, setup

setup(
    name="listmle-kernels",
    version="0.1.0",
    description="Fused Triton ListMLE / p-ListMLE learning-to-rank losses for PyTorch",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["listmle_kernels", "listmle_kernels.*", "reference"]),
    install_requires=[
        "torch>=2.4",
        "numpy",  # its SIMD sort orders CPU rows by labels (listmle_kernels/target_order.py)
        "triton>=3.0; platform_system == 'Linux'",
    ],
    extras_require={
        "dev": ["pytest", "pytest-benchmark", "pytest-xdist", "hypothesis"],
        "train": ["transformers>=4.56", "datasets", "tqdm", "tokenizers"],
        "bench": ["matplotlib"],
        # optional: the drop-in losses, and the tests that compare against sentence-transformers itself.
        # >= 6: 5.x's ListMLE lets padding (exp(1e-16) = 1) into its normalisers, so its loss differs.
        "sentence-transformers": ["sentence-transformers[train]>=6", "scikit-learn"],
    },
)
