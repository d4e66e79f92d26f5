"""Keep the benchmarks out of ordinary test runs.

`pytest bench/ --benchmark-only` (bench/ named on the command line) collects bench/test_bench.py;
`pytest` or `pytest tests/` from the repository root does not, even without a testpaths setting.
"""

from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def _bench_named_explicitly(config) -> bool:
    for arg in config.args:
        path = Path(str(arg).split("::")[0]).resolve()
        if path == BENCH_DIR or BENCH_DIR in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    in_bench = BENCH_DIR in Path(collection_path).resolve().parents
    if in_bench and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return None if _bench_named_explicitly(config) else True
    return None
