"""Sorting by labels in the kernel: by counting label groups (triton_listmle._partitioned_by_labels), by sorting
int32 keys of the groups (`_sorted_groups`) or int64 keys of the labels (`_sorted_positions`).

Programs whose real labels all lie a whole number of steps, fewer than `label_groups(block)`, below their row's top
label count the target order; those with fewer than 2^key_group_bits(block) steps sort int32 keys; the others int64
keys. Every way the order must be target_order's (labels compared as float32, descending, stable ties): each case is
checked against the oracle taken in that order, and, where the interpreter runs the kernel, against the path each
program was expected to take. With random ties the two sorts draw the same order from the same seed, the torch
build's, but where two tied documents share the top 16 tie bits that int32 keys keep.
"""

import contextlib
from unittest import mock

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import listmle_kernels.triton_listmle as triton_listmle
from listmle_kernels import listmle_loss
from listmle_kernels.target_order import hashed_tie_bits, target_order, torch_target_order
from listmle_kernels.validation import draw_seed
from reference import listmle_reference

from cases import DEVICE, GRAD_TOL, LOSS_TOL, assert_close

LABEL_DTYPES = (torch.int64, torch.int32, torch.uint8, torch.bool, torch.float32, torch.float16, torch.bfloat16,
                torch.float64)
INTERPRETED = DEVICE == "cpu"  # only the interpreter runs the kernel's Python, where a helper can be watched


@contextlib.contextmanager
def programs_calling(helper):
    """A list that gets one entry for each program that calls the kernel's `helper` (the interpreter looks the
    kernel's helpers up when it calls them); on a GPU it stays empty and is not checked."""
    calls = []
    original = getattr(triton_listmle, helper)

    def watched(*args, **kwargs):
        calls.append(True)
        return original(*args, **kwargs)

    with mock.patch.object(triton_listmle, helper, watched):
        yield calls


def counted_programs():
    """`programs_calling` the helper that counts the order."""
    return programs_calling("_partitioned_by_labels")


def programs(batch, length):
    """Programs the launcher starts for rows sorted in the kernel (no SM count under the interpreter)."""
    sort_in_kernel, block, chunks = triton_listmle.row_geometry(length, True)
    assert sort_in_kernel
    rows, _ = triton_listmle.launch_config(block, chunks, batch, True, triton_listmle.sm_count(torch.device(DEVICE)))
    return -(-batch // rows)


def groups_at(length):
    return triton_listmle.label_groups(triton_listmle.row_geometry(length, True)[1], random_ties=False)


def kernel_loss_and_grad(scores, labels, **kwargs):
    leaf = scores.to(DEVICE).requires_grad_(True)
    kwargs = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    loss = listmle_loss(leaf, labels.to(DEVICE), respect_input_order=False, reduction="none", backend="triton",
                        **kwargs)
    (grad,) = torch.autograd.grad(loss.sum(), leaf)
    return loss.detach().cpu(), grad.cpu()


def oracle_loss_and_grad(scores, labels, real, order=None):
    """The float64 reference in target_order's order (stable ties), or in `order`: the scores gathered in that
    order, real documents first, then the literal ListMLE in input order, its gradient carried back by autograd."""
    if order is None:
        order = target_order(labels, real, random_ties=False, seed=0)
    leaf = scores.double().requires_grad_(True)
    loss = listmle_reference(leaf.gather(1, order), mask=real.gather(1, order), reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), leaf)
    return loss.detach(), grad


def real_of(scores, mask=None, lengths=None):
    if mask is not None:
        return mask
    if lengths is not None:
        return torch.arange(scores.shape[1])[None, :] < lengths[:, None]
    return torch.ones(scores.shape, dtype=torch.bool)


def assert_matches_oracle(scores, labels, mask=None, lengths=None, counted=None, narrow=None, wide=None, order=None,
                          **kwargs):
    """The kernel against the oracle (in `order`, default the stable one); `counted`, `narrow`, `wide`: how many
    programs must have counted their order, sorted int32 keys, sorted int64 keys."""
    padding = {} if mask is None and lengths is None else dict(mask=mask) if mask is not None else dict(lengths=lengths)
    with counted_programs() as counts, programs_calling("_sorted_groups") as narrow_sorts, \
            programs_calling("_sorted_positions") as wide_sorts:
        loss, grad = kernel_loss_and_grad(scores, labels, **padding, **kwargs)
    ref_loss, ref_grad = oracle_loss_and_grad(scores, labels, real_of(scores, mask, lengths), order)
    assert_close(loss, ref_loss, scores.dtype, LOSS_TOL, scale=max(1.0, ref_loss.abs().max().item()))
    assert_close(grad, ref_grad, scores.dtype, GRAD_TOL, scale=max(1.0, ref_grad.abs().max().item()))
    assert (grad[~real_of(scores, mask, lengths)] == 0).all()  # padding: written, and 0
    if INTERPRETED:
        for expected, calls in ((counted, counts), (narrow, narrow_sorts), (wide, wide_sorts)):
            assert expected is None or len(calls) == expected, (len(counts), len(narrow_sorts), len(wide_sorts))


@st.composite
def graded_problems(draw, max_batch=4, max_length=40, wide=False):
    """Integer-step labels below each row's top: fewer steps than counting takes, or (`wide`) from that many up to
    5000, which int32 keys hold."""
    batch, length = draw(st.integers(1, max_batch)), draw(st.integers(1, max_length))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    label_dtype = draw(st.sampled_from([dtype for dtype in LABEL_DTYPES if not wide or dtype.itemsize > 1]))
    if wide:
        span = draw(st.integers(groups_at(length), 5000))
    else:
        span = draw(st.integers(0, 1 if label_dtype == torch.bool else groups_at(length) - 1))
    labels = torch.randint(0, span + 1, (batch, length), generator=generator)
    if label_dtype not in (torch.uint8, torch.bool):
        labels += draw(st.sampled_from([0, -3, 1000]))  # the groups count down from each row's top, wherever it is
    labels = labels.to(label_dtype)
    score_dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16]))
    scores = (torch.randn(batch, length, generator=generator) * draw(st.sampled_from([1.0, 25.0]))).to(score_dtype)
    padding = draw(st.sampled_from(["none", "mask", "lengths"]))
    kwargs = {}
    if padding == "mask":
        kwargs["mask"] = torch.rand(batch, length, generator=generator) < 0.7
        if label_dtype not in (torch.uint8, torch.bool):
            labels = labels.masked_fill(~kwargs["mask"], 99)  # padding ignored
    elif padding == "lengths":
        kwargs["lengths"] = torch.randint(0, length + 1, (batch,), generator=generator)
    return scores, labels, kwargs


@given(problem=graded_problems())
def test_graded_labels_are_counted_in_target_order(problem):
    scores, labels, kwargs = problem
    assert_matches_oracle(scores, labels, counted=programs(*scores.shape), **kwargs)


@given(problem=graded_problems(wide=True))
def test_labels_of_more_steps_sort_int32_keys(problem):
    """Steps from label_groups(block) up: no program counts, and none needs int64 keys (half-precision labels round
    to other integers, still in steps)."""
    scores, labels, kwargs = problem
    assert_matches_oracle(scores, labels, wide=0, **kwargs)


@pytest.mark.parametrize("ties", ["stable", "random"])
@pytest.mark.parametrize("length", [3, 16, 40])
@pytest.mark.parametrize("past_the_limit", [False, True])
def test_int32_keys_hold_their_groups_and_one_more_step_takes_int64(ties, length, past_the_limit):
    """Two rows a program, each spanning 2^key_group_bits - 1 steps (the most an int32 key holds), or one more.
    Distinct labels, so random ties give the stable order too: a tie field that overlapped the groups would not."""
    block = triton_listmle.row_geometry(length, True)[1]
    span = 2 ** triton_listmle.key_group_bits(block, ties == "random") - 1 + past_the_limit
    generator = torch.Generator().manual_seed(length)
    labels = torch.stack([torch.cat([torch.tensor([span]), torch.randperm(length - 2, generator=generator) + 1,
                                     torch.tensor([0])]) for _ in range(2)]).to(torch.float64)
    scores = torch.randn(2, length, generator=generator)
    with mock.patch.object(triton_listmle, "launch_config", lambda *args: (2, 1)):
        assert_matches_oracle(scores, labels, counted=0, narrow=0 if past_the_limit else 1,
                              wide=1 if past_the_limit else 0, ties=ties, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("padding", ["none", "mask", "lengths"])
def test_random_ties_draw_the_same_order_from_int32_and_int64_keys(seed, padding):
    """Graded labels with random ties sort int32 keys; with no group bits to spare (key_group_bits 0) the same rows
    sort int64 keys. The int32 key keeps the top 16 of the tie bits the int64 one keeps 25 of, so the orders agree
    unless two tied documents of a row draw the same 16 (odds about 1 in 100 for these rows; none for these
    seeds): the losses and gradients are equal, bit for bit."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (6, 40), generator=generator)
    labels[:, :2] = torch.tensor([0, 4])  # two groups in every row, so none fits in one group
    scores = torch.randn(6, 40, generator=generator)
    kwargs = (dict(mask=torch.rand(6, 40, generator=generator) < 0.7) if padding == "mask" else
              dict(lengths=torch.tensor([40, 0, 2, 17, 39, 23])) if padding == "lengths" else {})
    draws = {}
    for group_bits in (None, 0):
        patch = (contextlib.nullcontext() if group_bits is None
                 else mock.patch.object(triton_listmle, "key_group_bits", lambda *args: group_bits))
        with patch, programs_calling("_sorted_groups") as narrow, programs_calling("_sorted_positions") as wide:
            draws[group_bits] = kernel_loss_and_grad(scores, labels, ties="random",
                                                     generator=torch.Generator().manual_seed(seed), **kwargs)
        if INTERPRETED:
            assert bool(narrow) == (group_bits is None) and bool(wide) == (group_bits == 0)
    for narrow_keys, wide_keys in zip(draws[None], draws[0]):
        torch.testing.assert_close(narrow_keys, wide_keys, rtol=0, atol=0)


@pytest.mark.parametrize("labels_kind, seed", [("graded", 1), ("graded", 2), ("steps of 0.3", 1), ("steps of 0.3", 2)])
@pytest.mark.parametrize("padding", ["none", "mask", "lengths"])
def test_random_ties_are_the_torch_builds_order(labels_kind, seed, padding):
    """The kernel's tie bits are target_order.hashed_tie_bits': its random order is torch_target_order's for the same
    seed, as rows too long for the kernel take it on CUDA. Labels in steps of 0.3 (int64 keys) agree always; graded
    ones (int32 keys, 16 of the tie bits) unless two tied documents of a row draw the same 16 (none here)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (6, 40), generator=generator).float()
    if labels_kind != "graded":
        labels = labels * 0.3 + 0.05
    scores = torch.randn(6, 40, generator=generator)
    kwargs = (dict(mask=torch.rand(6, 40, generator=generator) < 0.7) if padding == "mask" else
              dict(lengths=torch.tensor([40, 0, 2, 17, 39, 23])) if padding == "lengths" else {})
    real = real_of(scores, **kwargs)
    order = torch_target_order(labels, real, True, draw_seed(torch.Generator().manual_seed(seed)))
    with programs_calling("_sorted_groups") as narrow, programs_calling("_sorted_positions") as wide:
        loss, grad = kernel_loss_and_grad(scores, labels, ties="random", generator=torch.Generator().manual_seed(seed),
                                          **kwargs)
    if INTERPRETED:
        assert (bool(narrow), bool(wide)) == ((True, False) if labels_kind == "graded" else (False, True))
    ref_loss, ref_grad = oracle_loss_and_grad(scores, labels, real, order)
    assert_close(loss, ref_loss, scores.dtype, LOSS_TOL, scale=max(1.0, ref_loss.abs().max().item()))
    assert_close(grad, ref_grad, scores.dtype, GRAD_TOL, scale=max(1.0, ref_grad.abs().max().item()))
    stable_loss, _ = oracle_loss_and_grad(scores, labels, real)
    assert not torch.allclose(loss.double(), stable_loss)  # the ties were shuffled


def test_tied_documents_that_share_16_tie_bits_keep_input_order_on_int32_keys():
    """int32 keys keep the top 16 of the tie bits: two tied documents that draw the same 16 keep their input order,
    where the int64 keys and the torch build order them by their further bits. Seed 2859, 16 documents: 9 and 11
    collide, and the torch build puts 11 first; the kernel's order is the torch build's with 9 back before 11."""
    generator_seed, length = 2859, 16
    seed = draw_seed(torch.Generator().manual_seed(generator_seed))
    top_bits = hashed_tie_bits(1, length, seed, 16, "cpu")[0]
    assert top_bits[9] == top_bits[11]  # the collision this case is about
    labels = torch.zeros(1, length, dtype=torch.int64)
    labels[0, 0] = 1  # two groups: the int32 keys' path, not a single group
    scores = torch.randn(1, length, generator=torch.Generator().manual_seed(12))
    real = torch.ones(1, length, dtype=torch.bool)
    torch_order = torch_target_order(labels, real, True, seed)[0].tolist()
    first, second = torch_order.index(11), torch_order.index(9)
    assert first < second
    torch_order[first], torch_order[second] = 9, 11
    assert_matches_oracle(scores, labels, counted=0, narrow=1, wide=0, order=torch.tensor([torch_order]),
                          ties="random", generator=torch.Generator().manual_seed(generator_seed))


# Full rows of 2, 8, 128 and 512 slots fill 63 bits with groups of log2(block) bits: the last document, of the lowest
# group, counts BLOCK in the top field, which carries into the sign bit. 2048 slots: the fewest groups (5). The sort of
# 2048 slots is slow in the interpreter, and is tested past the limit at shorter rows.
@pytest.mark.parametrize("length, past_the_limit", [(length, past) for length in [2, 5, 8, 16, 40, 128, 130, 512]
                                                    for past in (False, True)] + [(2048, False)])
def test_span_at_the_limit_is_counted_and_one_past_is_sorted(length, past_the_limit):
    """Labels top - k for k in [0, groups]: groups - 1 steps fit, one more does not."""
    groups = groups_at(length)
    span = groups if past_the_limit else groups - 1
    generator = torch.Generator().manual_seed(length)
    labels = 7.0 - torch.randint(0, span + 1, (3, length), generator=generator).float()
    labels[:, 0], labels[:, -1] = 7.0, 7.0 - span  # every row spans exactly `span`
    scores = torch.randn(3, length, generator=generator)
    assert_matches_oracle(scores, labels, counted=0 if past_the_limit else programs(3, length))


@pytest.mark.parametrize("misfit", ["wide", "fraction", "inf", "-inf"])
def test_one_row_that_misses_makes_its_program_sort(misfit):
    """Two rows a program: the program holding the row that misses sorts, the other counts."""
    generator = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 5, (4, 12), generator=generator).float()
    labels[3, 4] = {"wide": 40.0, "fraction": 2.5, "inf": float("inf"), "-inf": float("-inf")}[misfit]
    scores = torch.randn(4, 12, generator=generator)
    with mock.patch.object(triton_listmle, "launch_config", lambda *args: (2, 1)):
        assert_matches_oracle(scores, labels, counted=1)


def test_a_nan_label_sorts_as_before():
    """NaN has no rank order (validate=False lets it through): its program takes the sort, bit for bit what the
    kernel gives with counting off."""
    generator = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 5, (4, 12), generator=generator).float()
    labels[3, 4] = float("nan")
    scores = torch.randn(4, 12, generator=generator)
    with mock.patch.object(triton_listmle, "launch_config", lambda *args: (2, 1)):
        with counted_programs() as calls:
            loss, grad = kernel_loss_and_grad(scores, labels, validate=False)
        with mock.patch.object(triton_listmle, "label_groups", lambda *args: 0):
            sorted_loss, sorted_grad = kernel_loss_and_grad(scores, labels, validate=False)
    torch.testing.assert_close(loss, sorted_loss, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(grad, sorted_grad, rtol=0, atol=0, equal_nan=True)
    if INTERPRETED:
        assert len(calls) == 1


def test_steps_of_one_that_are_not_integers_are_counted():
    """Only the differences below the top count: labels 0.5, 1.5, 2.5 are three groups."""
    generator = torch.Generator().manual_seed(6)
    labels = torch.randint(0, 3, (3, 20), generator=generator).float() + 0.5
    assert_matches_oracle(torch.randn(3, 20, generator=generator), labels, counted=programs(3, 20))


@pytest.mark.parametrize("labels", [[1.0, 1e-9, 0.0, 1e-9, 1.0, 0.0], [3.0, 2.0000002, 2.0, 1.0, 2.0000002, 3.0],
                                    [0.0, 0.3, 0.3, 0.0, 1.0, 0.3], [1e-40, 0.0, 1.0, 1e-40, 0.0, 1.0]])
def test_labels_that_round_onto_a_group_are_sorted(labels):
    """1 - 1e-9 rounds to 1 in float32, as 1 - 0 does: the group would merge two labels; top - group does not give
    1e-9 back, so the program sorts, and 1e-9 stays above 0. A subnormal label is not 0 either (a compare that
    flushed subnormals to zero would merge them on a GPU)."""
    labels = torch.tensor([labels])
    assert_matches_oracle(torch.randn(1, 6, generator=torch.Generator().manual_seed(7)), labels, counted=0)


def test_nan_padding_labels_are_ignored():
    generator = torch.Generator().manual_seed(8)
    labels = torch.randint(0, 4, (3, 16), generator=generator).float()
    mask = torch.rand(3, 16, generator=generator) < 0.6
    labels[~mask] = float("nan")
    assert_matches_oracle(torch.randn(3, 16, generator=generator), labels, mask=mask, counted=programs(3, 16))


def test_integer_labels_past_float32_precision_compare_as_float32():
    """2^30 + k rounds to 2^30 for k < 64 in float32: those labels tie, as target_order compares them, and the row
    counts; 2^30 + 128 is one float32 step up, not a group step of one, so that row sorts."""
    generator = torch.Generator().manual_seed(9)
    labels = 2 ** 30 + torch.randint(0, 3, (2, 10), generator=generator)
    labels[1, 3] = 2 ** 30 + 128
    with mock.patch.object(triton_listmle, "launch_config", lambda *args: (1, 1)):
        assert_matches_oracle(torch.randn(2, 10, generator=generator), labels, counted=1)


def test_random_ties_always_sort():
    generator = torch.Generator().manual_seed(10)
    labels = torch.randint(0, 3, (3, 16), generator=generator)
    scores = torch.randn(3, 16, generator=generator)
    with counted_programs() as calls:
        first = listmle_loss(scores.to(DEVICE), labels.to(DEVICE), respect_input_order=False, ties="random",
                             generator=torch.Generator().manual_seed(1), backend="triton", reduction="none")
        again = listmle_loss(scores.to(DEVICE), labels.to(DEVICE), respect_input_order=False, ties="random",
                             generator=torch.Generator().manual_seed(1), backend="triton", reduction="none")
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("padding", ["mask", "lengths"])
def test_loss_without_the_gradient(dtype, padding):
    """No gradient row to pass the positions through: a 16-bit scratch row takes its place."""
    generator = torch.Generator().manual_seed(11)
    scores = torch.randn(4, 24, generator=generator).to(dtype)
    labels = torch.randint(0, 5, (4, 24), generator=generator)
    kwargs = (dict(mask=torch.rand(4, 24, generator=generator) < 0.7) if padding == "mask"
              else dict(lengths=torch.tensor([24, 0, 7, 13])))
    with counted_programs() as calls, torch.no_grad():
        loss = listmle_loss(scores.to(DEVICE), labels.to(DEVICE), respect_input_order=False, reduction="none",
                            backend="triton", **{k: v.to(DEVICE) for k, v in kwargs.items()})
    ref_loss, _ = oracle_loss_and_grad(scores, labels, real_of(scores, **kwargs))
    assert_close(loss.cpu(), ref_loss, dtype, LOSS_TOL, scale=max(1.0, ref_loss.abs().max().item()))
    if INTERPRETED:
        assert len(calls) == programs(4, 24)


def test_label_groups_fit_the_int64_fields():
    """g F + F <= 63 for every group g < label_groups(block): the counts stay below the sign bit."""
    for bits in range(0, 12):
        block = 1 << bits
        groups = triton_listmle.label_groups(block, random_ties=False)
        field = max(1, bits)
        assert groups * field <= 63 < (groups + 1) * field
        assert triton_listmle.label_groups(block, random_ties=True) == 0
    assert triton_listmle.label_groups(1024, False) >= 5  # graded relevance 0..4 at the bench's rows
