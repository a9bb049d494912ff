"""Fine-tuning on the Debian pairs: base vs tuned quality on the dev split, training speed,
and the throughput of `semsearch embed`.

- training: training_code's own ``train()`` (what the SageMaker job runs) on a seeded
  sample of train.jsonl, all-MiniLM-L6-v2 with the catalog's max tokens, the job's default
  hyperparameters (chosen on a slice held out of *train*, never on dev), 1 epoch;
  base and tuned are both scored on dev.jsonl with the job's metric code.
- embed: `semsearch embed` (exact mode) over dev texts written as batch-transform lines
  ``{"id", "text_inputs"}``; texts/s includes reading and writing the files.

Default: 2,000 pairs (what ``python -m bench`` runs). ``--full``: the whole train split
(16k pairs; hours on 2 shared cores), written to bench/results/training_full.json when run
as ``python -m bench.training --full``. Data: ../shared/data/debian-descriptions or
$SEMSEARCH_DATA_DIR.

``--recipes default,mnrl,hn3,...``: the training recipes of RECIPES (hyperparameters on top of
the job's defaults) one after the other on the same sample and dev pairs, each row added to
bench/results/training_recipes.json as it finishes (rows with the same recipe, pairs and
dev pairs are replaced).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench._data import data_dir, read_jsonl
from semsearch.compare import cpu_name

REPO_ROOT = Path(__file__).resolve().parent.parent
RECIPES_FILE = REPO_ROOT / "bench" / "results" / "training_recipes.json"
KEPT_MODELS = REPO_ROOT / "bench" / "results" / "models"

#: In-batch negatives only: the job's defaults until hn1-w100 measured best on the whole split.
#: The recipes measured before that change keep it, so that their rows stay reproducible.
MNRL = {"hard_negatives": 0}
#: sentence-transformers' own mining window (range-min + 10 x N + own documents).
MINER_WINDOW = {"hard_negative_range_max": 0}
#: name -> Config fields changed from the job's defaults.
RECIPES: dict[str, dict] = {
    "default": {},
    "mnrl": MNRL,
    "hn1": {"hard_negatives": 1, **MINER_WINDOW},
    "hn1-w100": {"hard_negatives": 1, "hard_negative_range_max": 100},
    "hn3": {"hard_negatives": 3, **MINER_WINDOW},
    "hn3-skip3": {"hard_negatives": 3, "hard_negative_range_min": 3, **MINER_WINDOW},
    "cached-b128": {**MNRL, "cached_loss": True, "batch_size": 128, "mini_batch_size": 32},
    "cached-b128-hn1": {"cached_loss": True, "batch_size": 128, "mini_batch_size": 32, "hard_negatives": 1,
                        **MINER_WINDOW},
    # The defaults with 4x the batch (255 negatives per query instead of 63), without GradCache:
    # on the 2,000-pair sample batch 128 left only 16 steps, so it was never a fair test there.
    "b128": {"batch_size": 128},
    "e3-best": {**MNRL, "epochs": 3, "validation_pairs": 300},
    "e3-best-hn3": {"epochs": 3, "validation_pairs": 300, "hard_negatives": 3, **MINER_WINDOW},
    "e2-best": {"epochs": 2, "validation_pairs": 300},
    "e3-best-w100": {"epochs": 3, "validation_pairs": 300},
    "symmetric": {**MNRL, "loss": "symmetric"},
    "gist": {**MNRL, "loss": "gist"},
    "gist-cached-b128": {**MNRL, "loss": "gist", "cached_loss": True, "batch_size": 128, "mini_batch_size": 32},
    "gist-s100": {**MNRL, "loss": "gist", "scale": 100.0},
    "lr1e-4": {**MNRL, "learning_rate": 1e-4},
    "lr2e-5": {**MNRL, "learning_rate": 2e-5},
    "scale50": {**MNRL, "scale": 50.0},
    "attn-drop0": {"attention_dropout": 0.0},
    # No margin: the base model's own mistakes (documents it ranks above the positive) become the
    # negatives; the Debian pairs have no duplicate query or document to make one a right answer.
    "hn1-nomargin": {"hard_negative_margin": None},
    "hn1-margin10": {"hard_negative_margin": 0.1},  # the other way: twice the default margin
    # The defaults again, from the base model, with negatives mined by the defaults' own tuned
    # model (kept by an earlier `--recipes default --keep-models`): its remaining mistakes.
    "remined": {"hard_negative_model": str(KEPT_MODELS / "default")},
    # A second epoch with fresh negatives: the defaults' tuned model trained 1 more epoch on
    # negatives it mines itself (compare e2-best, whose second epoch reuses the base model's).
    "continued-remined": {"base_model": str(KEPT_MODELS / "default")},
    "unchunked": {"chunk_rows": 0},  # one padded forward per column: the speed before --chunk-rows
}


def bench_embed(model_dir: Path, texts: list[str], work: Path) -> dict:
    from semsearch.cli import main as cli

    src, out = work / "embed-in.jsonl", work / "embed-out.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text_inputs": t}) + "\n" for i, t in enumerate(texts)))
    # One untimed call first: the ONNX export of the model is cached, and not what is measured.
    warm = work / "warm.jsonl"
    warm.write_text(json.dumps({"id": 0, "text_inputs": "warm up"}) + "\n")
    if cli(["embed", "--model", str(model_dir), "--in", str(warm), "--out", str(work / "warm-out.jsonl")]) != 0:
        raise RuntimeError("semsearch embed failed")
    started = time.perf_counter()
    if cli(["embed", "--model", str(model_dir), "--in", str(src), "--out", str(out)]) != 0:
        raise RuntimeError("semsearch embed failed")
    seconds = time.perf_counter() - started
    lines = sum(1 for _ in out.open())
    if lines != len(texts):  # a wrong count would make the figure meaningless
        raise RuntimeError(f"semsearch embed wrote {lines} lines for {len(texts)} texts")
    return {"texts": len(texts), "seconds": round(seconds, 2), "texts_per_second": round(len(texts) / seconds, 1),
            "mode": "exact", "note": "includes loading the model (ONNX export cached)"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.training", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2000, help="training pairs (default: 2000)")
    parser.add_argument("--full", action="store_true", help="train on the whole train split")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--eval-pairs", type=int, default=None, help="dev pairs to score on (default: all)")
    parser.add_argument("--embed-texts", type=int, default=1000, help="dev texts for the embed figure (0: skip)")
    parser.add_argument("--keep-models", action="store_true",
                        help=f"with --recipes: copy each tuned model to {KEPT_MODELS.relative_to(REPO_ROOT)}/<recipe> "
                             "(the remined recipe mines with the default one's)")
    parser.add_argument("--recipes", default=None,
                        help=f"comma-separated recipes to compare ({', '.join(RECIPES)}); rows go to "
                             f"{RECIPES_FILE.relative_to(REPO_ROOT)}")
    args = parser.parse_args(argv)
    if args.recipes:
        return run_recipes(parser, args)

    from semsearch.models import DEFAULT_MODEL_ID, packaged_model_dir
    from stacks.catalog import MODELS
    from training_code.train import Config, train

    spec = MODELS[DEFAULT_MODEL_ID]
    model_dir = packaged_model_dir()
    dev = read_jsonl(data_dir() / "dev.jsonl")
    result: dict = {"machine": {"cpus": len(os.sched_getaffinity(0)), "cpu": cpu_name(),
                                "python": platform.python_version(), "load_average_at_start": os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        work = Path(tmp)
        eval_file = data_dir() / "dev.jsonl"
        if args.eval_pairs:
            eval_file = work / "dev.jsonl"
            eval_file.write_text("".join(json.dumps(p) + "\n" for p in dev[: args.eval_pairs]))
        config = Config(train=str(data_dir() / "train.jsonl"), eval=str(eval_file), base_model=str(model_dir),
                        model_dir=str(work / "model"), output_data_dir=str(work / "model"), inference_code="",
                        epochs=args.epochs, max_pairs=None if args.full else args.pairs,
                        max_seq_length=spec.max_tokens, query_prefix=spec.query_prefix,
                        passage_prefix=spec.passage_prefix)
        started = time.perf_counter()
        metrics = train(config)
        t = metrics["train"]
        result.update({
            "setup": {"model": DEFAULT_MODEL_ID, "train_pairs": t["pairs"], "epochs": args.epochs,
                      "batch_size": config.batch_size, "learning_rate": config.learning_rate,
                      "max_seq_length": config.max_seq_length, "eval": metrics["eval"]},
            "base": metrics["base"], "tuned": metrics["tuned"], "gain": metrics["gain"],
            "train": {"seconds": t["seconds"], "pairs_per_second": t["pairs_per_second"], "steps": t["steps"],
                      "probe_loss_before": t["probe_loss_before"], "probe_loss_after": t["probe_loss_after"],
                      "job_seconds_total": round(time.perf_counter() - started, 1)},
        })
        if args.embed_texts:
            result["embed"] = bench_embed(model_dir, [p["text"] for p in dev[: args.embed_texts]], work)
    result["machine"]["load_average_at_end"] = os.getloadavg()[0]
    return result


def run_recipes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """Each named recipe on the same sample and dev pairs; rows saved as they finish."""
    from semsearch.models import DEFAULT_MODEL_ID, packaged_model_dir
    from stacks.catalog import MODELS
    from training_code.train import Config, train

    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    spec = MODELS[DEFAULT_MODEL_ID]
    dev = read_jsonl(data_dir() / "dev.jsonl")
    dev = dev[: args.eval_pairs] if args.eval_pairs else dev
    pairs = None if args.full else args.pairs
    saved = json.loads(RECIPES_FILE.read_text()) if RECIPES_FILE.is_file() else {"rows": []}
    for name in names:
        with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
            work = Path(tmp)
            eval_file = work / "dev.jsonl"
            eval_file.write_text("".join(json.dumps(p) + "\n" for p in dev))
            settings = {"epochs": args.epochs, **RECIPES[name]}
            config = Config(**{"train": str(data_dir() / "train.jsonl"), "eval": str(eval_file),
                               "base_model": str(packaged_model_dir()), "model_dir": str(work / "model"),
                               "output_data_dir": str(work / "model"), "inference_code": "", "max_pairs": pairs,
                               "max_seq_length": spec.max_tokens, "query_prefix": spec.query_prefix,
                               "passage_prefix": spec.passage_prefix, **settings})  # a recipe may start elsewhere
            load = os.getloadavg()[0]
            started = time.perf_counter()
            m = train(config)
            wall = time.perf_counter() - started
            if args.keep_models:
                kept = KEPT_MODELS / name
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(work / "model", kept)
        t = m["train"]
        row = {"recipe": name, "changes": RECIPES[name], "train_pairs": t["pairs"], "dev_pairs": len(dev),
               "epochs": t["epochs"], "ndcg@10": round(m["tuned"]["ndcg@10"], 4),
               "recall@1": round(m["tuned"]["recall@1"], 4), "recall@3": round(m["tuned"]["recall@3"], 4),
               "recall@10": round(m["tuned"]["recall@10"], 4), "base_ndcg@10": round(m["base"]["ndcg@10"], 4),
               "epochs_run": t.get("epochs_run"), "epoch_selection": t.get("epoch_selection"),
               "steps": t["steps"], "pairs_per_second": t["pairs_per_second"], "train_seconds": t["seconds"],
               "wall_seconds": round(wall, 1), "hard_negatives": t.get("hard_negatives"),
               "load_average_at_start": round(load, 2), "cpus": len(os.sched_getaffinity(0)), "cpu": cpu_name(),
               "command": "python -m bench.training " + " ".join(
                   ["--recipes", name, "--embed-texts", "0"] + (["--epochs", f"{args.epochs:g}"] if args.epochs != 1 else [])
                   + (["--full"] if args.full else ["--pairs", str(args.pairs)])
                   + (["--eval-pairs", str(args.eval_pairs)] if args.eval_pairs else []))}
        saved["rows"] = [r for r in saved["rows"] if (r["recipe"], r["train_pairs"], r["dev_pairs"])
                         != (name, row["train_pairs"], row["dev_pairs"])] + [row]
        RECIPES_FILE.parent.mkdir(exist_ok=True)
        RECIPES_FILE.write_text(json.dumps(saved, indent=2) + "\n")
        print(json.dumps(row), flush=True)
    return saved


if __name__ == "__main__":
    from bench.__main__ import save

    full = "--full" in sys.argv[1:]
    outcome = main(sys.argv[1:])
    if any(a.startswith("--recipes") for a in sys.argv[1:]):
        sys.exit(0)  # run_recipes saved its rows as they finished
    print(json.dumps(outcome, indent=2))
    print(f"bench: wrote {save('training_full' if full else 'training', outcome)}", file=sys.stderr)
