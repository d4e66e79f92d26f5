"""Batched inference shared by the evaluations: longest inputs first, torch.inference_mode, bf16 autocast."""

import torch
from tqdm.auto import tqdm

from .logging_setup import show_progress_bars


def run_batched(model, items, forward, batch_size, device, bf16=False, length=len, desc="scoring", progress=True):
    """forward(list of items) -> tensor with one row per item; returns those rows for all items, in the order given,
    as a float32 CPU tensor. Batches go longest first: similar lengths waste little padding, and an out-of-memory
    shows up at once. The model is put in eval mode for the call and its mode restored after. A progress bar shows
    when `progress` and train/logging_setup.py allow one."""
    order = sorted(range(len(items)), key=lambda i: -length(items[i]))
    chunks = []
    was_training = model.training
    model.eval()
    with torch.inference_mode(), torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                                                enabled=bf16):
        hidden = not (progress and show_progress_bars())
        for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, disable=hidden):
            chunk = order[start : start + batch_size]
            chunks.append((chunk, forward([items[i] for i in chunk]).float().cpu()))
    model.train(was_training)
    if not chunks:
        return torch.zeros(0)
    out = torch.empty((len(items),) + chunks[0][1].shape[1:])
    for chunk, values in chunks:
        out[chunk] = values
    return out
