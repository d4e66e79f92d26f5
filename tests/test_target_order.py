"""The target order when sorting by labels (outside the kernel: the torch backend and the long-row pre-pass).

Both builds run here: numpy's (CPU tensors) and torch's (CUDA tensors; run on the CPU too).
"""

import concurrent.futures
import threading
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from listmle_kernels import target_order as target_order_module
from listmle_kernels.target_order import numpy_target_order, small_stable_order, target_order, torch_target_order

from cases import DEVICE


def numpy_compact_everywhere(*args):
    """The numpy build with 32-bit keys wherever they fit, not only in rows of COMPACT_MIN_LENGTH or more."""
    with mock.patch.object(target_order_module, "COMPACT_MIN_LENGTH", 0):
        return numpy_target_order(*args)


BUILDS = {"dispatch": lambda labels, real, *args: target_order(labels.to(DEVICE), real.to(DEVICE), *args).cpu(),
          "numpy": numpy_target_order, "numpy-compact": numpy_compact_everywhere, "torch": torch_target_order}


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64])
@given(rows=labelled_rows())
def test_small_stable_order_is_the_literal_sort(dtype, rows):
    """The torch order of small CPU batches, for every label dtype (compared as float32; -inf labels beside
    padding holes still come before the padding)."""
    labels, real = rows
    if not dtype.is_floating_point:
        labels = labels.clamp(-1e6, 1e6).nan_to_num()
    labels = labels.to(dtype)
    assert torch.equal(small_stable_order(labels, real), literal_order(labels.float(), real))


@pytest.mark.parametrize("build", BUILDS)
@given(rows=labelled_rows(), seed=st.integers(0, 2 ** 31 - 1))
def test_random_order_sorts_labels_and_shuffles_only_ties(build, rows, seed):
    labels, real = rows
    order = BUILDS[build](labels, real, True, seed)
    assert torch.equal(order, BUILDS[build](labels, real, True, seed))  # seeded
    assert_sorts_labels_and_shuffles_only_ties(order, labels, real)


def assert_sorts_labels_and_shuffles_only_ties(order, labels, real):
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


def test_numpy_tie_bits_depend_on_the_seed_alone(monkeypatch):
    """The numpy build's generator is set from the seed at each call, one generator a thread: calls with other
    seeds before it, or in another thread between its seeding and its draw, change no order."""
    labels, real = torch.zeros(8, 300), torch.ones(8, 300, dtype=torch.bool)
    alone = [numpy_target_order(labels, real, True, seed) for seed in range(4)]
    assert len({tuple(order.flatten().tolist()) for order in alone}) == 4
    assert torch.equal(numpy_target_order(labels, real, True, 0), alone[0])
    seeded, both_seeded = target_order_module._seeded_stream, threading.Barrier(2)

    def seeded_then_wait(seed):  # both threads set their state before either draws
        stream = seeded(seed)
        both_seeded.wait(timeout=30)
        return stream

    monkeypatch.setattr(target_order_module, "_seeded_stream", seeded_then_wait)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        orders = list(pool.map(lambda seed: numpy_target_order(labels, real, True, seed), [1, 2]))
    assert torch.equal(orders[0], alone[1]) and torch.equal(orders[1], alone[2])


def test_torch_build_draws_from_no_generator(monkeypatch):
    """A CUDA graph cannot capture a draw from a generator made per call: the tie bits are a hash of the seed."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch_target_order drew from a torch.Generator")

    monkeypatch.setattr(torch, "Generator", refuse)
    monkeypatch.setattr(torch, "randint", refuse)
    labels, real = torch.zeros(4, 9), torch.ones(4, 9, dtype=torch.bool)
    assert not torch.equal(torch_target_order(labels, real, True, 1), torch_target_order(labels, real, True, 2))


def long_rows(batch, length, seed):
    """Rows of graded labels (0-4, halves), binary, continuous, negative and 17-bit labels, with padding."""
    generator = torch.Generator().manual_seed(seed)
    kinds = [torch.randint(0, 5, (length,), generator=generator).float(),
             torch.randint(0, 9, (length,), generator=generator).float() / 2,
             torch.randint(0, 2, (length,), generator=generator).float(),
             torch.rand(length, generator=generator),
             torch.randint(-2, 3, (length,), generator=generator).float(),
             # subnormal labels whose bits are 1, 2^16 and 2^16 + 1: keys spanning 17 bits
             torch.tensor([1, 2 ** 16, 2 ** 16 + 1], dtype=torch.int32).view(torch.float32)[
                 torch.randint(0, 3, (length,), generator=generator)]]
    labels = torch.stack([kinds[row % len(kinds)] for row in range(batch)])
    real = torch.rand(batch, length, generator=generator) < 0.9
    labels[~real] = float("nan")  # padding labels are never read
    return labels, real


@pytest.mark.parametrize("random_ties", [False, True])
def test_graded_rows_sort_32_bit_keys(random_ties):
    """Long rows of few-bit labels (grades, halves, 0/1) take the compact keys; continuous or negative labels the
    wide ones, labels of 17 key bits the compact ones with stable ties only (a packed sort, not the 16-bit
    argsort), and the stable order is the literal sort either way."""
    labels, real = long_rows(12, target_order_module.COMPACT_MIN_LENGTH, seed=0)
    fits = target_order_module._compact_fields(labels.numpy().view(np.int32), real.numpy(),
                                               target_order_module.index_bits(labels.shape[1]), random_ties)[0]
    assert fits.tolist() == [True, True, True, False, False, not random_ties] * 2
    if not random_ties:
        assert torch.equal(numpy_target_order(labels, real, False, 0), literal_order(labels, real))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), length=st.sampled_from([512, 514, 1030]))
def test_each_row_orders_as_it_would_alone(seed, length):
    """Compact and wide keys mixed in one batch: each row's random order is the one it gets alone (at its row),
    so a batch taken in blocks of rows gets the order it gets whole."""
    labels, real = long_rows(6, length, seed)
    order = numpy_target_order(labels, real, True, seed)
    for row in range(labels.shape[0]):
        alone = numpy_target_order(labels[row:row + 1], real[row:row + 1], True, seed, first_row=row)
        assert torch.equal(order[row:row + 1], alone)
    assert_sorts_labels_and_shuffles_only_ties(order, labels, real)


@pytest.mark.parametrize("in_runs", [False, True])
@pytest.mark.parametrize("length", [1, 255, 256, 257, 301, 512, 1000, 1025])
def test_rows_sort_whole_or_in_runs(in_runs, length):
    """Either way of sorting the packed keys sorts every row, whatever is left over past equal runs."""
    values = np.random.default_rng(length).integers(-2 ** 62, 2 ** 62, (3, length))
    values[1] = values[1, ::-1]
    values[2, : length // 2] = 7  # ties
    sorted_rows = values.copy()
    target_order_module.sort_rows_(sorted_rows, in_runs)
    assert np.array_equal(sorted_rows, np.sort(values, axis=1))


@pytest.mark.parametrize("in_runs", [False, True])
@pytest.mark.parametrize("random_ties", [False, True])
def test_wide_keys_order_either_way(in_runs, random_ties, monkeypatch):
    """The target order of long rows of wide keys is the literal sort (stable ties) and sorts the labels (random
    ties) whichever way the rows are sorted."""
    monkeypatch.setattr(target_order_module, "sort_in_runs", lambda: in_runs)
    labels, real = long_rows(12, 700, seed=1)
    order = numpy_target_order(labels, real, random_ties, 3)
    if random_ties:
        assert_sorts_labels_and_shuffles_only_ties(order, labels, real)
    else:
        assert torch.equal(order, literal_order(labels, real))
