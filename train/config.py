"""Command-line flags of `python -m train`. Defaults are the published recipe (GUIDE section 5): ListMLE,
MiniLM-L12-H384-uncased, MS MARCO v1.1, 1 epoch, 16 queries per batch, lr 2e-5, warmup 0.1, linear schedule, bf16,
seed 12, best checkpoint by NanoBEIR R100 mean ndcg@10. `--arch bi-encoder` trains a dot-product retriever instead
(best checkpoint by NanoBEIR mean dense-retrieval ndcg@10)."""

import argparse

from .biencoder import POOLINGS
from .data import BATCH_ORDERS, MSMARCO_HUB_ID
from .losses import LOSS_BACKENDS, reference_unsupported
from .models import ARCHS
from .nanobeir import NANOBEIR_HUB_ID


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Shows the default of every flag that takes a value (not of switches, whose help says what they do)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and action.nargs != 0 and action.default is not None and "default" not in text:
            text += " (default: %(default)s)"
        return text


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
                        "(used by --eval-data heldout)")
    p.add_argument("--val-queries", type=int, default=1000,
                   help="seeded random queries kept out of training for the validation loss (0: none)")
    p.add_argument("--eval-data", default=NANOBEIR_HUB_ID,
                   help="NanoBEIR hub id, a local directory DIR/NanoMSMARCO/{corpus,queries,qrels,bm25}.jsonl, "
                        "or 'heldout' (rerank the held-out rows of --train-data, BM25 top --rerank-k candidates "
                        "from all their passages)")
    p.add_argument("--eval-datasets", default="msmarco,nfcorpus,nq", help="comma-separated NanoBEIR datasets")
    p.add_argument("--rerank-k", type=int, default=100, help="candidates per query reranked in evaluation")
    p.add_argument("--loss", choices=["listmle", "plistmle"], default="listmle")
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
                       help="target ranking = documents sorted by label, ties by --ties")
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
    p.add_argument("--max-docs", type=int, default=None, help="keep at most this many documents per query")
    p.add_argument("--max-length", type=int, default=512,
                   help="max tokens per (query, doc) pair (cross-encoder) or per text (bi-encoder)")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (overrides --epochs)")
    p.add_argument("--eval-steps", type=int, default=500,
                   help="evaluate and checkpoint every N steps (default 500, the published training script's "
                        "eval_steps and save_steps); also at step 0 and at the end")
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast; auto = on for CUDA GPUs that support it")
    p.add_argument("--output-dir", default="output/listmle-minilm")
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="continue from the latest checkpoint in --output-dir, or from the given checkpoint directory")
    p.add_argument("--overwrite-output-dir", action="store_true",
                   help="start afresh in an --output-dir that holds an earlier run: delete its checkpoint-*/, "
                        "best-model/ and logs first (without this flag, such a directory stops the run)")
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
    if args.resume and args.overwrite_output_dir:
        parser.error("--overwrite-output-dir starts a fresh run; it cannot be combined with --resume")
    if reference_unsupported(args):
        parser.error(reference_unsupported(args))
    return args
