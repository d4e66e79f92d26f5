"""Loading models for training: float32 weights whatever dtype the checkpoint was saved in."""

import pytest
import torch

pytest.importorskip("transformers")

from train.models import ARCHS, load_model  # noqa: E402
from train_fixtures import make_msmarco_rows, make_tiny_bert  # noqa: E402


@pytest.mark.parametrize("arch", ARCHS)
def test_a_bfloat16_checkpoint_trains_float32_weights(tmp_path, arch):
    from transformers import AutoModel
    path = make_tiny_bert(tmp_path / "bert", make_msmarco_rows(4))
    AutoModel.from_pretrained(path).to(torch.bfloat16).save_pretrained(path)  # transformers 5 would load bf16
    model, _ = load_model(arch, path)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
