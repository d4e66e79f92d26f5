"""train/data.py, NanoBEIR loading and the held-out reranking set: real-schema quirks, on data made here."""

import train_fixtures  # noqa: F401  (first: puts the repository root on sys.path)
import json
import os
import re
import subprocess
import sys
import warnings

import pytest
import torch

from train.data import (BATCH_ORDERS, batch_indices, collate, load_msmarco_rows, pad_scores, split_validation,
                        steps_per_epoch, to_listwise)
from train.hub import HubUnavailableError, hub_unavailable
from train.inputs import UsageError, looks_like_local_path
from train.loop import main as train_main
from train.nanobeir import bm25_rank, heldout_samples, load_nanobeir, nanobeir_retrieval_set

from train_fixtures import make_msmarco_rows, write_json, write_nanobeir_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_json_jsonl_and_passage_layouts(tmp_path):
    rows = make_msmarco_rows(10)
    as_json = write_json(tmp_path / "rows.json", rows)
    as_jsonl = tmp_path / "rows.jsonl"
    as_jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    wrapped = write_json(tmp_path / "wrapped.json", {"data": rows})
    # the original MS MARCO JSON: passages as a list of per-passage dicts, is_selected as booleans
    listed = [dict(r, passages=[{"is_selected": bool(s), "passage_text": t, "url": u} for s, t, u in
                               zip(r["passages"]["is_selected"], r["passages"]["passage_text"], r["passages"]["url"])])
              for r in rows]
    listed_path = write_json(tmp_path / "listed.json", listed)
    expected = to_listwise(rows)
    for path in (as_json, str(as_jsonl), wrapped, listed_path):
        assert to_listwise(load_msmarco_rows(path)) == expected


def test_listwise_drops_unselected_and_puts_positives_first():
    rows = make_msmarco_rows(30)
    records = to_listwise(rows)
    kept = [r for r in rows if sum(r["passages"]["is_selected"])]
    assert len(kept) < len(rows) and len(records) == len(kept)  # rows without a selected passage are dropped
    assert len({len(r["docs"]) for r in records}) > 2  # variable list sizes survive
    for row, rec in zip(kept, records):
        sel, texts = row["passages"]["is_selected"], row["passages"]["passage_text"]
        n_pos = sum(sel)
        assert rec["labels"] == [1.0] * n_pos + [0.0] * (len(sel) - n_pos)
        # stable: original order among positives and among negatives
        assert rec["docs"] == [t for t, s in zip(texts, sel) if s] + [t for t, s in zip(texts, sel) if not s]
    capped = to_listwise(rows, max_docs=3)
    assert max(len(r["docs"]) for r in capped) == 3
    assert all(r["labels"][0] == 1.0 for r in capped)
    unordered = to_listwise(rows, positives_first=False)
    assert [r["docs"] for r in unordered] == [row["passages"]["passage_text"] for row in kept]


def test_validation_split_is_seeded_and_disjoint():
    records = to_listwise(make_msmarco_rows(40))
    train, val = split_validation(records, 5, seed=12)
    assert len(val) == 5 and len(train) == len(records) - 5
    assert split_validation(records, 5, seed=12) == (train, val)
    assert split_validation(records, 5, seed=13)[1] != val
    assert {r["query_id"] for r in train}.isdisjoint(r["query_id"] for r in val)
    with pytest.raises(ValueError):
        split_validation(records, len(records), seed=0)


@pytest.mark.parametrize("batch_order", BATCH_ORDERS)
@pytest.mark.parametrize("n, batch, world", [(10, 4, 1), (10, 2, 2), (9, 2, 2), (7, 3, 2), (5, 4, 2)])
def test_batches_cover_each_epoch_once(n, batch, world, batch_order):
    steps = steps_per_epoch(n, batch, world)
    for epoch in range(2):
        seen = []
        for step in range(steps):
            parts = [batch_indices(n, batch, step, epoch, seed=3, rank=r, world_size=world, batch_order=batch_order)
                     for r in range(world)]
            assert all(parts) and all(len(p) <= batch for p in parts)  # every process has work at every step
            seen += [i for p in parts for i in p]
        assert len(seen) == len(set(seen)) and len(seen) >= n - world + 1
    first = [batch_indices(n, batch, 0, epoch, 3, batch_order=batch_order) for epoch in range(2)]
    assert first[0] != first[1] or n <= 1
    with pytest.raises(ValueError, match="batch_order"):
        batch_indices(n, batch, 0, 0, 3, batch_order="sorted")


def test_collate_and_padding():
    from transformers import BertTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = BertTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                  sep_token="[SEP]")
    records = [{"query": "a", "docs": ["a a", "a"], "labels": [1.0, 0.0]},
               {"query": "a a", "docs": ["a", "a", "a a a"], "labels": [1.0, 1.0, 0.0]}]
    (encoded,), lengths, labels = collate(tokenizer, records, max_length=16)
    assert encoded["input_ids"].shape[0] == 5 and lengths.tolist() == [2, 3]
    assert labels.tolist() == [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]

    # --pairs-per-forward 2: the same pairs in order, in forwards of 2, 2 and 1, each padded to its own longest
    parts, lengths_2, labels_2 = collate(tokenizer, records, max_length=16, pairs_per_forward=2)
    assert [part["input_ids"].shape[0] for part in parts] == [2, 2, 1]

    def unpadded(batches):
        return [ids[mask.bool()].tolist()
                for part in batches for ids, mask in zip(part["input_ids"], part["attention_mask"])]

    assert unpadded(parts) == unpadded([encoded])
    assert [part["input_ids"].shape[1] for part in parts] == [int(part["attention_mask"].sum(1).max())
                                                              for part in parts]
    assert torch.equal(lengths_2, lengths) and torch.equal(labels_2, labels)
    assert pad_scores(torch.arange(5.0), lengths).tolist() == [[0.0, 1.0, 0.0], [2.0, 3.0, 4.0]]


def test_local_nanobeir_layout(tmp_path):
    rows = make_msmarco_rows(12)
    root = write_nanobeir_dir(tmp_path / "nano", rows)
    sets = load_nanobeir(root, ["msmarco"], rerank_k=5)
    samples = sets["NanoMSMARCO_R5"]
    with_qrels = [r for r in rows if sum(r["passages"]["is_selected"])]
    assert len(samples) == len(with_qrels)
    for row, sample in zip(with_qrels, samples):
        assert sample["query"] == row["query"]
        assert sample["documents"] == (row["passages"]["passage_text"] + rows[(rows.index(row) + 1) % 12]["passages"]["passage_text"])[:5]
        assert sample["positive"] == [t for t, s in zip(row["passages"]["passage_text"], row["passages"]["is_selected"]) if s]


def test_heldout_samples_mix_other_queries_passages():
    records = to_listwise(make_msmarco_rows(20), positives_first=False)
    samples = heldout_samples(records, rerank_k=12)
    pool = {d for r in records for d in r["docs"]}
    for rec, sample in zip(records, samples):
        assert len(sample["documents"]) == 12 and set(sample["documents"]) <= pool
        assert set(sample["documents"]) - set(rec["docs"])  # other queries' passages are candidates too
        assert sample["positive"] == [d for d, l in zip(rec["docs"], rec["labels"]) if l]
    assert bm25_rank("red apple", ["blue sky", "red apple pie", "apple"])[0] in (1, 2)
    assert bm25_rank("zzz", ["a", "b"]) == [0, 1]  # no match: document order kept


def test_a_positive_named_twice_in_the_qrels_counts_once():
    """Qrels rows repeat in the wild (and a row's corpus-id may be a list): each positive is one positive, as in
    sentence-transformers' evaluators, which keep them in a set."""
    tables = {"corpus": [{"_id": "d1", "text": "one"}, {"_id": "d2", "text": "two"}, {"_id": "d3", "text": "three"}],
              "queries": [{"_id": "q", "text": "query"}],
              "qrels": [{"query-id": "q", "corpus-id": "d2"}, {"query-id": "q", "corpus-id": "d2"},
                        {"query-id": "q", "corpus-id": ["d3", "d2", "d3"]}],
              "bm25": [{"query-id": "q", "corpus-ids": ["d1", "d2", "d3"]}]}
    assert nanobeir_retrieval_set(tables)["positives"] == [[1, 2]]


def test_queries_with_qrels_but_no_bm25_row_are_named(tmp_path):
    """sentence-transformers' NanoBEIR retrieval evaluator takes every query with qrels; ours the bm25 table's."""
    root = write_nanobeir_dir(tmp_path / "nano", make_msmarco_rows(8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        complete = load_nanobeir(root, ["msmarco"], rerank_k=5)["NanoMSMARCO_R5"]
    bm25 = tmp_path / "nano" / "NanoMSMARCO" / "bm25.jsonl"
    first, *rest = bm25.read_text().splitlines(keepends=True)
    bm25.write_text("".join(rest))
    with pytest.warns(UserWarning, match=f"NanoMSMARCO: 1 queries with qrels have no bm25 row .*'{json.loads(first)['query-id']}'"):
        assert load_nanobeir(root, ["msmarco"], rerank_k=5)["NanoMSMARCO_R5"] == complete[1:]


def test_hub_message_says_whether_hf_hub_offline_is_set(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert "setting HF_HUB_OFFLINE=1 skips" in str(hub_unavailable("x/y", OSError("unreachable")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    message = str(hub_unavailable("x/y", OSError("offline")))
    assert "HF_HUB_OFFLINE is set, so the hub was not contacted" in message and "setting HF_HUB_OFFLINE" not in message


def test_hub_unreachable_message_names_offline_flags(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    out = subprocess.run([sys.executable, "-m", "train", "--train-data", "microsoft/ms_marco", "--output-dir",
                          str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    message = out.stderr.strip().splitlines()[-1]
    for flag in ("--model", "--train-data", "--eval-data", "HF_HUB_OFFLINE"):
        assert flag in message
    named_files = re.findall(r"train/[\w/.-]+\.md", message)
    assert named_files and all(os.path.isfile(os.path.join(ROOT, name)) for name in named_files)
    with pytest.raises(HubUnavailableError):
        env_backup = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
        try:
            os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
            load_nanobeir("sentence-transformers/NanoBEIR-en", ["msmarco"])
        finally:
            for k, v in env_backup.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_too_many_validation_queries_is_a_usage_error(tmp_path, capsys):
    """The default --val-queries 1000 with a small local file: one line suggesting a smaller value, exit code 2
    (after the log's announcement of the output directory: the data is read after that)."""
    rows = write_json(tmp_path / "rows.json", make_msmarco_rows(10))
    assert train_main(["--train-data", rows, "--output-dir", str(tmp_path / "out"), "--eval-data", "heldout"]) == 2
    log, error = capsys.readouterr().err.strip().splitlines()
    assert log.endswith(f" INFO output directory: {tmp_path / 'out'}")
    assert error.startswith("python -m train: error: --val-queries 1000 ") and "smaller --val-queries" in error


@pytest.mark.parametrize("value, local", [
    ("/no/such/dir", True), ("./model", True), ("../data", True), ("~/rows.json", True), ("rows.jsonl", True),
    ("a/b/c", True), ("microsoft/ms_marco", False), ("bert-base-uncased", False),
    ("sentence-transformers/NanoBEIR-en", False)])
def test_what_counts_as_a_local_path(value, local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "microsoft").mkdir()  # a local folder named like a hub org keeps org/name a hub id
    assert looks_like_local_path(value) == local


@pytest.mark.parametrize("flag", ["--train-data", "--eval-data", "--model", "--candidates"])
def test_missing_local_paths_name_the_flag_before_any_hub_access(tmp_path, capsys, flag):
    rows = write_json(tmp_path / "rows.json", make_msmarco_rows(10))
    missing = str(tmp_path / "missing")
    value = f"dense:{missing}" if flag == "--candidates" else missing
    # every other input is a hub id: reaching any hub loader would print the hub paragraph instead
    argv = ["--output-dir", str(tmp_path / "out"), "--train-data", rows, flag, value]
    assert train_main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"python -m train: error: {flag}: no such file or directory: {missing} ")


def test_local_nanobeir_directory_missing_a_dataset(tmp_path, capsys):
    rows = make_msmarco_rows(12)
    nano = write_nanobeir_dir(tmp_path / "nano", rows)  # NanoMSMARCO only; the default list also asks for nfcorpus, nq
    with pytest.raises(UsageError, match="NanoNFCorpus.*--eval-datasets msmarco"):
        load_nanobeir(nano, ["msmarco", "nfcorpus", "nq"])
    assert train_main(["--train-data", write_json(tmp_path / "rows.json", rows), "--val-queries", "0",
                       "--eval-data", nano, "--output-dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert os.path.join(nano, "NanoNFCorpus") in error and "--eval-datasets msmarco" in error
