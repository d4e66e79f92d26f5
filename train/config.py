"""Command-line flags of `python -m train`. Defaults are the published model card's recipe: ListMLE,
MiniLM-L12-H384-uncased, MS MARCO v1.1, 1 epoch, 16 queries per batch, lr 2e-5, warmup 0.1, linear schedule, bf16,
seed 12, best checkpoint by NanoBEIR R100 mean ndcg@10. `--arch bi-encoder` trains a dot-product retriever instead
(best checkpoint by NanoBEIR mean dense-retrieval ndcg@10)."""

import argparse

from .logging_setup import add_logging_flags
from .biencoder import POOLINGS
from .data import BATCH_ORDERS, MSMARCO_HUB_ID
from .losses import LOSS_BACKENDS, reference_unsupported
from .models import ARCHS
from .nanobeir import NANOBEIR_HUB_ID


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Shows the default of every flag that takes a value, and "(off by default)" for a switch that is off unless
    given; a help text that already speaks of its default is left as it is (a flag whose default is None says in
    its help what happens without it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or "default" in text:
            return text
        if action.nargs == 0:
            return text + " (off by default)" if action.default in (False, None) else text
        return text + " (default: %(default)s)" if action.default is not None else text


def build_parser():
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__, formatter_class=DefaultsHelpFormatter)
    p.add_argument("--model", default="microsoft/MiniLM-L12-H384-uncased", help="hub id or local model directory")
    p.add_argument("--arch", choices=ARCHS, default="cross-encoder",
                   help="cross-encoder: a one-label reranker scoring (query, passage) pairs, evaluated by reranking; "
                        "bi-encoder: one shared encoder for queries and passages, dot-product scores, evaluated by "
                        "full-corpus dense retrieval")
    p.add_argument("--pooling", choices=POOLINGS, default="cls", help="bi-encoder: text embedding = [CLS] or mean")
    p.add_argument("--in-batch-negatives", action="store_true",
                   help="bi-encoder: also score each query against the other queries' passages of the batch "
                        "(appended to its list as negatives)")
    p.add_argument("--candidates", default="bm25",
                   help="cross-encoder evaluation first stage: 'bm25' or 'dense:MODEL_DIR' (the top --rerank-k of a "
                        "bi-encoder saved by --arch bi-encoder)")
    p.add_argument("--train-data", default=MSMARCO_HUB_ID,
                   help="hub id (config v1.1, split train) or a local JSON/JSONL file in the ms_marco v1.1 schema")
    p.add_argument("--train-queries", type=int, default=None,
                   help="train on the first N rows of --train-data only; the rows after them are held out "
                        "(used by --eval-data heldout); default: every row, none held out")
    p.add_argument("--val-queries", type=int, default=1000,
                   help="seeded random queries kept out of training for the validation loss (0: none)")
    p.add_argument("--eval-data", default=NANOBEIR_HUB_ID,
                   help="NanoBEIR hub id, a local directory DIR/NanoMSMARCO/{corpus,queries,qrels,bm25}.jsonl, "
                        "or 'heldout' (rerank the held-out rows of --train-data, BM25 top --rerank-k candidates "
                        "from all their passages)")
    p.add_argument("--eval-datasets", default="msmarco,nfcorpus,nq", help="comma-separated NanoBEIR datasets")
    p.add_argument("--rerank-k", type=int, default=100, help="candidates per query reranked in evaluation")
    p.add_argument("--loss", choices=["listmle", "plistmle"], default="listmle",
                   help="listmle: ListMLE; plistmle: p-ListMLE, ListMLE with sentence-transformers' default "
                        "position weights (PListMLELambdaWeight)")
    p.add_argument("--loss-backend", choices=LOSS_BACKENDS, default="auto",
                   help="listmle_loss backend: auto = fused Triton kernel on CUDA, PyTorch elsewhere; reference = "
                        "the literal oracle reference.listmle_reference through autograd (slow, stable ties only; "
                        "for `python -m train.compare`)")
    p.add_argument("--ties", choices=["stable", "random"], default="stable",
                   help="order among equal labels when sorting by labels")
    order = p.add_mutually_exclusive_group()
    order.add_argument("--respect-input-order", dest="respect_input_order", action="store_true", default=True,
                       help="target ranking = input order (positives first), the recipe's setting (default)")
    order.add_argument("--sort-by-labels", dest="respect_input_order", action="store_false",
                       help="target ranking = documents sorted by label, ties by --ties; off by default")
    p.add_argument("--batch-size", type=int, default=16, help="queries per batch and process")
    p.add_argument("--batch-order", choices=BATCH_ORDERS, default="loop",
                   help="how each epoch's shuffle is seeded: loop = seed * 1000 + epoch; trainer = seed + epoch, the "
                        "batches sentence-transformers' CrossEncoderTrainer draws with the same seed")
    p.add_argument("--pairs-per-forward", type=int, default=None,
                   help="cross-encoder: score a batch's (query, passage) pairs this many at a time, each forward "
                        "padded to its own longest pair, as sentence-transformers' ListMLELoss(mini_batch_size=N) "
                        "does (the published script: 16); default: all pairs of the batch in one forward. Same "
                        "loss; differs in memory, speed, padding and the dropout masks drawn")
    p.add_argument("--eval-batch-size", type=int, default=64, help="(query, doc) pairs per scoring batch")
    p.add_argument("--max-docs", type=int, default=None,
                   help="keep the first N documents per query, positives first; default: all of them")
    p.add_argument("--max-length", type=int, default=512,
                   help="max tokens per (query, doc) pair (cross-encoder) or per text (bi-encoder)")
    p.add_argument("--lr", type=float, default=2e-5,
                   help="peak learning rate of AdamW, reached after the warmup, then decayed linearly to 0 at the "
                        "last step")
    p.add_argument("--warmup-ratio", type=float, default=0.1,
                   help="the first ceil(ratio * steps) steps raise the learning rate linearly from 0")
    p.add_argument("--epochs", type=int, default=1, help="passes over the training queries")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many steps (overrides --epochs; the schedule spans them); default: --epochs "
                        "epochs")
    p.add_argument("--eval-steps", type=int, default=500,
                   help="evaluate and checkpoint every N steps (default 500, the published training script's "
                        "eval_steps and save_steps); also at step 0 and at the end")
    p.add_argument("--seed", type=int, default=12,
                   help="seeds python, numpy and torch (the new head's initial weights, dropout), the validation "
                        "split and each epoch's shuffle")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto = cuda when a GPU is visible, else cpu")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast; auto = on for CUDA GPUs that support it")
    p.add_argument("--output-dir", default="output/listmle-minilm",
                   help="where the logs, checkpoint-<step>/ and best-model/ go")
    p.add_argument("--save-total-limit", type=int, default=2,
                   help="keep the last N checkpoint-<step>/ directories, deleting older ones (the published "
                        "script's save_total_limit; best-model/ is kept apart)")
    p.add_argument("--save-only-model", action="store_true",
                   help="checkpoints hold the model and tokenizer only, without the optimizer (AdamW's two moments "
                        "per weight), scheduler and RNG states; --resume cannot continue from them")
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="continue exactly from the latest checkpoint in --output-dir, or from the given checkpoint "
                        "directory; off by default (a fresh run)")
    p.add_argument("--overwrite-output-dir", action="store_true",
                   help="start afresh in an --output-dir that holds an earlier run: delete its checkpoint-*/, "
                        "best-model/ and logs first (without this flag, such a directory stops the run)")
    add_logging_flags(p)
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.arch == "bi-encoder" and args.candidates != "bm25":
        parser.error("--candidates applies to --arch cross-encoder (a bi-encoder is evaluated by dense retrieval)")
    if args.pairs_per_forward is not None and args.pairs_per_forward < 1:
        parser.error(f"--pairs-per-forward must be at least 1, got {args.pairs_per_forward}")
    if args.pairs_per_forward is not None and args.arch == "bi-encoder":
        parser.error("--pairs-per-forward applies to --arch cross-encoder (a bi-encoder encodes texts, not pairs)")
    if args.eval_steps < 1:
        parser.error(f"--eval-steps must be at least 1, got {args.eval_steps}")
    if args.save_total_limit < 1:
        parser.error(f"--save-total-limit must be at least 1, got {args.save_total_limit}")
    if args.resume and args.overwrite_output_dir:
        parser.error("--overwrite-output-dir starts a fresh run; it cannot be combined with --resume")
    if reference_unsupported(args):
        parser.error(reference_unsupported(args))
    return args
