"""The loss's share of a real training step: a MiniLM-sized cross-encoder on 16 queries x 10 docs.

Random weights (BertConfig: hidden 384, 12 layers, 12 heads, intermediate 1536 = MiniLM-L12-H384,
the recipe's model) so nothing is downloaded. One step = model forward on 160 (query, doc) pairs,
the loss on the (16, 10) logits, backward through loss and model. Each loss implementation is timed
inside that step and on its own; the share is loss time / step time. A step with a trivial loss
(mean of the logits) gives the floor the loss adds to.
"""

from __future__ import annotations

import contextlib

import torch

from bench import timing
from bench.cases import Case, Inputs, make_inputs
from bench.impls import Impl

QUERIES, DOCS = 16, 10
SEQ_LEN = {"cuda": 128, "cpu": 32}  # tokens per (query, doc) pair; shorter on CPU to keep it minutes


def build_model(device: torch.device):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=1536, num_labels=1)
    torch.manual_seed(0)
    return BertForSequenceClassification(config).to(device).train()


def loss_share(impls: list[Impl], availability: dict, device: torch.device, quick: bool) -> dict:
    try:
        import transformers  # noqa: F401
    except Exception as exc:
        return {"status": f"skipped: transformers not installed ({type(exc).__name__})"}

    if device.type == "cpu" and quick:
        return {"status": "skipped on CPU with --quick: one 12-layer step takes ~10 s here "
                          "(run without --quick, or on CUDA)"}

    model = build_model(device)
    seq_len = SEQ_LEN[device.type]
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, 30000, (QUERIES * DOCS, seq_len), generator=gen).to(device)
    attention_mask = torch.ones_like(input_ids)
    # The recipe trains in bf16 autocast on the GPU.
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext())
    case = Case(QUERIES, DOCS, direction="fwd+bwd", ragged=False, group="train-step")

    def step_with(loss_of_logits):
        def step():
            model.zero_grad(set_to_none=True)
            with autocast:
                logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.view(QUERIES, DOCS)
            loss_of_logits(logits.float()).backward()

        return step

    result = {"status": "ok", "model": "BertForSequenceClassification(hidden 384, 12 layers, 12 heads, "
              "intermediate 1536), random weights", "pairs": QUERIES * DOCS, "seq_len": seq_len,
              "autocast": "bf16" if device.type == "cuda" else "none (fp32)"}
    def time_whole_step(step):
        if device.type == "cpu":  # seconds per step: a few repeats are all the run can afford
            return timing.time_cpu(step, warmup=1, min_repeats=3, min_seconds=0.0)[0]
        return timing.time_step(step, device, quick)[0]

    floor_ms = time_whole_step(step_with(lambda logits: logits.mean()))
    result["step_ms_trivial_loss"] = floor_ms
    per_impl = {}
    for impl in impls:
        available, reason = availability[impl.name]
        if not available:
            per_impl[impl.label] = {"status": reason}
            continue
        accepted, why_not = impl.accepts(case)  # e.g. allRank's listMLE only sorts by labels
        if not accepted:
            per_impl[impl.label] = {"status": f"skipped: {why_not}"}
            continue
        try:
            step = step_with(lambda logits, impl=impl: impl.prepare(case, Inputs(logits, None, None)).loss_fn())
            step_ms = time_whole_step(step)
            alone = timing.make_step(impl.prepare(case, make_inputs(case, device, seed=0)), case)
            # What a step pays for the loss at 16 x 10 includes the host's launches: on CUDA, calls back to
            # back (do_bench's figure would be device time alone), as train.compare times it too.
            loss_ms = (timing.time_back_to_back(alone, device, min_seconds=0.05)[0] if device.type == "cuda"
                       else timing.time_step(alone, device, quick)[0])
            per_impl[impl.label] = {"status": "ok", "step_ms": step_ms, "loss_ms": loss_ms,
                                    "loss_share_pct": 100.0 * loss_ms / step_ms,
                                    "step_over_trivial_ms": step_ms - floor_ms}
        except Exception as exc:
            per_impl[impl.label] = {"status": f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
    result["impls"] = per_impl
    del model
    return result


def format_loss_share(result: dict) -> str:
    if result.get("status") != "ok":
        return f"Loss share of a MiniLM-sized cross-encoder step: {result.get('status')}"
    lines = [f"Loss share of a MiniLM-sized cross-encoder step ({result['pairs']} pairs x {result['seq_len']} tokens, "
             f"{result['autocast']}); step with a trivial loss: {result['step_ms_trivial_loss']:.2f} ms"]
    for label, r in result["impls"].items():
        if r["status"] == "ok":
            lines.append(f"  {label:<12} step {r['step_ms']:9.2f} ms   loss alone {r['loss_ms']:8.4f} ms   "
                         f"share {r['loss_share_pct']:6.3f}%")
        else:
            lines.append(f"  {label:<12} {r['status']}")
    return "\n".join(lines)
