"""SageMaker entry point of the ``custom`` flavor: model_fn / input_fn / predict_fn / output_fn.

SageMaker unpacks model.tar.gz into the model directory (weights at its root, this folder
as ``code/``), puts ``code/`` on sys.path, installs ``code/requirements.txt`` and imports
this file as the top-level module ``inference``. Both the SageMaker PyTorch inference
toolkit and the Hugging Face one call these four functions with these signatures.

Environment (set on the SageMaker model):

- ``SEMSEARCH_MODE``: ``exact`` (default) or ``fast``; see embedder.py.
- ``SEMSEARCH_BACKEND``: unset (default) picks per machine (see embedder.py: OpenVINO bf16
  on CPUs with AMX / AVX-512 bf16, else ONNX Runtime; PyTorch on a GPU); ``onnx`` forces
  ONNX Runtime (fp32 for exact), e.g. where vectors must not depend on request batching.
- ``SEMSEARCH_MAX_BATCH``: texts per request, default ``contracts.DEFAULT_MAX_BATCH``.
- ``SEMSEARCH_THREADS``: threads per model worker (default: every core). With several
  model-server workers on a CPU instance, set it to cores / workers.

Request shapes and errors: see contracts.py. A bad request raises the PyTorch toolkit's
own error type carrying our 4xx status, so the client gets that status and the one-line
reason rather than a 500; the Hugging Face toolkit answers every exception with a 400.
"""

from __future__ import annotations

import logging
import os

if __package__:  # imported as inference_code.inference (tests)
    from .contracts import DEFAULT_MAX_BATCH, EmbeddingService, RequestError, Result, check_accept, encode_result
    from .contracts import parse_request as _parse_request
    from .embedder import load_embedder
    from .packaged_corpus import load_corpus
else:  # imported by the SageMaker toolkit from code/, where every module is top-level
    from contracts import (  # type: ignore[no-redef]
        DEFAULT_MAX_BATCH,
        EmbeddingService,
        RequestError,
        Result,
        check_accept,
        encode_result,
    )
    from contracts import parse_request as _parse_request  # type: ignore[no-redef]
    from embedder import load_embedder  # type: ignore[no-redef]
    from packaged_corpus import load_corpus  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

try:  # present in the SageMaker PyTorch container: lets our 4xx status reach the client
    from sagemaker_inference.errors import GenericInferenceToolkitError as _ToolkitError
except ImportError:  # tests, the local server, the Hugging Face container
    _ToolkitError = None


def _client_error(error: RequestError) -> Exception:
    if _ToolkitError is not None:
        return _ToolkitError(error.status, error.message)
    return error


def model_fn(model_dir: str) -> EmbeddingService:
    mode = os.environ.get("SEMSEARCH_MODE", "exact")
    threads = int(os.environ.get("SEMSEARCH_THREADS") or 0) or None
    max_batch = int(os.environ.get("SEMSEARCH_MAX_BATCH") or DEFAULT_MAX_BATCH)
    embedder = load_embedder(model_dir, mode=mode, threads=threads)
    service = EmbeddingService(embedder, load_corpus(model_dir), max_batch=max_batch)
    logger.info("loaded %s (%d dims, max %d tokens, %s pooling) mode=%s path=%r (%s) max_batch=%d corpus=%s",
                embedder.info.model_id, embedder.dimension, embedder.max_tokens, embedder.info.pooling, mode,
                embedder.path, embedder.why, max_batch, "none" if service.corpus is None else len(service.corpus.ids))
    return service


def input_fn(input_data: bytes | str, content_type: str):
    try:
        return _parse_request(input_data, content_type)
    except RequestError as e:
        raise _client_error(e) from None


def predict_fn(data, model: EmbeddingService) -> Result:
    try:
        return model.run(data)
    except RequestError as e:
        raise _client_error(e) from None


def output_fn(prediction: Result, accept: str) -> bytes:
    # Only the body: the Hugging Face toolkit sends whatever output_fn returns, so no
    # (body, content type) tuple; the toolkits set the response type from Accept.
    try:
        check_accept(accept)
    except RequestError as e:
        raise _client_error(e) from None
    return encode_result(prediction)[0]
