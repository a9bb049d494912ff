"""What the training job promises to the outside: metric names, log lines, file names.

Pure Python with no third-party import, so the CDK stacks (SageMaker metric definitions,
the Step Functions gate) can import it without torch and stay in step with the job.

metrics.json (written to SM_OUTPUT_DATA_DIR, which SageMaker packs into output.tar.gz,
and to SM_MODEL_DIR, which it packs into model.tar.gz)::

    {
      "schema_version": 1,
      "primary_metric": "ndcg@10",            # the gate compares this one
      "base":  {"recall@1": f, "recall@3": f, "recall@10": f, "mrr@10": f, "ndcg@10": f},
      "tuned": {... same keys ...},
      "gain":  {... same keys, tuned - base ...},
      "improved": bool,                       # gain[primary_metric] > 0
      "eval":  {"source": "eval channel" | "carved from train", "files": [str],
                "pairs": int, "queries": int, "documents": int},
      "train": {"files": [str], "pairs": int, "epochs": float, "steps": int,
                "seconds": float, "pairs_per_second": float,
                "probe_loss_before": f, "probe_loss_after": f,   # MNRL loss on a fixed
                "resumed_from": str | null},                      # training slice
      "hyperparameters": {name: value, ...},  # every value the run used
      "base_model": str
    }

Every number is also printed as one log line that SageMaker metric definitions scrape,
``eval:<base|tuned|gain>:<metric>=<value>;`` e.g. ``eval:gain:ndcg@10=0.041230;``, and
the training loss as ``train:loss=<value>;`` while training runs. Values are printed
in fixed-point notation (never an exponent), so the regexes below stay simple.
"""

from __future__ import annotations

METRICS_FILE = "metrics.json"
#: The optional input channel whose model mines the hard negatives (train.py reads it as
#: SM_CHANNEL_MINER; the fine-tune workflow adds it from hard_negative_model_s3_uri).
MINER_CHANNEL = "miner"
SCHEMA_VERSION = 1
PRIMARY_METRIC = "ndcg@10"
# The order is the order of the log lines and of the printed table.
METRIC_KEYS = ("recall@1", "recall@3", "recall@10", "mrr@10", "ndcg@10")
STAGES = ("base", "tuned", "gain")

# Where the inference handler goes inside the model directory: SageMaker's PyTorch and
# Hugging Face inference containers look for code/inference.py and code/requirements.txt.
CODE_DIR_NAME = "code"


def metric_line(stage: str, key: str, value: float) -> str:
    """The log line for one evaluation figure, e.g. ``eval:tuned:ndcg@10=0.612300;``."""
    return f"eval:{stage}:{key}={value:.6f};"


def loss_line(loss: float, step: int) -> str:
    return f"train:loss={loss:.6f}; step={step}"


_NUMBER = r"(-?[0-9]+\.[0-9]+)"

# For CreateTrainingJob AlgorithmSpecification.MetricDefinitions (at most 40 entries;
# each regex has exactly one group). SageMaker reports the last value of each in
# DescribeTrainingJob.FinalMetricDataList, which a Step Functions gate can read directly.
METRIC_DEFINITIONS: tuple[dict[str, str], ...] = (
    {"Name": "train:loss", "Regex": r"train:loss=" + _NUMBER + ";"},
    *(
        {"Name": f"eval:{stage}:{key}", "Regex": f"eval:{stage}:{key}=" + _NUMBER + ";"}
        for stage in STAGES
        for key in METRIC_KEYS
    ),
)
