"""The target order when sorting by labels (outside the kernel: the torch backend and the long-row pre-pass).

Both builds run here: numpy's (CPU tensors) and torch's (CUDA tensors; run on the CPU too).
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from listmle_kernels.target_order import numpy_target_order, target_order, torch_target_order

from cases import DEVICE

BUILDS = {"dispatch": lambda labels, real, *args: target_order(labels.to(DEVICE), real.to(DEVICE), *args).cpu(),
          "numpy": numpy_target_order, "torch": torch_target_order}


@st.composite
def labelled_rows(draw):
    batch, length = draw(st.integers(1, 5)), draw(st.integers(1, 70))
    values = st.sampled_from([0.0, -0.0, 1.0, 2.0, -1.5, 1e-30, -3e38, float("inf"), float("-inf")])
    labels = torch.tensor(draw(st.lists(values, min_size=batch * length, max_size=batch * length)))
    real = torch.tensor(draw(st.lists(st.booleans(), min_size=batch * length, max_size=batch * length)))
    return labels.view(batch, length), real.view(batch, length)


def literal_order(labels, real):
    """Real documents first, labels descending (the two zeros equal), input order among ties and padding."""
    return torch.tensor([sorted(range(len(row)), key=lambda j: (not ok[j], -float(row[j]) + 0.0 if ok[j] else 0, j))
                         for row, ok in zip(labels.tolist(), real.tolist())])


@pytest.mark.parametrize("build", BUILDS)
@given(rows=labelled_rows())
def test_stable_order_is_the_literal_sort(build, rows):
    labels, real = rows
    assert torch.equal(BUILDS[build](labels, real, False, 0), literal_order(labels, real))


@pytest.mark.parametrize("build", BUILDS)
@given(rows=labelled_rows(), seed=st.integers(0, 2 ** 31 - 1))
def test_random_order_sorts_labels_and_shuffles_only_ties(build, rows, seed):
    labels, real = rows
    order = BUILDS[build](labels, real, True, seed)
    assert torch.equal(order, BUILDS[build](labels, real, True, seed))  # seeded
    assert torch.equal(order.sort(1).values, torch.arange(labels.shape[1]).expand_as(order))  # a permutation
    key = torch.where(real, labels + 0.0, float("nan")).gather(1, order)
    literal_key = torch.where(real, labels + 0.0, float("nan")).gather(1, literal_order(labels, real))
    torch.testing.assert_close(key, literal_key, equal_nan=True, rtol=0, atol=0)  # same labels, same places


@pytest.mark.parametrize("build", BUILDS)
def test_random_ties_shuffle_each_row_on_its_own(build):
    labels, real = torch.zeros(16, 9), torch.ones(16, 9, dtype=torch.bool)
    orders = BUILDS[build](labels, real, True, 7)
    assert len({tuple(row) for row in orders.tolist()}) > 8  # one shared shuffle would give 1


@pytest.mark.parametrize("build", BUILDS)
def test_random_ties_are_uniform(build):
    """Three tied documents in 1,200 rows: each of the 6 orders about 200 times (a chi-square bound, p ~ 1e-6)."""
    labels, real = torch.zeros(1200, 3), torch.ones(1200, 3, dtype=torch.bool)
    counts = torch.unique(BUILDS[build](labels, real, True, 5), dim=0, return_counts=True)[1]
    assert len(counts) == 6 and ((counts - 200.0) ** 2 / 200).sum() < 35


def test_torch_build_draws_from_no_generator(monkeypatch):
    """A CUDA graph cannot capture a draw from a generator made per call: the tie bits are a hash of the seed."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch_target_order drew from a torch.Generator")

    monkeypatch.setattr(torch, "Generator", refuse)
    monkeypatch.setattr(torch, "randint", refuse)
    labels, real = torch.zeros(4, 9), torch.ones(4, 9, dtype=torch.bool)
    assert not torch.equal(torch_target_order(labels, real, True, 1), torch_target_order(labels, real, True, 2))
