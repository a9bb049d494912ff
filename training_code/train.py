"""SageMaker training-job entry point: fine-tune an embedding model on query/document pairs.

Runs the same way in a SageMaker container and on a laptop:

    python train.py --epochs 1 --batch-size 32            # SageMaker: channels from SM_* env
    python training_code/train.py --train pairs.jsonl --base-model DIR --model-dir OUT

Settings come from, lowest priority first: the defaults below, the SM_HPS JSON, the
command line (SageMaker passes each hyperparameter as ``--name value``; ``--name_value``
spellings are accepted too). Channels:

    train  (SM_CHANNEL_TRAIN, required)  pairs files: .jsonl / .json / .csv, or a BEIR folder
                                         (its qrels/train.tsv; inputs.py)
    eval   (SM_CHANNEL_EVAL, optional)   held-out pairs, or a BEIR folder (its qrels/test.tsv,
                                         the whole corpus searched); else a slice of train is held out
    model  (SM_CHANNEL_MODEL, optional)  the base model folder (or a model.tar.gz in it),
                                         when --base-model is not given
    code   (SM_CHANNEL_CODE, optional)   the inference handler folder (or one .zip/.tar.gz),
                                         when it is not bundled as ./inference_code
    miner  (SM_CHANNEL_MINER, optional)  a model folder (or a model.tar.gz in it) that mines the
                                         hard negatives instead of the base model

The loss is MultipleNegativesRankingLoss (in-batch negatives; --cached-loss true for the
GradCache variant, which makes batches of thousands fit in memory). --loss symmetric also
ranks the queries for each document; --loss gist (GISTEmbedLoss) keeps the base model, frozen,
as a guide and leaves out any in-batch negative the guide scores above the pair's own
positive: a likely second right answer (Debian has many near-twin packages), not a wrong
one. --hard-negatives N (default 1) adds
N mined negatives to each pair: the base model's nearest training documents to the query,
skipping its own document(s), the first --hard-negative-range-min ranks, and any scoring
within --hard-negative-margin (relative) of the positive, which would likely be a
near-duplicate of it rather than a wrong answer, among the first --hard-negative-range-max
ranks (default 100). --validation-pairs K (with --epochs above 1)
holds K pairs of train out, scores the gate's metric on them after each epoch, stops after
--early-stopping-patience epochs without a gain and keeps the best epoch's weights. Checkpoints go to
/opt/ml/checkpoints inside SageMaker (synced to S3 when the job sets CheckpointConfig), so
a spot-interrupted job resumes where it stopped. The outputs, and metrics.json's schema,
are described in contract.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

if not __package__:
    # SageMaker runs this file as a script from /opt/ml/code, which holds this folder's
    # files: register the folder as the `training_code` package it is in the repository,
    # so the sibling modules import the same way in both places.
    import importlib.util

    _here = Path(__file__).resolve().parent
    _spec = importlib.util.spec_from_file_location(
        "training_code", _here / "__init__.py", submodule_search_locations=[str(_here)])
    assert _spec and _spec.loader
    sys.modules["training_code"] = _pkg = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_pkg)

from training_code import contract, inputs, retrieval  # noqa: E402
from training_code import pairs as pairs_mod  # noqa: E402
from training_code.archives import extract_tar  # noqa: E402
from training_code.chunks import chunk_forward  # noqa: E402

log = logging.getLogger("training_code")
HERE = Path(__file__).resolve().parent
SM_CHECKPOINT_DIR = "/opt/ml/checkpoints"
#: --loss: MultipleNegativesRankingLoss, its symmetric form, GISTEmbedLoss guided by the base model.
LOSSES = ("mnrl", "symmetric", "gist")
PROBE_PAIRS = 256  # training pairs whose loss is measured before and after training
#: --chunk-rows on CPU. 8 and 16 measured alike, about 2x faster training steps than one padded
#: forward per column (Debian pairs, batch 32, 2-core AMD EPYC); 16 keeps the matrix kernels wider.
CPU_CHUNK_ROWS = 16


class InputError(ValueError):
    """A setting or input the job cannot use; reported as one line, before any slow step."""


@dataclass
class Config:
    """Everything one run uses; written into metrics.json as "hyperparameters"."""

    train: str
    model_dir: str
    base_model: str
    output_data_dir: str
    eval: str | None = None
    checkpoint_dir: str | None = None
    inference_code: str | None = None
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    scale: float = 20.0
    attention_dropout: float | None = None
    chunk_rows: int | None = None
    max_seq_length: int | None = None
    max_pairs: int | None = None
    eval_fraction: float = 0.1
    max_eval_pairs: int = 2000
    seed: int = 42
    loss: str = "mnrl"
    cached_loss: bool = False
    mini_batch_size: int = 32
    # One mined negative per pair, searched among the 100 nearest: the best recipe measured on
    # the whole Debian train split (nDCG@10 0.919 against 0.907 with in-batch negatives only;
    # README, "Fine-tuning recipes, measured").
    hard_negatives: int = 1
    hard_negative_range_min: int = 0
    hard_negative_range_max: int = 100
    hard_negative_margin: float | None = 0.05
    # The model that ranks the candidates when mining ("": the base model, before training).
    hard_negative_model: str = ""
    validation_pairs: int = 0
    early_stopping_patience: int = 1
    query_prefix: str = ""
    passage_prefix: str = ""
    checkpoint_steps: int = 500
    log_steps: int = 10
    eval_batch_size: int = 64
    progress: bool = False


def check_config(config: Config) -> None:
    """InputError naming the setting, for values no run could use."""
    if config.loss not in LOSSES:
        raise InputError(f"--loss must be one of {', '.join(LOSSES)}, got {config.loss!r}")
    if config.hard_negatives < 0:
        raise InputError(f"--hard-negatives must be 0 (off) or a positive count, got {config.hard_negatives}")
    if config.hard_negative_range_min < 0:
        raise InputError(f"--hard-negative-range-min must be 0 or more, got {config.hard_negative_range_min}")
    if config.hard_negative_range_max < 0 or (config.hard_negative_range_max and config.hard_negative_range_max
                                              < config.hard_negative_range_min + config.hard_negatives):
        raise InputError(f"--hard-negative-range-max must be 0 (the miner's own window) or at least "
                         f"--hard-negative-range-min + --hard-negatives "
                         f"({config.hard_negative_range_min + config.hard_negatives}), "
                         f"got {config.hard_negative_range_max}")
    if config.hard_negative_margin is not None and not 0 <= config.hard_negative_margin < 1:
        raise InputError(f"--hard-negative-margin must be in [0, 1) (a share of the positive's score) or 'none' "
                         f"(keep every candidate), got {config.hard_negative_margin}")
    if config.hard_negative_model and not config.hard_negatives:
        raise InputError(f"--hard-negative-model {config.hard_negative_model!r} mines hard negatives: it needs "
                         "--hard-negatives 1 or more, got 0")
    if config.attention_dropout is not None and not 0 <= config.attention_dropout < 1:
        raise InputError(f"--attention-dropout must be in [0, 1) or 'none' (the base model's own), "
                         f"got {config.attention_dropout}")
    if config.chunk_rows is not None and config.chunk_rows < 0:
        raise InputError(f"--chunk-rows must be 0 (off) or a positive count, got {config.chunk_rows}")
    if config.validation_pairs < 0:
        raise InputError(f"--validation-pairs must be 0 (off) or a positive count, got {config.validation_pairs}")
    if config.early_stopping_patience < 1:
        raise InputError(f"--early-stopping-patience must be 1 or more, got {config.early_stopping_patience}")


def _bool(value: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def none_or(kind: type, *, zero_is_none: bool = False):
    """An argparse type reading 'none' or '' (and 0 where `zero_is_none`) as None, anything
    else as `kind`: SageMaker passes every hyperparameter as a string."""
    def parse(value: str):
        text = str(value).strip().lower()
        if text in ("", "none") or (zero_is_none and text == "0"):
            return None
        return kind(value)
    parse.__name__ = kind.__name__  # argparse names the type in its error: "invalid int value: 'x'"
    return parse


optional_int, optional_float = none_or(int), none_or(float)
unset_if_zero = none_or(int, zero_is_none=True)  # for limits where 0 has always meant "no limit"


def report_failure(message: str) -> None:
    """`message` on stderr and, in SageMaker, as the job's FailureReason (a Step Functions Catch
    sees it)."""
    print(message, file=sys.stderr, flush=True)
    if os.environ.get("SM_OUTPUT_DIR"):
        Path(os.environ["SM_OUTPUT_DIR"], "failure").write_text(message[:1000])


class _ArgumentParser(argparse.ArgumentParser):
    """argparse's own errors (a mistyped or misspelt hyperparameter) become the FailureReason too,
    instead of SageMaker's generic 'ExecuteUserScriptError'."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        report_failure(f"{self.prog}: error: {message}")
        raise SystemExit(2)


def build_parser(environ: dict[str, str]) -> argparse.ArgumentParser:
    p = _ArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0],
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    env = environ.get
    io = p.add_argument_group("data and folders (default: the SageMaker environment)")
    io.add_argument("--train", default=env("SM_CHANNEL_TRAIN"), help="pairs file or folder (SM_CHANNEL_TRAIN)")
    io.add_argument("--eval", default=env("SM_CHANNEL_EVAL"), help="held-out pairs file or folder (SM_CHANNEL_EVAL)")
    io.add_argument("--base-model", default=env("SM_CHANNEL_MODEL"),
                    help="base model folder or Hugging Face id (SM_CHANNEL_MODEL)")
    io.add_argument("--model-dir", default=env("SM_MODEL_DIR"), help="where the tuned model goes (SM_MODEL_DIR)")
    io.add_argument("--output-data-dir", default=env("SM_OUTPUT_DATA_DIR"),
                    help="where metrics.json goes besides the model (SM_OUTPUT_DATA_DIR; default: --model-dir)")
    io.add_argument("--checkpoint-dir", default=SM_CHECKPOINT_DIR if env("SM_MODEL_DIR") else None,
                    help=f"resumable checkpoints (default {SM_CHECKPOINT_DIR} in SageMaker, none elsewhere)")
    io.add_argument("--inference-code", default=None,
                    help="inference handler folder copied to <model-dir>/code ('' skips it; default: "
                         "SM_CHANNEL_CODE, else ./inference_code beside this file, else ../inference_code)")
    hp = p.add_argument_group("hyperparameters")
    hp.add_argument("--epochs", type=float, default=Config.epochs)
    hp.add_argument("--batch-size", type=int, default=Config.batch_size,
                    help="pairs per step; each pair's document is a negative for the other queries")
    hp.add_argument("--learning-rate", "--lr", dest="learning_rate", type=float, default=Config.learning_rate)
    hp.add_argument("--warmup-ratio", type=float, default=Config.warmup_ratio)
    hp.add_argument("--weight-decay", type=float, default=Config.weight_decay)
    hp.add_argument("--scale", type=float, default=Config.scale, help="MNRL similarity scale (1/temperature)")
    hp.add_argument("--attention-dropout", type=optional_float, default=Config.attention_dropout,
                    help="dropout on attention weights while training ('none': the base model's own, "
                         "0.1 for BERT-style models); 0 lets PyTorch run its fused attention kernel on CPU")
    hp.add_argument("--chunk-rows", type=optional_int, default=Config.chunk_rows,
                    help="run each column of a batch through the encoder in chunks of N texts of similar length, "
                         "each padded only to its own longest: the same embeddings for about half the work on "
                         f"CPU (0: off; default: {CPU_CHUNK_ROWS} on CPU, off on GPU, where it is not measured)")
    hp.add_argument("--max-seq-length", type=unset_if_zero, default=None,
                    help="tokens per text (pass the catalog's max_tokens; default: the base model's)")
    hp.add_argument("--max-pairs", type=unset_if_zero, default=None, help="train on a seeded sample of K pairs")
    hp.add_argument("--eval-fraction", type=float, default=Config.eval_fraction,
                    help="share of train queries held out when no eval channel is given")
    hp.add_argument("--max-eval-pairs", type=int, default=Config.max_eval_pairs,
                    help="cap on the held-out slice carved from train")
    hp.add_argument("--seed", type=int, default=Config.seed)
    hp.add_argument("--loss", default=Config.loss, help=f"one of {', '.join(LOSSES)} (see above)")
    hp.add_argument("--cached-loss", type=_bool, default=False,
                    help="CachedMultipleNegativesRankingLoss: big batches in mini-batch memory")
    hp.add_argument("--mini-batch-size", type=int, default=Config.mini_batch_size, help="with --cached-loss")
    hp.add_argument("--hard-negatives", type=int, default=Config.hard_negatives,
                    help="negatives mined per pair with the base model, added to the in-batch ones (0: none)")
    hp.add_argument("--hard-negative-range-min", type=int, default=Config.hard_negative_range_min,
                    help="skip the N nearest candidates (after the pair's own documents) when mining")
    hp.add_argument("--hard-negative-range-max", type=int, default=Config.hard_negative_range_max,
                    help="mine among the N nearest candidates (0: sentence-transformers' own window, "
                         "range-min + 10 x hard-negatives + the pair's own documents)")
    hp.add_argument("--hard-negative-margin", type=optional_float, default=Config.hard_negative_margin,
                    help="a mined negative must score at least this share of the positive's score below it "
                         "(0.05: 5%%), as closer ones may be near-duplicates of the positive; 'none' keeps every "
                         "candidate, also those the base model ranks above the positive (worse on the Debian "
                         "pairs: README)")
    miner_channel = f"SM_CHANNEL_{contract.MINER_CHANNEL.upper()}"
    hp.add_argument("--hard-negative-model", default=env(miner_channel) or Config.hard_negative_model,
                    help="model folder that ranks the candidates when mining, such as an earlier tuned model "
                         f"({miner_channel}; default: the base model)")
    hp.add_argument("--validation-pairs", type=int, default=Config.validation_pairs,
                    help="train pairs held out to score each epoch with the gate's metric; the best epoch is "
                         "kept (0: none, the last epoch is kept)")
    hp.add_argument("--early-stopping-patience", type=int, default=Config.early_stopping_patience,
                    help="with --validation-pairs: stop after this many epochs without a better score")
    hp.add_argument("--query-prefix", default="", help="prepended to queries (e5: 'query: ')")
    hp.add_argument("--passage-prefix", default="", help="prepended to documents (e5: 'passage: ')")
    hp.add_argument("--checkpoint-steps", type=int, default=Config.checkpoint_steps,
                    help="save a resumable checkpoint every N steps (0: never)")
    hp.add_argument("--log-steps", type=int, default=Config.log_steps, help="print the training loss every N steps")
    hp.add_argument("--eval-batch-size", type=int, default=Config.eval_batch_size)
    p.add_argument("--progress", type=_bool, nargs="?", const=True, default=sys.stderr.isatty(),
                   help="progress bars (default: when stderr is a terminal)")
    return p


def _hyperparameter_args(environ: dict[str, str]) -> list[str]:
    """SM_HPS as command-line tokens, so one parser handles both (the command line wins)."""
    hps = json.loads(environ.get("SM_HPS") or "{}")
    tokens = []
    for name, value in hps.items():
        if name.startswith("sagemaker_"):
            continue  # the container's own settings (program, submit directory, region)
        tokens += [f"--{name}", value if isinstance(value, str) else json.dumps(value)]
    return tokens


def _normalize(argv: list[str]) -> list[str]:
    # SageMaker hyperparameter names are often snake_case: --batch_size 32 == --batch-size 32.
    out = []
    for token in argv:
        if token.startswith("--") and "_" in token:
            name, eq, value = token.partition("=")
            token = name.replace("_", "-") + eq + value
        out.append(token)
    return out


def parse_config(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    environ = dict(os.environ if environ is None else environ)
    parser = build_parser(environ)
    cli = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(_normalize(_hyperparameter_args(environ) + list(cli)))
    missing = [name for name in ("train", "base_model", "model_dir") if not getattr(args, name)]
    if missing:
        parser.error("missing " + ", ".join("--" + m.replace("_", "-") for m in missing)
                     + " (or the SageMaker environment: SM_CHANNEL_TRAIN, SM_CHANNEL_MODEL, SM_MODEL_DIR)")
    values = vars(args)
    values["output_data_dir"] = values["output_data_dir"] or values["model_dir"]
    return Config(**values)


# --------------------------------------------------------------------------- inputs


def _unpack_if_archive(folder: Path, work: Path, what: str) -> Path:
    """A channel holding one archive (a model.tar.gz, a CDK asset .zip) is unpacked first."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) != 1 or not entries[0].is_file():
        return folder
    archive = entries[0]
    dest = work / what
    if archive.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive) as tar:
            extract_tar(tar, dest)
    elif archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)  # noqa: S202 - zipfile drops ".." and absolute member paths itself
    else:
        return folder
    return dest


def resolve_inference_code(config: Config, work: Path) -> Path | None:
    """The folder copied to <model-dir>/code, or None when explicitly skipped with ''."""
    if config.inference_code == "":
        return None
    if config.inference_code:
        candidates = [Path(config.inference_code)]
    else:
        channel = os.environ.get("SM_CHANNEL_CODE")  # read at run time: the job's own environment
        candidates = ([Path(channel)] if channel else []) + [HERE / "inference_code", HERE.parent / "inference_code"]
    for candidate in candidates:
        if candidate.is_dir():
            return _unpack_if_archive(candidate, work, "inference_code")
    raise InputError(f"inference handler folder not found (looked in {', '.join(map(str, candidates))}); "
                     "pass --inference-code DIR, or --inference-code '' for a model without code/")


def resolve_model(model: str, work: Path, what: str = "base model") -> str:
    """A model folder (a channel holding one model.tar.gz is unpacked) or a Hugging Face id;
    `what` names the setting in the error and the unpacked folder."""
    path = Path(model)
    if path.is_dir():
        return str(_unpack_if_archive(path, work, what.replace(" ", "_")))
    if path.is_absolute() or model.startswith("."):
        raise InputError(f"{what} folder {model!r} does not exist")
    return model  # a Hugging Face id, for a container that may download it


def prepare_pairs(config: Config) -> tuple[list, retrieval.Qrels, dict, dict]:
    """Train pairs, the eval set (queries, corpus, relevance) and their descriptions for
    metrics.json; validates every file. Pairs files or BEIR folders (inputs.py)."""
    train_pairs, qrels, train_info, eval_info, _ = prepare_data(config)
    return train_pairs, qrels, train_info, eval_info


def prepare_data(config: Config) -> tuple[list, retrieval.Qrels, dict, dict, retrieval.Qrels | None]:
    """prepare_pairs' values plus the validation set that picks the best epoch (None without
    --validation-pairs). Its queries are never trained on: it is drawn from the train pairs
    a --max-pairs sample left out when they are enough (so the sample is the one a run
    without validation trains on), else carved from the training pairs."""
    train_set = inputs.load(config.train, default_split="train")
    train_pairs, train_files = train_set.pairs, train_set.files
    if config.eval:
        eval_set = inputs.load(config.eval, default_split="test")
        qrels, eval_files, eval_pairs = eval_set.qrels, eval_set.files, len(eval_set.pairs)
        source = "eval channel"
    else:
        train_pairs, held_out = pairs_mod.split_off(train_pairs, config.eval_fraction, seed=config.seed,
                                                    max_held_out=config.max_eval_pairs)
        qrels, eval_files, eval_pairs = retrieval.build_qrels(held_out), train_files, len(held_out)
        source = "carved from train"
    pool, train_pairs = train_pairs, pairs_mod.sample(train_pairs, config.max_pairs, seed=config.seed)
    validation = None
    if config.validation_pairs:
        trained = {p.query for p in train_pairs}
        unused = [p for p in pool if p.query not in trained]
        if len({p.query for p in unused}) > config.validation_pairs:
            _, held = pairs_mod.split_off(unused, 1.0, seed=config.seed, max_held_out=config.validation_pairs)
        else:
            train_pairs, held = pairs_mod.split_off(train_pairs, 0.5, seed=config.seed,
                                                    max_held_out=config.validation_pairs)
        validation = retrieval.build_qrels(held)
    eval_info = {"source": source, "files": [str(f) for f in eval_files], "pairs": eval_pairs,
                 "queries": len(qrels.queries), "documents": len(qrels.documents)}
    train_info = {"files": [str(f) for f in train_files], "pairs": len(train_pairs),
                  "validation_queries": len(validation.queries) if validation else 0}
    return train_pairs, qrels, train_info, eval_info, validation


def _fingerprint(config: Config, train_pairs: list) -> str:
    """What must match for a checkpoint to be resumed: the data and the training settings."""
    h = hashlib.sha256()
    settings = {k: v for k, v in asdict(config).items()
                if k not in ("model_dir", "output_data_dir", "checkpoint_dir", "inference_code", "progress",
                             "train", "eval", "eval_batch_size", "log_steps", "checkpoint_steps",
                             "chunk_rows")}  # chunks change the work, not the result
    h.update(json.dumps(settings, sort_keys=True).encode())
    for pair in train_pairs:
        h.update(pair.query.encode() + b"\0" + pair.text.encode() + b"\0")
    return h.hexdigest()


def resumable_checkpoint(checkpoint_dir: Path, fingerprint: str) -> str | None:
    """The newest complete checkpoint of this same run, if any; stale ones are cleared."""
    stamp = checkpoint_dir / "fingerprint.txt"
    checkpoints = sorted((p for p in checkpoint_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                         key=lambda p: int(p.name.split("-")[-1]))
    if checkpoints and (not stamp.is_file() or stamp.read_text().strip() != fingerprint):
        log.warning("checkpoints in %s are from another run (different data or settings): starting over",
                    checkpoint_dir)
        for p in checkpoints:
            shutil.rmtree(p)
        checkpoints = []
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint + "\n")
    # trainer_state.json is written last: a checkpoint cut off half-way by a spot
    # interruption lacks it and is skipped.
    complete = [p for p in checkpoints if (p / "trainer_state.json").is_file()]
    return str(complete[-1]) if complete else None


# --------------------------------------------------------------------------- training


def _emit(line: str) -> None:
    # stdout, flushed: CloudWatch gets it at once and the metric definitions scrape it.
    print(line, flush=True)


def _log_metrics(stage: str, metrics: dict[str, float]) -> None:
    for key in contract.METRIC_KEYS:
        _emit(contract.metric_line(stage, key, metrics[key]))


def train(config: Config) -> dict:
    """Run one training job end to end; returns the metrics.json content."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_dir = Path(config.model_dir)
    if model_dir.is_dir() and any(model_dir.iterdir()):
        raise InputError(f"model dir {model_dir} is not empty: give a new or empty folder")
    with tempfile.TemporaryDirectory(prefix="semsearch-train-") as tmp:
        work = Path(tmp)
        # Everything that can be wrong with the inputs is found before the first slow step.
        check_config(config)
        code_dir = resolve_inference_code(config, work)
        base_model = resolve_model(config.base_model, work)
        miner_model = (resolve_model(config.hard_negative_model, work, "hard negative model")
                       if config.hard_negative_model else None)
        train_pairs, eval_set, train_info, eval_info, validation = prepare_data(config)
        log.info("train: %d pairs; eval (%s): %d queries over %d documents", len(train_pairs),
                 eval_info["source"], eval_info["queries"], eval_info["documents"])
        return _train(config, work, base_model, code_dir, train_pairs, eval_set, train_info, eval_info, validation,
                      miner_model)


def _train(config: Config, work: Path, base_model: str, code_dir: Path | None, train_pairs: list,
           eval_set: retrieval.Qrels, train_info: dict, eval_info: dict,
           validation: retrieval.Qrels | None = None, miner_model: str | None = None) -> dict:
    # Imported here so that --help and input errors answer in a second.
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from transformers import TrainerCallback, set_seed

    set_seed(config.seed)
    dropout, base_dropout = attention_dropout_override(base_model, config.attention_dropout)
    model = SentenceTransformer(base_model, device="cuda" if torch.cuda.is_available() else "cpu",
                                config_kwargs=dropout)
    chunk_rows = config.chunk_rows if config.chunk_rows is not None else (0 if torch.cuda.is_available()
                                                                           else CPU_CHUNK_ROWS)
    if chunk_rows:
        chunk_forward(model[0], chunk_rows)
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    encoder = retrieval.sentence_transformer_encoder(
        model, query_prefix=config.query_prefix, passage_prefix=config.passage_prefix,
        batch_size=config.eval_batch_size, show_progress=config.progress)

    log.info("evaluating the base model")
    base = retrieval.evaluate_qrels(encoder, eval_set)
    _log_metrics("base", base)

    loss = build_loss(config, model, base_model)
    columns = {"anchor": [p.query for p in train_pairs], "positive": [p.text for p in train_pairs]}
    mining = None
    if config.hard_negatives:
        miner = model
        if miner_model:
            miner = SentenceTransformer(miner_model, device=str(model.device))
            miner.max_seq_length = model.max_seq_length
        log.info("mining %d hard negatives per pair with %s", config.hard_negatives,
                 config.hard_negative_model or "the base model")
        negatives, mining = mine_negatives(miner, train_pairs, config)
        del miner
        columns.update(negatives)
    dataset = Dataset.from_dict(columns)
    probe = dataset.select(range(min(PROBE_PAIRS, len(dataset))))

    checkpoint_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else work / "checkpoints"
    saving = bool(config.checkpoint_dir) and config.checkpoint_steps > 0
    resume_from = resumable_checkpoint(checkpoint_dir, _fingerprint(config, train_pairs)) if saving else None
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    prompts = {"anchor": config.query_prefix, "positive": config.passage_prefix}
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoint_dir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of all steps
        weight_decay=config.weight_decay,
        seed=config.seed,
        data_seed=config.seed,
        bf16=bf16,
        fp16=cuda and not bf16,
        # In-batch negatives: a batch holding the same query or document twice would
        # teach the model that a text is unlike itself.
        batch_sampler="no_duplicates",
        prompts=prompts if any(prompts.values()) else None,
        save_strategy="steps" if saving else "no",
        save_steps=max(1, config.checkpoint_steps),
        save_total_limit=2,  # the newest may be cut off by a spot interruption
        logging_steps=max(1, config.log_steps),
        logging_first_step=True,
        disable_tqdm=not config.progress,
        report_to="none",
        dataloader_num_workers=0,
    )

    class LossLines(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                _emit(contract.loss_line(float(logs["loss"]), state.global_step))

    class BestEpoch(TrainerCallback):
        """The gate's metric on the validation pairs after each epoch; the best weights are
        kept in memory and training stops after `patience` epochs without a better score."""

        def __init__(self, qrels: retrieval.Qrels) -> None:
            self.qrels, self.best_state = qrels, None
            self.scores: list[dict] = []
            self.best_score, self.best_epoch, self.since_best = float("-inf"), 0, 0

        def on_epoch_end(self, args, state, control, **kwargs):
            score = retrieval.evaluate_qrels(encoder, self.qrels)[contract.PRIMARY_METRIC]
            epoch = round(state.epoch or 0, 3)
            self.scores.append({"epoch": epoch, contract.PRIMARY_METRIC: score})
            _emit(f"validation:{contract.PRIMARY_METRIC}={score:.6f}; epoch={epoch}")
            if score > self.best_score:
                self.best_score, self.best_epoch, self.since_best = score, epoch, 0
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            else:
                self.since_best += 1
                if self.since_best >= config.early_stopping_patience:
                    log.info("no better %s for %d epoch(s): stopping", contract.PRIMARY_METRIC, self.since_best)
                    control.should_training_stop = True
            model.train()  # evaluate() left the model in eval mode

    best_epoch = BestEpoch(validation) if validation is not None else None
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss,
                                         callbacks=[LossLines()] + ([best_epoch] if best_epoch else []))
    probe_before = trainer.evaluate(eval_dataset=probe)["eval_loss"]
    if resume_from:
        log.info("resuming from %s", resume_from)
    started = time.perf_counter()
    start_step = int(resume_from.rsplit("-", 1)[-1]) if resume_from else 0
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started
    selection = None
    if best_epoch is not None and best_epoch.best_state is not None:
        last = best_epoch.scores[-1]["epoch"]
        if best_epoch.best_epoch != last:
            log.info("keeping epoch %s (validation %s %.4f) over the last, %s", best_epoch.best_epoch,
                     contract.PRIMARY_METRIC, best_epoch.best_score, last)
            model.load_state_dict(best_epoch.best_state)
        selection = {"queries": len(best_epoch.qrels.queries), "patience": config.early_stopping_patience,
                     "scores": best_epoch.scores, "best_epoch": best_epoch.best_epoch}
    probe_after = trainer.evaluate(eval_dataset=probe)["eval_loss"]
    steps = trainer.state.global_step
    pairs_seen = (steps - start_step) / max(1, trainer.state.max_steps) * len(train_pairs) * config.epochs

    log.info("evaluating the tuned model")
    tuned = retrieval.evaluate_qrels(encoder, eval_set)
    gain = {key: tuned[key] - base[key] for key in contract.METRIC_KEYS}
    _log_metrics("tuned", tuned)
    _log_metrics("gain", gain)

    metrics = {
        "schema_version": contract.SCHEMA_VERSION,
        "primary_metric": contract.PRIMARY_METRIC,
        "base": base,
        "tuned": tuned,
        "gain": gain,
        "improved": gain[contract.PRIMARY_METRIC] > 0,
        "eval": eval_info,
        "train": {**train_info, "epochs": config.epochs, "epochs_run": round(trainer.state.epoch or 0, 3), "steps": steps, "seconds": round(seconds, 3),
                  "pairs_per_second": round(pairs_seen / seconds, 3) if seconds > 0 else None,
                  "probe_loss_before": probe_before, "probe_loss_after": probe_after,
                  "resumed_from": resume_from, "hard_negatives": mining, "chunk_rows": chunk_rows, "epoch_selection": selection},
        "hyperparameters": {k: v for k, v in asdict(config).items() if k != "progress"},
        "base_model": config.base_model,
    }
    # A training setting: the saved config keeps the base model's value for whoever tunes it next.
    if base_dropout and model.transformers_model is not None:
        model.transformers_model.config.update(base_dropout)
    save_model(model, config, code_dir)
    for folder in {Path(config.model_dir), Path(config.output_data_dir)}:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / contract.METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


#: Where Hugging Face configs keep the dropout on attention weights (BERT, RoBERTa, XLM-R and
#: MPNet use the first).
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


def attention_dropout_override(base_model: str, value: float | None) -> tuple[dict, dict]:
    """The config_kwargs that give the base model `value` as attention dropout while it
    trains, and the base model's own setting to put back in the saved config. InputError
    when its config has no such setting: the option would silently do nothing."""
    if value is None:
        return {}, {}
    from transformers import AutoConfig

    base = AutoConfig.from_pretrained(base_model)
    key = next((k for k in ATTENTION_DROPOUT_KEYS if hasattr(base, k)), None)
    if key is None:
        raise InputError(f"--attention-dropout: the base model's config ({type(base).__name__}) has none of "
                         f"{', '.join(ATTENTION_DROPOUT_KEYS)}; leave it at 'none'")
    return {key: value}, {key: getattr(base, key)}


def build_loss(config: Config, model, base_model: str):
    """config.loss, in its cached (GradCache) form with --cached-loss; --scale is 1/temperature."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses

    scale, mini = config.scale, config.mini_batch_size
    if config.loss == "gist":
        guide = SentenceTransformer(base_model, device=model.device)
        guide.max_seq_length = model.max_seq_length
        if config.cached_loss:
            return losses.CachedGISTEmbedLoss(model, guide, temperature=1 / scale, mini_batch_size=mini)
        return losses.GISTEmbedLoss(model, guide, temperature=1 / scale)
    if config.loss == "symmetric":
        if config.cached_loss:
            return losses.CachedMultipleNegativesSymmetricRankingLoss(model, scale=scale, mini_batch_size=mini)
        return losses.MultipleNegativesSymmetricRankingLoss(model, scale=scale)
    if config.cached_loss:
        return losses.CachedMultipleNegativesRankingLoss(model, scale=scale, mini_batch_size=mini)
    return losses.MultipleNegativesRankingLoss(model, scale=scale)


def mine_negatives(model, train_pairs: list, config: Config) -> tuple[dict[str, list[str]], dict]:
    """``config.hard_negatives`` negative columns ("negative_1", ...), row for row with
    ``train_pairs``, and what the mining found (for metrics.json).

    Candidates are the training documents, ranked for each query by `model`: the model as it is
    before training, or ``--hard-negative-model`` (such as one tuned on the same pairs before,
    whose remaining mistakes are harder negatives). sentence-transformers' miner drops the
    query's own documents (every text it is paired with), the first ``hard_negative_range_min``
    ranks and anything scoring above ``(1 - hard_negative_margin) x`` the positive's score,
    among the first ``hard_negative_range_max`` ranks (0: the miner's own window): on Debian
    descriptions those are mostly sibling packages describing the same thing, which would teach
    the model to push correct answers away. A pair left with fewer than N candidates gets
    random training documents (not its own) in the free slots, so every pair is still trained on.
    """
    import random

    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    n = config.hard_negatives
    unique = list(dict.fromkeys((p.query, p.text) for p in train_pairs))
    documents = list(dict.fromkeys(p.text for p in train_pairs))
    own: dict[str, set[str]] = {}
    for query, text in unique:
        own.setdefault(query, set()).add(text)
    if len(documents) - max(len(texts) for texts in own.values()) < n:
        raise InputError(f"--hard-negatives {n}: the training set has only {len(documents)} distinct documents")
    mined = mine_hard_negatives(
        Dataset.from_dict({"anchor": [q for q, _ in unique], "positive": [t for _, t in unique]}), model,
        range_min=config.hard_negative_range_min, range_max=config.hard_negative_range_max or None,
        relative_margin=config.hard_negative_margin, num_negatives=n,
        sampling_strategy="top", output_format="n-tuple", query_prompt=config.query_prefix,
        corpus_prompt=config.passage_prefix, batch_size=config.eval_batch_size, verbose=False)
    found: dict[tuple[str, str], list[str]] = {}
    for row in mined:
        found[(row["anchor"], row["positive"])] = [row[f"negative_{i}"] for i in range(1, n + 1)]
    rng = random.Random(config.seed)
    filled = 0
    for query, text in unique:
        if (query, text) not in found:
            # The miner drops a pair lacking N negatives in its window; a seeded draw of other
            # documents keeps it (what in-batch negatives would give it anyway).
            filled += 1
            pool = [d for d in rng.sample(documents, min(len(documents), n + len(own[query]))) if d not in own[query]]
            found[(query, text)] = pool[:n]
    columns = {f"negative_{i}": [found[(p.query, p.text)][i - 1] for p in train_pairs] for i in range(1, n + 1)}
    info = {"per_pair": n, "candidates": len(documents), "range_min": config.hard_negative_range_min,
            "range_max": config.hard_negative_range_max,
            "relative_margin": config.hard_negative_margin, "pairs_filled_randomly": filled,
            "model": config.hard_negative_model or "base"}
    log.info("hard negatives: %d per pair from %d documents; %d of %d pairs filled at random", n, len(documents),
             filled, len(unique))
    return columns, info


def save_model(model, config: Config, code_dir: Path | None) -> None:
    """The tuned model as safetensors + sentence-transformers configs (TEI reads the pooling
    from 1_Pooling/config.json), plus code/ for the PyTorch inference container."""
    model_dir = Path(config.model_dir)
    if config.query_prefix or config.passage_prefix:
        # Saved with the model, so whoever loads it later embeds the way it was trained.
        model.prompts = {"query": config.query_prefix, "document": config.passage_prefix}
    model.save(str(model_dir), safe_serialization=True, create_model_card=False)
    write_tei_configs(model_dir, model.max_seq_length)
    if code_dir is not None:
        shutil.copytree(code_dir, model_dir / contract.CODE_DIR_NAME, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests", ".*"))
        code = model_dir / contract.CODE_DIR_NAME
        if not (code / "requirements.txt").is_file():
            log.warning("%s has no requirements.txt: the inference container installs nothing extra", code_dir)
        elif not any((code / "wheels").glob("*.whl")):
            # The endpoint runs with network isolation: requirements.txt installs from wheels/ only.
            log.warning("%s has no wheels/: the model will not start in the SageMaker container (no network "
                        "there); the source bundle carries them (make wheels)", code_dir)


_LEGACY_POOLING_KEYS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}


def write_tei_configs(model_dir: Path, max_seq_length: int | None) -> None:
    """Rewrite the pooling and sentence_bert configs in the older key layout.

    Text Embeddings Inference reads ``pooling_mode_*`` flags from 1_Pooling/config.json and
    ``max_seq_length`` from sentence_bert_config.json; sentence-transformers 5+ saves a
    newer layout TEI cannot parse, but still loads the older one (it is what
    all-MiniLM-L6-v2 itself ships with).
    """
    modules = json.loads((model_dir / "modules.json").read_text())
    for module in modules:
        if module["type"].endswith(".Pooling"):
            path = model_dir / module["path"] / "config.json"
            config = json.loads(path.read_text())
            if "pooling_mode" in config:
                modes = config.pop("pooling_mode")
                modes = [modes] if isinstance(modes, str) else list(modes)
                legacy = {"word_embedding_dimension": config.pop("embedding_dimension")}
                legacy.update({key: mode in modes for mode, key in _LEGACY_POOLING_KEYS.items()})
                path.write_text(json.dumps({**legacy, **config}, indent=2) + "\n")
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file() and max_seq_length:
        config = json.loads(st_config.read_text())
        config["max_seq_length"] = max_seq_length
        st_config.write_text(json.dumps(config, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    try:
        train(config)
    except (pairs_mod.PairsError, InputError) as e:
        report_failure(f"train.py: error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
