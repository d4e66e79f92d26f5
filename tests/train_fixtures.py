"""Offline test material for train/: ms_marco-schema rows, a NanoBEIR directory and a tiny random BERT, all made here.

The synthetic task is learnable by a tiny model: a query "what is the <topic> <thing>" has positive passages
that repeat its topic words; negatives talk about other topics.
"""

import json
import os
import random
import sys

# The tests import the `train` package from the repository root; make that work under a bare `pytest` too.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from train.loop import read_jsonl  # noqa: E402,F401  (tests read the logs as train.compare does)

TOPICS = ["apple", "river", "engine", "violin", "glacier", "copper", "falcon", "tulip", "comet", "harbor",
          "pepper", "marble", "canyon", "lantern", "meadow", "oyster"]
THINGS = ["price", "colour", "history", "size", "origin", "use"]
FILLER = ["the", "a", "is", "of", "and", "in", "it", "for", "many", "people", "often", "say", "that", "very"]


def _sentence(rng, topic, thing, n=12):
    words = [rng.choice(FILLER) for _ in range(n)]
    words[rng.randrange(n)] = topic
    words[rng.randrange(n)] = thing
    return " ".join(words) + "."


def make_msmarco_rows(n=48, seed=0, no_positive_every=7):
    """Rows in the hub schema of microsoft/ms_marco v1.1 with 3-8 passages each; every `no_positive_every`-th row
    has no selected passage; some rows select two passages; positives sit anywhere in the list."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic, thing = rng.choice(TOPICS), rng.choice(THINGS)
        n_docs = rng.randint(3, 8)
        n_pos = 0 if (no_positive_every and i % no_positive_every == no_positive_every - 1) else rng.choice([1, 1, 2])
        texts, selected = [], []
        for j in range(n_docs):
            if j < n_pos:
                texts.append(_sentence(rng, topic, thing) + " " + _sentence(rng, topic, thing))
                selected.append(1)
            else:
                other = rng.choice([t for t in TOPICS if t != topic])
                texts.append(_sentence(rng, other, rng.choice(THINGS)) + " " + _sentence(rng, other, thing))
                selected.append(0)
        order = list(range(n_docs))
        rng.shuffle(order)
        rows.append({
            "answers": ["x"], "query": f"what is the {topic} {thing}", "query_id": 1000 + i, "query_type": "DESCRIPTION",
            "wellFormedAnswers": [],
            "passages": {"is_selected": [selected[k] for k in order], "passage_text": [texts[k] for k in order],
                         "url": [f"http://example.com/{i}/{k}" for k in order]},
        })
    return rows


def write_json(path, rows):
    with open(path, "w") as f:
        json.dump(rows, f)
    return str(path)


def write_nanobeir_dir(root, rows, split="NanoMSMARCO"):
    """DIR/<split>/{corpus,queries,qrels,bm25}.jsonl from ms_marco rows; 'bm25' lists every passage of the row
    followed by passages of the next rows, so some candidates belong to other queries."""
    d = os.path.join(root, split)
    os.makedirs(d, exist_ok=True)
    corpus, queries, qrels, bm25 = [], [], [], []
    for i, row in enumerate(rows):
        queries.append({"_id": f"q{i}", "text": row["query"]})
        for j, (text, sel) in enumerate(zip(row["passages"]["passage_text"], row["passages"]["is_selected"])):
            corpus.append({"_id": f"d{i}_{j}", "text": text})
            if sel:
                qrels.append({"query-id": f"q{i}", "corpus-id": f"d{i}_{j}", "score": 1})
    for i, row in enumerate(rows):
        if not any(q["query-id"] == f"q{i}" for q in qrels):
            continue  # like NanoBEIR: only queries with qrels have a bm25 row
        ids = [f"d{i}_{j}" for j in range(len(row["passages"]["passage_text"]))]
        nxt = rows[(i + 1) % len(rows)]
        ids += [f"d{(i + 1) % len(rows)}_{j}" for j in range(len(nxt["passages"]["passage_text"]))]
        bm25.append({"query-id": f"q{i}", "corpus-ids": ids})
    for name, table in (("corpus", corpus), ("queries", queries), ("qrels", qrels), ("bm25", bm25)):
        with open(os.path.join(d, f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in table)
    return str(root)


def make_tiny_bert(path, rows, dropout=0.1, seed=0):
    """A randomly initialised 2-layer BERT (hidden 32) and a WordPiece tokenizer trained here on the rows' text,
    saved as a transformers model directory (BertModel: the one-label head is created when it is loaded)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    texts = [r["query"] for r in rows] + [t for r in rows for t in r["passages"]["passage_text"]]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tokenizer = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout, initializer_range=0.2)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def make_training_material(root):
    """What the training tests share: 48 rows as JSON, a NanoBEIR directory of the last 16, tiny BERTs."""
    rows = make_msmarco_rows(48)
    return {
        "rows": write_json(root / "rows.json", rows),
        "nano": write_nanobeir_dir(root / "nano", rows[32:]),
        "bert": make_tiny_bert(root / "bert", rows, dropout=0.1),
        "bert_no_dropout": make_tiny_bert(root / "bert0", rows, dropout=0.0),
    }


def training_args(material, out, model="bert"):
    """The `python -m train` flags every training test starts from."""
    return ["--model", material[model], "--train-data", material["rows"], "--max-length", "64",
            "--output-dir", str(out), "--device", "cpu", "--seed", "5"]


def assert_resume_is_exact(train_main, full_args, resumed_args, argv, full, resumed):
    """Train 6 steps; resume a copy killed after step 3's checkpoint (with a stray log line past it):
    the resumed run must log exactly what the uninterrupted one did."""
    import json
    import shutil

    assert train_main(full_args + argv) == 0
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "checkpoint-6")  # as if the run had died after step 3's checkpoint...
    with open(resumed / "train_log.jsonl", "a") as f:  # ...having logged a step past it
        f.write(json.dumps({"step": 4, "loss": -1.0}) + "\n")
    assert train_main(resumed_args + argv + ["--resume"]) == 0

    def strip(records):
        return [{k: v for k, v in r.items() if k != "queries_per_s"} for r in records]

    resumed_log = read_jsonl(resumed / "train_log.jsonl")
    assert [r["step"] for r in resumed_log] == [1, 2, 3, 4, 5, 6]
    assert strip(resumed_log) == strip(read_jsonl(full / "train_log.jsonl"))  # same losses, lrs, grad norms
    assert read_jsonl(resumed / "eval_results.jsonl") == read_jsonl(full / "eval_results.jsonl")
    assert best_so_far(resumed / "checkpoint-6") == best_so_far(full / "checkpoint-6")


def best_so_far(checkpoint):
    """The best model's step and score as a checkpoint records them."""
    import torch
    return torch.load(checkpoint / "trainer_state.pt", weights_only=False)["best"]


def assert_two_processes_match_one(train_main, args_for, tmp_path, rel):
    """2 gloo processes x 2 queries see the same global batches as 1 process x 4 queries, so the logged
    (all-reduced) losses agree (`args_for(out)`: a run's flags, on a model without dropout); rank 1's RNG
    state is checkpointed and the best model saved. Returns the torchrun run (its stderr holds both ranks')."""
    import subprocess

    import pytest

    argv = ["--train-queries", "9", "--val-queries", "0", "--epochs", "2", "--lr", "1e-3", "--warmup-ratio", "0",
            "--eval-steps", "4", "--eval-data", "heldout"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert train_main(args_for(single) + argv + ["--batch-size", "4"]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "train"] + args_for(ddp) + argv + ["--batch-size", "2"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    single_log, ddp_log = read_jsonl(single / "train_log.jsonl"), read_jsonl(ddp / "train_log.jsonl")
    assert [r["step"] for r in ddp_log] == [1, 2, 3, 4]
    assert [r["loss"] for r in ddp_log] == pytest.approx([r["loss"] for r in single_log], rel=rel)
    assert (ddp / "checkpoint-4" / "rng_state_1.pt").exists() and (ddp / "best-model").is_dir()
    return out
