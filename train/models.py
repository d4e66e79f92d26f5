"""Loading and saving the two model kinds `python -m train --arch` trains.

cross-encoder: AutoModelForSequenceClassification with one label (the score of a (query, passage) pair).
bi-encoder:    AutoModel, a shared encoder for queries and passages (train/biencoder.py), saved with its pooling.
"""

from .biencoder import save_biencoder
from .hub import hub_unavailable

ARCHS = ("cross-encoder", "bi-encoder")


def model_class(arch):
    """A loader path -> model with float32 weights. transformers 5 keeps a checkpoint's own dtype by
    default, and a bfloat16 checkpoint would then train bfloat16 weights: bf16 autocast computes in
    bfloat16 anyway, while the weights and the optimizer stay float32."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification
    if arch == "cross-encoder":
        return lambda path: AutoModelForSequenceClassification.from_pretrained(path, num_labels=1,
                                                                                dtype=torch.float32)
    if arch == "bi-encoder":
        return lambda path: AutoModel.from_pretrained(path, dtype=torch.float32)
    raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")


def load_model(arch, path):
    """(model, tokenizer) from a local directory or hub id; a hub id that cannot be loaded raises
    HubUnavailableError with the offline flags."""
    from transformers import AutoTokenizer
    try:
        return model_class(arch)(path), AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise hub_unavailable(path, exc) from exc


def save_model(arch, model, tokenizer, path, pooling=None, max_length=512):
    if arch == "bi-encoder":
        save_biencoder(model, tokenizer, path, pooling, max_length)
    else:
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
