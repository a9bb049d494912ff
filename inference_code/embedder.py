"""Text in, embeddings out: the one code path behind every request shape.

Public API (also used by ``semsearch embed`` and ``semsearch package``)::

    from inference_code.embedder import load_embedder
    embedder = load_embedder(model_dir, mode="exact")      # or mode="fast"
    vectors = embedder.embed(["some text"], kind="passage")  # float32 (n, embedder.dimension)

and, for JSON Lines, ``inference_code.contracts.embed_jsonlines(embedder, lines)``.

Modes and backends:

- ``exact`` (default): fp32. On CPU through ONNX Runtime, on a GPU through PyTorch. Cosine
  to sentence-transformers' own ``encode`` is >= 0.9999 (tests check it).
- ``fast`` (opt-in): on CPU ONNX Runtime with dynamic int8 weights, on a GPU PyTorch fp16.
  Mean cosine >= 0.99 and retrieval quality within half a point (bench/inference.py).

How a request is run (why it is fast on CPU):

1. Texts get their query/passage prefix, are tokenized in one Rust call, truncated at the
   model's max tokens (never rejected), and sorted longest first.
2. Sorted texts are cut into runs and each run is padded only to its own longest text.
   Padding a whole request to its longest text wastes most of the work on typical text
   (the Debian descriptions average 58 tokens but a 32-text request pads to ~145).
   Where to cut is chosen exactly by a small dynamic program: cost = padded tokens + a
   fixed per-call cost, each run at most ``MAX_RUN_TOKENS`` padded tokens (bounds memory).
3. Each run goes through the transformer; pooling and normalization happen in numpy,
   shared by both backends, and results are put back in request order.

The embedder is thread-safe: model calls are serialized by a lock, since concurrent
calls would only fight over the same cores.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

if __package__:  # imported as inference_code.embedder (tests, the semsearch CLI)
    from .model_info import ModelInfo, read_model_info
else:  # imported from SageMaker's code/ folder, where every module is top-level
    from model_info import ModelInfo, read_model_info  # type: ignore[no-redef]

MODES = ("exact", "fast")
KINDS = ("query", "passage")
BACKENDS = ("onnx", "torch")
#: A model call costs about as much as this many extra padded tokens. The optimum is broad:
#: on a 2-core CPU with ONNX Runtime, 8 to 96 measured alike, while not cutting at all
#: (one run per request, as sentence-transformers does) was 3x slower on the Debian texts.
CALL_COST_TOKENS = 32
#: Largest run, in padded tokens: 32 texts of 128 tokens, 16 of 256. Keeps the attention
#: scores of one call near 50 MB for a 12-head model (ONNX Runtime keeps its peak buffers).
MAX_RUN_TOKENS = 4096


def plan_runs(lengths: Sequence[int], *, call_cost: int = CALL_COST_TOKENS,
              max_run_tokens: int = MAX_RUN_TOKENS) -> list[tuple[int, int]]:
    """Cut ``lengths`` (sorted longest first) into runs ``[start, end)`` padded to ``lengths[start]``.

    Minimizes the padded token count plus ``call_cost`` per run. O(n * run length).
    """
    n = len(lengths)
    best = [0] * (n + 1)  # best[j]: cheapest cost of the first j texts
    start_of = [0] * (n + 1)  # start_of[j]: where the last run of that cheapest plan starts
    for end in range(1, n + 1):
        best[end] = -1
        for start in range(end - 1, -1, -1):
            padded = (end - start) * lengths[start]
            if padded > max_run_tokens and start < end - 1:
                break  # runs only grow from here on; a single text is always allowed
            cost = best[start] + call_cost + padded
            if best[end] < 0 or cost < best[end]:
                best[end], start_of[end] = cost, start
    runs = []
    end = n
    while end > 0:
        runs.append((start_of[end], end))
        end = start_of[end]
    return runs[::-1]


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class OnnxBackend:
    """ONNX Runtime on CPU: fp32 (exact) or int8 weights (fast)."""

    name = "onnx"

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: spinning only pays on cores nobody
        # else wants, and on a shared 2-core machine it cut throughput by a third.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]


class TorchBackend:
    """PyTorch: the GPU path (fp32 exact, fp16 fast); on CPU only when asked for by name."""

    name = "torch"

    def __init__(self, info: ModelInfo, mode: str, device: str, threads: int):
        import torch
        from transformers import AutoModel

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        dtype = torch.float32
        if mode == "fast":
            dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.model = AutoModel.from_pretrained(str(info.transformer_dir), dtype=dtype).to(self.device).eval()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(input_ids).to(self.device),
                             attention_mask=torch.from_numpy(attention_mask).to(self.device)).last_hidden_state
            return out.float().cpu().numpy()


class Embedder:
    """Embeds texts with one model; see the module docstring for how."""

    def __init__(self, info: ModelInfo, tokenizer, backend, mode: str):
        self.info = info
        self.tokenizer = tokenizer
        self.backend = backend
        self.mode = mode
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return self.info.dimension

    @property
    def max_tokens(self) -> int:
        return self.info.max_tokens

    def token_ids(self, texts: Sequence[str], kind: str = "passage") -> list[list[int]]:
        """Token ids exactly as the model sees them: prefixed, truncated at max tokens."""
        return token_ids(self.info, self.tokenizer, texts, kind)

    def embed(self, texts: Sequence[str], kind: str = "passage") -> np.ndarray:
        """float32 array (len(texts), dimension), row i for texts[i]."""
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not len(texts):
            return out
        ids = self.token_ids(texts, kind)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        lengths = [len(ids[i]) for i in order]
        for start, end in plan_runs(lengths):
            rows = order[start:end]
            width = lengths[start]
            input_ids = np.full((len(rows), width), self.info.pad_token_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                input_ids[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            with self._lock:
                hidden = self.backend(input_ids, mask)
            out[rows] = self._pool(hidden, mask)
        if self.info.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)  # as torch.nn.functional.normalize
        return out

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        pooling = self.info.pooling
        if pooling == "cls":
            return hidden[:, 0]
        weights = mask.astype(np.float32)[:, :, None]
        if pooling == "max":
            return np.where(weights > 0, hidden, np.float32(-1e9)).max(axis=1)
        summed = (hidden * weights).sum(axis=1)
        return summed / np.maximum(weights.sum(axis=1), 1e-9)


def token_ids(info: ModelInfo, tokenizer, texts: Sequence[str], kind: str = "passage") -> list[list[int]]:
    """Token ids of ``texts`` as ``info``'s model sees them (for token counts without a model loaded)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    prefix = info.prefix(kind)
    # As sentence-transformers: prefix + text as given, lower-cased when the model asks for it.
    prepared = [prefix + text for text in texts]
    if info.do_lower_case:
        prepared = [text.lower() for text in prepared]
    return [encoding.ids for encoding in tokenizer.encode_batch(prepared)]


def load_tokenizer(info: ModelInfo):
    """The model's Rust tokenizer, truncating at the model's max tokens and padding nothing."""
    from tokenizers import Tokenizer

    path = info.transformer_dir / "tokenizer.json"
    if path.is_file():
        tokenizer = Tokenizer.from_file(str(path))
    else:  # only a slow tokenizer's files: let transformers convert it
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(info.transformer_dir), use_fast=True).backend_tokenizer
    # tokenizer.json may carry a fixed padding/truncation from training; ours replace it.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=info.max_tokens)
    return tokenizer


def _cuda_available() -> bool:
    # Importing torch costs about half a gigabyte of memory: only ask it when an NVIDIA
    # driver is loaded at all.
    if not Path("/proc/driver/nvidia/version").exists():
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def load_embedder(model_dir: str | os.PathLike[str], mode: str = "exact", *, backend: str | None = None,
                  threads: int | None = None) -> Embedder:
    """Load the model in ``model_dir`` (a sentence-transformers folder, as model.tar.gz unpacks).

    ``backend`` None picks PyTorch on a GPU, ONNX Runtime otherwise. ``threads`` defaults to
    every core this process may use.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if backend not in (None, *BACKENDS):
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    info = read_model_info(Path(model_dir))
    threads = threads or _default_threads()
    if backend is None:
        backend = "torch" if _cuda_available() else "onnx"
    runner: OnnxBackend | TorchBackend
    if backend == "torch":
        runner = TorchBackend(info, mode, "cuda" if _cuda_available() else "cpu", threads)
    else:
        if __package__:
            from .onnx_export import onnx_path
        else:
            from onnx_export import onnx_path  # type: ignore[no-redef]
        runner = OnnxBackend(onnx_path(info, mode), threads)
    return Embedder(info, load_tokenizer(info), runner, mode)
