"""`semsearch train`: fine-tune an embedding model on query/document pairs, on this machine.

Runs the SageMaker training job's own code (training_code/train.py) with the catalog's
values for the model (max tokens, query/passage prefixes), then prints base vs tuned
metrics. The output folder is what the job would put in model.tar.gz: the tuned model,
metrics.json and code/ (the inference handler), ready for `semsearch serve` or TEI.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from semsearch.errors import UsageError
from semsearch.evaluate import format_table
from semsearch.models import DEFAULT_MODEL_ID, resolve_model_dir
from stacks.catalog import MODELS

REPO_ROOT = Path(__file__).resolve().parent.parent


def register(subparsers) -> None:
    from training_code.train import CPU_CHUNK_ROWS, Config, optional_float, optional_int

    p = subparsers.add_parser("train", help="fine-tune an embedding model on query/document pairs",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", metavar="FILE", required=True,
                   help="pairs: .jsonl / .json / .csv (or a folder of them), or a BEIR folder (its qrels/train.tsv) "
                        "or one of its qrels/SPLIT.tsv files")
    p.add_argument("--eval", metavar="FILE", help="held-out pairs or a BEIR folder (its qrels/test.tsv) or qrels file "
                   "(default: a seeded slice of --train)")
    p.add_argument("--base-model", metavar="DIR", help="model folder (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--model-id", default=DEFAULT_MODEL_ID, choices=sorted(MODELS),
                   help="catalog entry of the base model: max tokens and prefixes (default %(default)s)")
    p.add_argument("--out", metavar="DIR", required=True, help="new or empty folder for the tuned model")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-pairs", type=int, metavar="K", help="train on a seeded sample of K pairs")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the training job's)")
    p.add_argument("--max-seq-length", type=int, help="tokens per text (default: the catalog's max tokens)")
    p.add_argument("--attention-dropout", type=optional_float, metavar="P", default=Config.attention_dropout,
                   help="dropout on attention weights while training (default: the base model's own, 0.1 for "
                        "BERT-style models; 0 lets PyTorch run its fused attention kernel, faster on CPU)")
    p.add_argument("--chunk-rows", type=optional_int, metavar="N", default=Config.chunk_rows,
                   help="run each column of a batch through the encoder in chunks of N texts of similar length, "
                        "each padded only to its own longest: the same embeddings for about half the work on CPU "
                        f"(0: off; default or 'none': {CPU_CHUNK_ROWS} on CPU, off on GPU)")
    p.add_argument("--loss", default=Config.loss, metavar="L",
                   help="mnrl (MultipleNegativesRankingLoss), symmetric (also ranks the queries per document) or "
                        "gist (GISTEmbedLoss: in-batch negatives the base model scores above the positive are left "
                        "out as likely right answers) (default %(default)s)")
    p.add_argument("--cached-loss", action="store_true", help="the loss's GradCache form: large batches in small memory")
    p.add_argument("--mini-batch-size", type=int, default=32, help="with --cached-loss")
    p.add_argument("--hard-negatives", type=int, metavar="N", default=Config.hard_negatives,
                   help="negatives per pair mined with the base model from the training documents, on top of the "
                        "in-batch ones (default %(default)s; 0: in-batch negatives only)")
    p.add_argument("--hard-negative-range-min", type=int, metavar="R", default=Config.hard_negative_range_min,
                   help="skip the R nearest candidates besides the pair's own documents (default %(default)s)")
    p.add_argument("--hard-negative-range-max", type=int, metavar="R", default=Config.hard_negative_range_max,
                   help="mine among the R nearest candidates (default %(default)s; 0: sentence-transformers' own "
                        "window, range-min + 10 x N + the pair's own documents)")
    p.add_argument("--hard-negative-margin", type=optional_float, metavar="M", default=Config.hard_negative_margin,
                   help="keep a mined negative only if it scores at least M x the positive's score below it, as "
                        "closer ones may be near-duplicates of the positive; 'none' keeps every candidate, also "
                        "those the base model ranks above the positive (worse on the Debian pairs: README) "
                        "(default %(default)s)")
    p.add_argument("--hard-negative-model", metavar="DIR",
                   help="mine with this model instead of the base model, such as one tuned on the same pairs "
                        "before: its remaining mistakes are the harder negatives")
    p.add_argument("--validation-pairs", type=int, metavar="K", default=Config.validation_pairs,
                   help="hold K train pairs out, score each epoch on them with the gate's metric (nDCG@10) and "
                        "keep the best epoch (default %(default)s: keep the last)")
    p.add_argument("--early-stopping-patience", type=int, metavar="P", default=Config.early_stopping_patience,
                   help="with --validation-pairs: stop after P epochs without a better score (default %(default)s)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--checkpoint-dir", metavar="DIR", help="save resumable checkpoints here (and resume from them)")
    p.add_argument("--no-code", action="store_true", help="leave the inference handler (code/) out of --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The training job's Config from CLI arguments and the catalog; UsageError on bad input."""
    from training_code.train import Config

    spec = MODELS[args.model_id]
    base = resolve_model_dir(args.base_model, "--base-model")
    if not Path(args.train).exists():
        raise UsageError(f"--train {args.train!r}: no such file")
    if args.eval and not Path(args.eval).exists():
        raise UsageError(f"--eval {args.eval!r}: no such file")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {args.out!r} exists and is not an empty folder")
    for flag in ("epochs", "batch_size", "max_pairs", "lr", "max_seq_length", "mini_batch_size"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be positive, got {value}")
    miner = str(resolve_model_dir(args.hard_negative_model, "--hard-negative-model")) if args.hard_negative_model else ""
    code = "" if args.no_code else str(REPO_ROOT / "inference_code")
    extra = {"learning_rate": args.lr} if args.lr is not None else {}
    return Config(
        train=args.train, eval=args.eval, base_model=str(base), model_dir=str(out), output_data_dir=str(out),
        checkpoint_dir=args.checkpoint_dir, inference_code=code, epochs=args.epochs, batch_size=args.batch_size,
        max_pairs=args.max_pairs, max_seq_length=args.max_seq_length or spec.max_tokens,
        query_prefix=spec.query_prefix, passage_prefix=spec.passage_prefix, loss=args.loss,
        cached_loss=args.cached_loss,
        mini_batch_size=args.mini_batch_size, hard_negatives=args.hard_negatives,
        hard_negative_range_min=args.hard_negative_range_min, hard_negative_range_max=args.hard_negative_range_max,
        hard_negative_margin=args.hard_negative_margin, hard_negative_model=miner, attention_dropout=args.attention_dropout,
        chunk_rows=args.chunk_rows,
        validation_pairs=args.validation_pairs, early_stopping_patience=args.early_stopping_patience,
        seed=args.seed, progress=not args.quiet, **extra)


def run(args: argparse.Namespace) -> int:
    from training_code.pairs import PairsError
    from training_code.train import InputError, train

    config = build_config(args)
    try:
        metrics = train(config)
    except (PairsError, InputError) as e:
        raise UsageError(str(e)) from None
    t = metrics["train"]
    print(f"\ntrained on {t['pairs']} pairs x {t['epochs']:g} epochs in {t['seconds']:.0f} s "
          f"({t['pairs_per_second']:.1f} pairs/s); probe loss {t['probe_loss_before']:.4f} -> "
          f"{t['probe_loss_after']:.4f}")
    ev = metrics["eval"]
    print(f"eval ({ev['source']}): {ev['queries']} queries over {ev['documents']} documents")
    print(format_table({stage: metrics[stage] for stage in ("base", "tuned", "gain")}))
    print(f"model, metrics.json{'' if args.no_code else ' and code/'} in {args.out}")
    return 0
