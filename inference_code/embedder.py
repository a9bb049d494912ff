"""Text in, embeddings out: the one code path behind every request shape.

Public API (also used by ``semsearch embed`` and ``semsearch package``)::

    from inference_code.embedder import load_embedder
    embedder = load_embedder(model_dir, mode="exact")      # or mode="fast"
    vectors = embedder.embed(["some text"], kind="passage")  # float32 (n, embedder.dimension)

and, for JSON Lines, ``inference_code.contracts.embed_jsonlines(embedder, lines)``.

Modes and backends (``embedder.path`` names the one that runs, e.g. ``openvino bf16``):

- ``exact`` (default): cosine to sentence-transformers' fp32 ``encode`` >= 0.9999 on every
  text (tests check it). On a CPU with bf16 instructions (``amx_bf16`` or ``avx512_bf16`` in
  /proc/cpuinfo) and OpenVINO installed: OpenVINO in bf16, about twice as fast as fp32 on
  AMX. The promise is checked at load time on ``PROBE_TEXTS`` against ONNX Runtime fp32; if
  it fails (or bf16 is not there) ONNX Runtime fp32 serves. On a GPU: PyTorch fp32.
- ``fast`` (opt-in): retrieval quality within half a point of fp32 (bench/inference.py).
  On an AMX CPU OpenVINO bf16, which measured faster there than every int8 path tried
  (ONNX Runtime's int8, OpenVINO with int8 weights, PyTorch dynamic int8) and is closer to
  fp32; elsewhere ONNX Runtime with dynamic int8 weights (VNNI where the CPU has it). On a
  GPU: PyTorch fp16.

How a request is run (why it is fast on CPU):

1. Texts get their query/passage prefix, are tokenized in one Rust call, truncated at the
   model's max tokens (never rejected), and sorted longest first.
2. Sorted texts are cut into runs and each run is padded only to its own longest text.
   Padding a whole request to its longest text wastes most of the work on typical text
   (the Debian descriptions average 58 tokens but a 32-text request pads to ~145).
   Where to cut is chosen exactly by a small dynamic program: cost = padded tokens + a
   fixed per-call cost, each run at most ``MAX_RUN_TOKENS`` padded tokens (bounds memory).
3. Each run goes through the transformer (OpenVINO keeps two in flight, one per stream);
   pooling and normalization happen in numpy, shared by every backend, and results are put
   back in request order.

The embedder is thread-safe: requests take turns at the model behind a lock, since
concurrent requests would only fight over the same cores.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

if __package__:  # imported as inference_code.embedder (tests, the semsearch CLI)
    from .model_info import ModelInfo, read_model_info
else:  # imported from SageMaker's code/ folder, where every module is top-level
    from model_info import ModelInfo, read_model_info  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

MODES = ("exact", "fast")
KINDS = ("query", "passage")
BACKENDS = ("onnx", "openvino", "torch")
#: Names the backend when the caller does not (SageMaker model environment, tests). ``onnx``
#: keeps fp32, whose vectors do not depend on which texts share a call; bf16's do, within the
#: exact promise, as its kernels round by the call's shape.
BACKEND_ENV = "SEMSEARCH_BACKEND"
#: The exact mode's promise: cosine to fp32 on every text.
EXACT_MIN_COSINE = 0.9999
#: CPU flags (/proc/cpuinfo) under which bf16 pays: AMX tiles, or AVX-512 bf16 dot products.
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
#: Where bf16 beat int8 in our measurements (fast mode): AMX only.
FAST_BF16_FLAGS = frozenset({"amx_bf16"})
#: Texts the exact mode's bf16 path is checked on at load time: short and long, prose, code,
#: numbers, non-English, and one over the model's max tokens (so the longest shape is covered).
PROBE_TEXTS = (
    "ssh client",
    "a",
    "portable network graphics (PNG) reference library, runtime files",
    "This package provides the GNU C compiler, a fairly portable optimizing compiler for C. "
    "It supports several C standards and many extensions.",
    "def main(argv: list[str]) -> int: return subprocess.call(['make', '-j4', *argv])",
    "Version 2.4.6 fixes CVE-2024-12345; 99.9% of users need no action, 0.1% must restart.",
    "Bibliothèque de traitement d'images pour les formats JPEG et PNG, avec des outils en ligne de commande.",
    "Программа для резервного копирования файлов по сети",
    "日本語の形態素解析エンジン",
    "utilities " * 40,
    "packaging " * 400,
)
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


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (the first ``flags`` line); empty where there is no /proc/cpuinfo."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


Call = tuple[object, np.ndarray, np.ndarray]  # (key, input_ids, attention_mask)


class Backend:
    """What the embedder runs: ``backend(input_ids, attention_mask)`` is last_hidden_state;
    ``run_all`` hands each call's answer to ``consume(key, hidden)`` as it comes."""

    #: The backend pads each call's width up to a multiple of this; the run planner counts it.
    width_step = 1

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run_all(self, calls: Iterable[Call], consume: Callable[[object, np.ndarray], None]) -> None:
        for key, input_ids, attention_mask in calls:
            consume(key, self(input_ids, attention_mask))


class OnnxBackend(Backend):
    """ONNX Runtime on CPU: fp32 (exact) or int8 weights (fast)."""

    name = "onnx"

    def __init__(self, path: Path, threads: int):
        self.precision = "int8" if "int8" in path.name else "fp32"
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


#: OpenVINO's CPU plugin compiles kernels and sizes its buffers per input shape, so every new
#: width costs time and memory the process keeps. Padding the width up to a multiple of this
#: keeps the shapes few. On the 2,048 Debian dev texts in 32-text calls (2-core AMX Xeon, bf16):
#: 402 texts/s and 349 MB peak RSS, against 194 texts/s and 576 MB unpadded; 8 gave 374 texts/s
#: and 369 MB; padding the rows to a multiple of 4 or 8 as well was slower (321, 230 texts/s).
OPENVINO_WIDTH_STEP = 16
#: OpenVINO streams: each runs one call on its own thread(s), so a request's runs go through
#: two at once. On 2,048 Debian dev texts in 32-text requests (2-core AMX Xeon, bf16, runs
#: planned on widths rounded up to OPENVINO_WIDTH_STEP), `python -m bench.openvino_streams`
#: measured two 1-thread streams at 853 texts/s against 754 for one 2-thread stream (1.13x,
#: medians of two processes each), for about 25 MB more peak RSS.
OPENVINO_STREAMS = 2


class OpenVinoBackend(Backend):
    """OpenVINO on CPU, from the fp32 ONNX file; ``precision`` bf16 runs on AMX / AVX-512 bf16.
    Each call's width is padded up to a multiple of ``OPENVINO_WIDTH_STEP`` (masked, so the real
    tokens' vectors do not change) and the answer cut back to the width asked for. ``run_all``
    keeps up to ``streams`` calls in flight, one per stream."""

    name = "openvino"
    width_step = OPENVINO_WIDTH_STEP

    def __init__(self, path: Path, threads: int, precision: str = "bf16", streams: int | None = None):
        import openvino as ov

        hint = {"bf16": "bf16", "fp32": "f32"}[precision]
        self.path = path
        self.precision = precision
        self.streams = max(1, min(threads, OPENVINO_STREAMS if streams is None else streams))
        # The threads are split among the streams. The ONNX file is read by OpenVINO itself (no torch).
        self.compiled = ov.Core().compile_model(str(path), "CPU", {
            "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": self.streams})
        self.request = self.compiled.create_infer_request()
        self.queue = ov.AsyncInferQueue(self.compiled, self.streams)

    def _padded(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        width = input_ids.shape[1]
        padded = -(-width // OPENVINO_WIDTH_STEP) * OPENVINO_WIDTH_STEP
        if padded != width:
            # Pad ids are 0, as the mask says nothing attends to them whatever they are.
            input_ids = np.pad(input_ids, ((0, 0), (0, padded - width)))
            attention_mask = np.pad(attention_mask, ((0, 0), (0, padded - width)))
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        # The slice copies: the request reuses its output buffer on the next call.
        width = input_ids.shape[1]
        return self.request.infer(self._padded(input_ids, attention_mask))[0][:, :width].copy()

    def run_all(self, calls: Iterable[Call], consume: Callable[[object, np.ndarray], None]) -> None:
        failures: list[BaseException] = []

        def done(request, userdata) -> None:
            key, width = userdata
            try:  # the output buffer is the request's own: consume it before the request is reused
                consume(key, request.get_output_tensor(0).data[:, :width])
            except BaseException as error:  # raised again below, not lost in OpenVINO's thread
                failures.append(error)

        self.queue.set_callback(done)
        try:
            for key, input_ids, attention_mask in calls:
                # Waits for a free stream, so at most ``streams`` calls' buffers are alive.
                self.queue.start_async(self._padded(input_ids, attention_mask), (key, input_ids.shape[1]))
        finally:
            self.queue.wait_all()
        if failures:
            raise failures[0]


class TorchBackend(Backend):
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
        self.precision = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
        self.model = AutoModel.from_pretrained(str(info.transformer_dir), dtype=dtype).to(self.device).eval()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(input_ids).to(self.device),
                             attention_mask=torch.from_numpy(attention_mask).to(self.device)).last_hidden_state
            return out.float().cpu().numpy()


class Embedder:
    """Embeds texts with one model; see the module docstring for how."""

    def __init__(self, info: ModelInfo, tokenizer, backend, mode: str, why: str = ""):
        self.info = info
        self.tokenizer = tokenizer
        self.backend = backend
        self.mode = mode
        #: Why this backend and precision serve (CPU flags, the load-time probe's cosine).
        self.why = why
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        """The backend and precision that run, e.g. ``openvino bf16`` or ``onnx fp32``."""
        return f"{self.backend.name} {self.backend.precision}"

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
        step = self.backend.width_step
        # Planned on the widths the backend will run, so its padding is counted.
        runs = plan_runs([-(-n // step) * step for n in lengths])
        masks: dict[object, np.ndarray] = {}

        def calls() -> Iterator[Call]:
            for start, end in runs:
                rows = order[start:end]
                width = lengths[start]
                input_ids = np.full((len(rows), width), self.info.pad_token_id, dtype=np.int64)
                mask = np.zeros((len(rows), width), dtype=np.int64)
                for r, i in enumerate(rows):
                    input_ids[r, : len(ids[i])] = ids[i]
                    mask[r, : len(ids[i])] = 1
                masks[start] = mask
                yield start, input_ids, mask

        def consume(start, hidden: np.ndarray) -> None:
            end = runs_end[start]
            out[order[start:end]] = self._pool(hidden, masks.pop(start))

        runs_end = dict(runs)
        with self._lock:
            self.backend.run_all(calls(), consume)
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
                  threads: int | None = None, cpu_flags: frozenset[str] | None = None) -> Embedder:
    """Load the model in ``model_dir`` (a sentence-transformers folder, as model.tar.gz unpacks).

    ``backend`` None takes $SEMSEARCH_BACKEND if set, else picks PyTorch on a GPU; on CPU
    OpenVINO bf16 where ``cpu_flags`` (default: this CPU's) say bf16 pays and the exact mode's
    probe passes, else ONNX Runtime (see the module docstring). ``threads`` defaults to every
    core this process may use.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if backend not in (None, *BACKENDS):
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    asked = "asked for"
    if backend is None and os.environ.get(BACKEND_ENV):
        backend = os.environ[BACKEND_ENV]
        if backend not in BACKENDS:
            raise ValueError(f"${BACKEND_ENV} must be one of {', '.join(BACKENDS)}, got {backend!r}")
        asked = f"${BACKEND_ENV}={backend}"
    info = read_model_info(Path(model_dir))
    threads = threads or _default_threads()
    tokenizer = load_tokenizer(info)
    if backend == "torch" or (backend is None and _cuda_available()):
        runner = TorchBackend(info, mode, "cuda" if _cuda_available() else "cpu", threads)
        return Embedder(info, tokenizer, runner, mode, why=asked if backend else "a CUDA GPU")
    if __package__:
        from .onnx_export import onnx_path
    else:
        from onnx_export import onnx_path  # type: ignore[no-redef]
    if backend == "onnx":
        return Embedder(info, tokenizer, OnnxBackend(onnx_path(info, mode), threads), mode, why=asked)
    if backend == "openvino":
        return Embedder(info, tokenizer, OpenVinoBackend(onnx_path(info, "exact"), threads), mode, why=asked)

    flags = read_cpu_flags() if cpu_flags is None else cpu_flags
    wanted = BF16_FLAGS if mode == "exact" else FAST_BF16_FLAGS
    found = sorted(flags & wanted)
    if not found:
        why = f"no {' or '.join(sorted(wanted))} in the CPU flags"
    elif not _openvino_installed():
        why = f"CPU has {', '.join(found)} but openvino is not installed"
    else:
        candidate = Embedder(info, tokenizer, OpenVinoBackend(onnx_path(info, "exact"), threads), mode)
        worst = probe_min_cosine(candidate, Embedder(info, tokenizer, OnnxBackend(onnx_path(info, "exact"), threads),
                                                     mode))
        if worst >= EXACT_MIN_COSINE:
            candidate.why = f"CPU has {', '.join(found)}; probe min cosine to fp32 {worst:.6f}"
            return candidate
        why = f"openvino bf16 probe min cosine to fp32 {worst:.6f} < {EXACT_MIN_COSINE}"
        logger.warning("%s: falling back to ONNX Runtime", why)
    return Embedder(info, tokenizer, OnnxBackend(onnx_path(info, mode), threads), mode, why=why)


def probe_min_cosine(candidate: Embedder, reference: Embedder) -> float:
    """Smallest cosine between the two embedders' vectors of ``PROBE_TEXTS``, queries and passages."""
    worst = 1.0
    for kind in KINDS:
        got, expected = candidate.embed(PROBE_TEXTS, kind), reference.embed(PROBE_TEXTS, kind)
        cos = (got * expected).sum(1) / np.maximum(
            np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1), 1e-12)
        worst = min(worst, float(cos.min()))
    return worst
