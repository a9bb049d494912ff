"""`semsearch evaluate`: recall@1/3/10, MRR@10 and nDCG@10 of any model on query/document pairs.

The same metric code the training job uses for its base-vs-tuned gate
(training_code/retrieval.py), so the figures here and in metrics.json compare directly.
--data is our pairs (.jsonl / .json / .csv) or a BEIR folder (corpus.jsonl, queries.jsonl,
qrels/SPLIT.tsv; its test split, or name a qrels file): training_code/inputs.py reads both.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from semsearch.errors import UsageError
from semsearch.models import resolve_model_dir
from training_code.contract import METRIC_KEYS


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="retrieval metrics of a model on query/document pairs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="DIR", help="model folder (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--data", metavar="FILE", required=True,
                   help="pairs: .jsonl / .json / .csv with query+text or sentence1+sentence2, or a BEIR folder "
                        "(its qrels/test.tsv) or one of its qrels/SPLIT.tsv files")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--query-prefix", default=None, help="prepended to queries (default: the model's saved prompt)")
    p.add_argument("--passage-prefix", default=None, help="prepended to documents (default: the model's saved prompt)")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=run)


def load_data_or_fail(path: str, flag: str):
    """The retrieval set (training_code.inputs.RetrievalSet) at ``path``: pairs or a BEIR folder."""
    from training_code import inputs
    from training_code.pairs import PairsError

    if not Path(path).exists():
        raise UsageError(f"{flag} {path!r}: no such file")
    try:
        return inputs.load(path)
    except PairsError as e:
        raise UsageError(str(e)) from None


def load_model(folder: Path):
    import torch
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cuda" if torch.cuda.is_available() else "cpu")


def format_table(columns: dict[str, dict[str, float]]) -> str:
    """Metrics as rows, one column per model (base / tuned / gain, or just one)."""
    lines = [f"{'metric':<10}" + "".join(f"{name:>10}" for name in columns)]
    for key in METRIC_KEYS:
        lines.append(f"{key:<10}" + "".join(f"{values[key]:>10.4f}" for values in columns.values()))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from training_code import retrieval

    folder = resolve_model_dir(args.model, "--model")
    data = load_data_or_fail(args.data, "--data")
    qrels = data.qrels
    model = load_model(folder)
    encode = retrieval.sentence_transformer_encoder(
        model, query_prefix=args.query_prefix, passage_prefix=args.passage_prefix,
        batch_size=args.batch_size, show_progress=not args.json and sys.stderr.isatty())
    metrics = retrieval.evaluate_qrels(encode, qrels)
    if args.json:
        print(json.dumps({"model": str(folder), "data": args.data, "pairs": len(data.pairs),
                          "queries": len(qrels.queries), "documents": len(qrels.documents), "metrics": metrics}))
    else:
        print(f"{folder}: {len(qrels.queries)} queries over {len(qrels.documents)} documents")
        print(format_table({"model": metrics}))
    return 0
