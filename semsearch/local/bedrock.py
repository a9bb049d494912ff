"""A local stand-in for the Amazon Bedrock runtime's InvokeModel, for the embedding models we
use (lambda/endpoint_request/bedrock.py: Titan Text Embeddings v2, Cohere Embed v3 English and
multilingual). The Bedrock service cannot run here; this stands in for it so that callers,
the real ml-commons connector above all, are tested against what they would meet.

What it checks for real, refusing anything else the way the service does (HTTP status,
``x-amzn-ErrorType`` header and ``{"message"}`` body, which botocore parses into ClientError):

- the SigV4 signature (semsearch.sigv4, service ``bedrock``, this region; with the keys given,
  the signature itself and the clock): 403 MissingAuthenticationTokenException,
  UnrecognizedClientException or InvalidSignatureException;
- the request against botocore's bedrock-runtime service model, operation InvokeModel: method
  and path ``POST /model/{modelId}/invoke``, modelId's length and pattern, the header
  members' enums, patterns and lengths, the body's size: 400 ValidationException;
- the model's documented body (the module above, and the Bedrock user guide's inference
  parameters): a JSON object with the required fields, no others, each of its type and within
  its limits (Titan: inputText 1..50,000 characters, dimensions 1024/512/256, normalize,
  embeddingTypes float/binary; Cohere: texts 0..96 of at most 2,048 characters, input_type,
  truncate, embedding_types): 400 ValidationException; a model id it does not stand in for:
  404 ResourceNotFoundException.

What it answers is in each model's documented shape (Titan: ``embedding``,
``inputTextTokenCount``, ``embeddingsByType`` when asked; Cohere: ``id``, ``response_type``,
``texts``, ``embeddings``), with the headers X-Amzn-Bedrock-Input-Token-Count and
X-Amzn-Bedrock-Invocation-Latency. What is synthetic:

- the vectors: all-MiniLM-L6-v2 (384 dimensions, the packaged model, loaded offline) mapped
  into the requested dimension by a fixed matrix with orthonormal columns, so for 1024 and
  512 every cosine equals MiniLM's; for 256 it is an orthogonal projection onto a fixed
  256-dimensional subspace (cosines approximately kept), renormalized. They are not Titan's
  or Cohere's vectors: quality figures from this stand-in say nothing about those models.
- normalize false (Titan): the unit vector scaled by (1 + characters / 1000), so its length
  is not 1 but its direction is the normalized one's.
- Cohere's input_type changes nothing in the vector here (real Cohere prepends special
  tokens); it is checked and recorded (``StandIn.requests``) so tests can see each side's.
- token counts are whitespace-separated words, not the model's tokenizer; a Cohere text over
  512 of them with truncate NONE is refused, as the service refuses an over-long input.
- binary / int8 / uint8 / ubinary embedding types are derived from the float vector by sign
  (binary: packed bits as signed bytes; int8: rounded x*127).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from semsearch.bedrock import MODELS, BedrockModel
from semsearch.errors import UsageError
from semsearch.sigv4 import SigV4Error, verify

# isort: split
from endpoint_request.bedrock import COHERE_TRUNCATE, COHERE_V3, INPUT_TYPES, SERVICE, TITAN_V2

SOURCE_DIMENSION = 384
TITAN_EMBEDDING_TYPES = ("float", "binary")
COHERE_EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary")
_ERROR_NAMESPACE = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
_PATH = re.compile(r"^/model/([^/]+)/invoke$")

#: texts -> float32 array (len(texts), 384), unit rows: all-MiniLM-L6-v2 unless a test gives another.
Embed = Callable[[Sequence[str]], np.ndarray]


class BedrockError(Exception):
    """A refusal in the service's shape: HTTP status, error type, message."""

    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


def _validation(message: str) -> BedrockError:
    return BedrockError(400, "ValidationException", message)


def _malformed(where: str, what: str) -> BedrockError:
    # The service's words for a body its schema refuses.
    return _validation(f"Malformed input request: #{where}: {what}, please reformat your input and try again.")


# ---------------------------------------------------------------------------------------
# botocore's service model


@dataclass(frozen=True)
class _Operation:
    """InvokeModel as botocore's bedrock-runtime model describes it."""

    method: str
    model_id: Mapping[str, Any]
    headers: Mapping[str, Mapping[str, Any]]  # wire header name (lower case) -> member metadata
    max_body: int


def _invoke_model_operation() -> _Operation:
    import botocore.session

    op = botocore.session.get_session().get_service_model("bedrock-runtime").operation_model("InvokeModel")
    if op.http["requestUri"] != "/model/{modelId}/invoke":
        raise RuntimeError(f"botocore's InvokeModel moved to {op.http['requestUri']}; update the stand-in")
    members = op.input_shape.members
    headers = {}
    for shape in members.values():
        if shape.serialization.get("location") == "header":
            headers[shape.serialization["name"].lower()] = {**shape.metadata, "enum": shape.enum}
    return _Operation(method=op.http["method"], model_id=members["modelId"].metadata, headers=headers,
                      max_body=members["body"].metadata.get("max", 25_000_000))


def _check_string(name: str, value: str, meta: Mapping[str, Any]) -> None:
    if "min" in meta and len(value) < meta["min"]:
        raise _validation(f"1 validation error detected: Value at '{name}' failed to satisfy constraint: "
                          f"Member must have length greater than or equal to {meta['min']}")
    if "max" in meta and len(value) > meta["max"]:
        raise _validation(f"1 validation error detected: Value at '{name}' failed to satisfy constraint: "
                          f"Member must have length less than or equal to {meta['max']}")
    if meta.get("enum") and value not in meta["enum"]:
        raise _validation(f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy constraint: "
                          f"Member must satisfy enum value set: [{', '.join(meta['enum'])}]")
    if meta.get("pattern") and not re.fullmatch(meta["pattern"], value):
        raise _validation(f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy constraint: "
                          f"Member must satisfy regular expression pattern: {meta['pattern']}")


# ---------------------------------------------------------------------------------------
# Each model's documented body


def _object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _validation("Malformed input request, please reformat your input and try again.") from None
    if not isinstance(body, dict):
        raise _malformed("", f"expected type: JSONObject, found: {type(body).__name__}")
    return body


def _only(body: Mapping[str, Any], allowed: Sequence[str], required: Sequence[str]) -> None:
    for key in body:
        if key not in allowed:
            raise _malformed("", f"extraneous key [{key}] is not permitted")
    for key in required:
        if key not in body:
            raise _malformed("", f"required key [{key}] not found")


def _string_list(body: Mapping[str, Any], key: str, allowed: Sequence[str]) -> list[str]:
    value = body[key]
    if not isinstance(value, list) or not value:
        raise _malformed(f"/{key}", "expected a non-empty array")
    for item in value:
        if item not in allowed:
            raise _malformed(f"/{key}", f"{item!r} is not a valid enum value (allowed: {', '.join(allowed)})")
    return list(dict.fromkeys(value))


def _words(text: str) -> int:
    return len(text.split())


def check_titan(spec: BedrockModel, body: Mapping[str, Any]) -> dict[str, Any]:
    """Titan Text Embeddings v2's request, checked; its values with the documented defaults."""
    _only(body, ("inputText", "dimensions", "normalize", "embeddingTypes"), ("inputText",))
    text = body["inputText"]
    if not isinstance(text, str):
        raise _malformed("/inputText", f"expected type: String, found: {type(text).__name__}")
    if not 1 <= len(text) <= spec.max_chars:
        bound = "minLength: 1" if not text else f"maxLength: {spec.max_chars}"
        raise _malformed("/inputText", f"expected {bound}, actual: {len(text)}")
    if _words(text) > spec.max_tokens:
        raise _validation(f"400 Bad Request: Too many input tokens. Max input tokens: {spec.max_tokens}, "
                          f"request input token count: {_words(text)}")
    dimension = body.get("dimensions", spec.default_dimension)
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension not in spec.dimensions:
        raise _malformed("/dimensions", f"{dimension!r} is not a valid enum value "
                                        f"(allowed: {', '.join(map(str, spec.dimensions))})")
    normalize = body.get("normalize", True)
    if not isinstance(normalize, bool):
        raise _malformed("/normalize", f"expected type: Boolean, found: {type(normalize).__name__}")
    types = _string_list(body, "embeddingTypes", TITAN_EMBEDDING_TYPES) if "embeddingTypes" in body else []
    return {"texts": [text], "dimension": dimension, "normalize": normalize, "types": types}


def check_cohere(spec: BedrockModel, body: Mapping[str, Any]) -> dict[str, Any]:
    """Cohere Embed v3's request (texts only: this stand-in takes no images), checked."""
    _only(body, ("texts", "input_type", "truncate", "embedding_types"), ("texts", "input_type"))
    texts = body["texts"]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise _malformed("/texts", "expected type: JSONArray of String")
    if len(texts) > spec.max_texts:
        raise _malformed("/texts", f"expected maxItems: {spec.max_texts}, actual: {len(texts)}")
    for i, text in enumerate(texts):
        if len(text) > spec.max_chars:
            raise _malformed(f"/texts/{i}", f"expected maxLength: {spec.max_chars}, actual: {len(text)}")
    input_type = body["input_type"]
    if input_type not in INPUT_TYPES:
        raise _malformed("/input_type", f"{input_type!r} is not a valid enum value (allowed: {', '.join(INPUT_TYPES)})")
    truncate = body.get("truncate", "NONE")
    if truncate not in COHERE_TRUNCATE:
        raise _malformed("/truncate", f"{truncate!r} is not a valid enum value (allowed: {', '.join(COHERE_TRUNCATE)})")
    if truncate == "NONE":
        for i, text in enumerate(texts):
            if _words(text) > spec.max_tokens:
                raise _validation(f"texts[{i}] is {_words(text)} tokens, over the model's {spec.max_tokens}; "
                                  "shorten it or set truncate START or END")
    types = _string_list(body, "embedding_types", COHERE_EMBEDDING_TYPES) if "embedding_types" in body else []
    return {"texts": texts, "dimension": spec.default_dimension, "normalize": True, "types": types,
            "input_type": input_type, "truncate": truncate}


# ---------------------------------------------------------------------------------------
# Vectors


def projection(dimension: int) -> np.ndarray:
    """The fixed (dimension, 384) matrix MiniLM's vectors are mapped by: orthonormal columns
    for dimension >= 384 (inner products kept exactly), else orthonormal rows."""
    rng = np.random.default_rng(dimension)  # fixed per dimension: the same text, the same vector
    if dimension >= SOURCE_DIMENSION:
        q, _ = np.linalg.qr(rng.standard_normal((dimension, SOURCE_DIMENSION)))
        return q.astype(np.float32)
    q, _ = np.linalg.qr(rng.standard_normal((SOURCE_DIMENSION, dimension)))
    return q.T.astype(np.float32)


def _typed(vectors: np.ndarray, kind: str) -> list[list[int]] | list[list[float]]:
    if kind == "float":
        return [[float(x) for x in v] for v in vectors]
    if kind in ("int8", "uint8"):
        scaled = np.clip(np.rint(vectors * 127), -128, 127).astype(int)
        return (scaled + (128 if kind == "uint8" else 0)).tolist()
    bits = np.packbits(vectors > 0, axis=1).astype(int)  # binary / ubinary: one bit a dimension
    return (bits - 128 if kind == "binary" else bits).tolist()


# ---------------------------------------------------------------------------------------
# The server


@dataclass
class StandIn:
    """What the server knows: where it is, the keys it accepts, how it embeds, what it got."""

    region: str
    access_key: str | None
    secret_key: str | None
    embed: Embed
    operation: _Operation = field(default_factory=_invoke_model_operation)
    #: Every accepted request: {"model_id", "body"} (the parsed body), in arrival order.
    requests: list[dict[str, Any]] = field(default_factory=list)
    _projections: dict[int, np.ndarray] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def vectors(self, texts: Sequence[str], dimension: int, normalize: bool) -> np.ndarray:
        with self._lock:
            if dimension not in self._projections:
                self._projections[dimension] = projection(dimension)
            matrix = self._projections[dimension]
        source = np.asarray(self.embed(list(texts)), dtype=np.float32).reshape(len(texts), SOURCE_DIMENSION)
        mapped = source @ matrix.T
        mapped /= np.maximum(np.linalg.norm(mapped, axis=1, keepdims=True), 1e-12)
        if not normalize:
            mapped *= np.array([[1 + len(t) / 1000] for t in texts], dtype=np.float32)
        return mapped

    def invoke(self, model_id: str, raw: bytes) -> dict[str, Any]:
        spec = MODELS.get(model_id)
        if spec is None:
            raise BedrockError(404, "ResourceNotFoundException",
                               f"Could not resolve the foundation model from the model identifier {model_id} "
                               f"(this stand-in serves {', '.join(MODELS)})")
        body = _object(raw)
        request = check_titan(spec, body) if spec.family == TITAN_V2 else check_cohere(spec, body)
        with self._lock:
            self.requests.append({"model_id": model_id, "body": body})
        texts = request["texts"]
        vectors = self.vectors(texts, request["dimension"], request["normalize"]) if texts else np.zeros((0, 1))
        tokens = sum(_words(t) for t in texts)
        if spec.family == TITAN_V2:
            answer: dict[str, Any] = {"embedding": _typed(vectors, "float")[0], "inputTextTokenCount": tokens}
            if request["types"]:
                answer["embeddingsByType"] = {kind: _typed(vectors, kind)[0] for kind in request["types"]}
            return answer
        assert spec.family == COHERE_V3
        if request["types"]:
            return {"id": str(uuid.uuid4()), "response_type": "embeddings_by_type", "texts": texts,
                    "embeddings": {kind: _typed(vectors, kind) for kind in request["types"]}}
        return {"id": str(uuid.uuid4()), "response_type": "embeddings_floats", "texts": texts,
                "embeddings": _typed(vectors, "float")}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], stand_in: StandIn):
        self.stand_in = stand_in
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as ml-commons pools its connections
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _send(self, status: int, payload: dict[str, Any], headers: Mapping[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, error: BedrockError) -> None:
        self._send(error.status, {"message": error.message},
                   {"x-amzn-ErrorType": error.error_type + _ERROR_NAMESPACE})

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._refuse(BedrockError(404, "UnknownOperationException", f"no operation GET {urlsplit(self.path).path}"))

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        started = time.perf_counter()
        stand_in = self.server.stand_in
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self.close_connection = True
            self._refuse(BedrockError(411, "LengthRequiredException", "send a Content-Length"))
            return
        if int(length) > stand_in.operation.max_body:
            self.close_connection = True
            self._refuse(_validation(f"the body is {length} bytes; InvokeModel takes at most "
                                     f"{stand_in.operation.max_body}"))
            return
        raw = self.rfile.read(int(length))
        try:
            model_id = self._authorized_model(raw)
            answer = stand_in.invoke(model_id, raw)
        except BedrockError as e:
            self._refuse(e)
            return
        tokens = answer.get("inputTextTokenCount", sum(_words(t) for t in answer.get("texts", [])))
        self._send(200, answer, {"X-Amzn-Bedrock-Input-Token-Count": str(tokens),
                                 "X-Amzn-Bedrock-Invocation-Latency": str(int((time.perf_counter() - started) * 1000))})

    def _authorized_model(self, raw: bytes) -> str:
        """The signature, then the request as botocore's model has it; the model id."""
        stand_in = self.server.stand_in
        parts = urlsplit(self.path)
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            key = key.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        if "authorization" not in headers:
            raise BedrockError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        try:
            verify("POST", parts.path, parts.query, headers, raw, region=stand_in.region, service=SERVICE,
                   access_key=stand_in.access_key, secret_key=stand_in.secret_key)
        except SigV4Error as e:
            kind = "UnrecognizedClientException" if "unknown access key" in str(e) else "InvalidSignatureException"
            raise BedrockError(403, kind, str(e)) from None
        match = _PATH.match(parts.path)
        if match is None:
            raise BedrockError(404, "UnknownOperationException",
                               f"no operation POST {parts.path}; InvokeModel is POST /model/{{modelId}}/invoke")
        model_id = unquote(match.group(1))
        _check_string("modelId", model_id, stand_in.operation.model_id)
        for name, meta in stand_in.operation.headers.items():
            if name in headers:
                _check_string(name, headers[name], meta)
        content_type = headers.get("content-type", "application/json").split(";")[0].strip()
        if content_type != "application/json":
            raise _validation(f"Content-Type {content_type!r}: the embedding models take application/json")
        accept = headers.get("accept", "application/json")
        if accept not in ("application/json", "*/*"):
            raise _validation(f"Accept {accept!r}: the embedding models answer application/json")
        return model_id


@dataclass
class StandInHandle:
    """A running stand-in: ``url`` (``http://127.0.0.1:port``), ``invoke_url(model_id)``, ``stop()``."""

    server: _Server
    port: int

    @property
    def stand_in(self) -> StandIn:
        return self.server.stand_in

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def invoke_url(self, model_id: str) -> str:
        """What a connector posts to for ``model_id`` (the runtime's path, on this host)."""
        return f"{self.url}/model/{model_id}/invoke"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def minilm_embed() -> Embed:
    """all-MiniLM-L6-v2 from the packaged folder (offline), unit vectors of 384."""
    from inference_code.embedder import load_embedder
    from semsearch.models import packaged_model_dir

    embedder = load_embedder(packaged_model_dir(), mode="exact")
    return lambda texts: embedder.embed(texts)


def start_stand_in(*, region: str = "us-east-1", access_key: str | None = None, secret_key: str | None = None,
                   embed: Embed | None = None, port: int = 0) -> StandInHandle:
    """The stand-in on 127.0.0.1 (a background thread); without ``embed``, the packaged MiniLM."""
    if (access_key is None) != (secret_key is None):
        raise UsageError("give both the access key and the secret key, or neither")
    stand_in = StandIn(region=region, access_key=access_key, secret_key=secret_key, embed=embed or minilm_embed())
    try:
        server = _Server(("127.0.0.1", port), stand_in)
    except OSError as e:
        raise UsageError(f"cannot listen on 127.0.0.1:{port}: {e.strerror or e}") from None
    threading.Thread(target=server.serve_forever, name="bedrock-stand-in", daemon=True).start()
    return StandInHandle(server=server, port=server.server_address[1])


def main(argv: list[str] | None = None) -> int:
    """``python -m semsearch.local.bedrock --port N [--access-key K --secret-key S]``: serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m semsearch.local.bedrock", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--access-key")
    parser.add_argument("--secret-key")
    args = parser.parse_args(argv)
    handle = start_stand_in(region=args.region, access_key=args.access_key, secret_key=args.secret_key,
                            port=args.port)
    print(f"Bedrock stand-in on {handle.url}", flush=True)
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    done.wait()
    handle.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
