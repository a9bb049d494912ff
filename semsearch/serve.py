"""`semsearch serve`: the ``custom`` endpoint's handler behind a local HTTP server.

Routes (what a SageMaker container and the SageMaker runtime API expose):

- ``GET /ping``: 200 once the model is loaded, with the mode and the backend/precision that
  serves it and why (``{"status": "Healthy", "mode": "exact", "path": "openvino bf16", ...}``).
- ``POST /invocations`` (container path) and ``POST /endpoints/<name>/invocations``
  (runtime path, the URL the OpenSearch connector calls): the request shapes of
  ``inference_code.contracts``. Errors are ``{"error": "<one line>"}`` with a 4xx status.
  ``X-Amzn-SageMaker-Inference-Component`` (the inference component a request names on an
  endpoint that scales to zero) is accepted and not checked: this server hosts one model,
  which answers whichever hosting the stage uses.

A request carrying ``Authorization: AWS4-HMAC-SHA256 ...`` is checked as SageMaker would
(semsearch/sigv4.py): its scope must name service ``sagemaker`` and this server's region,
and with keys configured the signature must verify, else 403. No Authorization header is
fine: plain local use. Bodies over ``max_payload_mb`` get 413 before they are read.

Concurrency: one thread per connection (HTTP/1.1 keep-alive, as ml-commons pools its
connections); the embedder serializes model calls itself. ``stop()`` is graceful: no new
connections, requests in flight finish and get their answer, idle connections are closed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from inference_code.contracts import DEFAULT_MAX_BATCH, EmbeddingService, RequestError
from inference_code.embedder import BACKENDS, MODES, load_embedder
from inference_code.packaged_corpus import load_corpus
from semsearch.errors import UsageError
from semsearch.sigv4 import SigV4Error, verify

logger = logging.getLogger(__name__)

#: SageMaker real-time endpoints refuse request bodies over 6 MB.
DEFAULT_MAX_PAYLOAD_MB = 6.0
#: An idle keep-alive connection is closed after this long (clients reconnect transparently).
IDLE_TIMEOUT_S = 120


@dataclass
class ServerConfig:
    name: str
    region: str
    access_key: str | None
    secret_key: str | None
    max_payload_bytes: int


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # stop() waits for requests in flight
    block_on_close = True
    allow_reuse_address = True  # a restarted server gets its port back at once

    def __init__(self, address, service: EmbeddingService, config: ServerConfig):
        self.service = service
        self.config = config
        self.stopping = False
        self._idle: dict[socket.socket, bool] = {}
        self._idle_lock = threading.Lock()
        super().__init__(address, _Handler)

    def set_idle(self, conn: socket.socket, idle: bool | None) -> None:
        """Track each connection as idle (between requests) or busy; None forgets it."""
        with self._idle_lock:
            if idle is None:
                self._idle.pop(conn, None)
            else:
                self._idle[conn] = idle

    def busy_connections(self) -> int:
        """Connections with a request in progress (read, being answered)."""
        with self._idle_lock:
            return sum(not idle for idle in self._idle.values())

    def close_idle_connections(self) -> None:
        with self._idle_lock:
            idle = [conn for conn, is_idle in self._idle.items() if is_idle]
        for conn in idle:
            # Wakes the handler thread blocked reading the next request: it sees EOF and ends.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.set_idle(self.connection, True)

    def finish(self) -> None:
        self.server.set_idle(self.connection, None)
        super().finish()

    def parse_request(self) -> bool:  # called once a request line has arrived
        self.server.set_idle(self.connection, False)
        return super().parse_request()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        logger.debug("%s - %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        if self.server.stopping:
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.server.set_idle(self.connection, True)

    def _error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode())

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/ping":
            embedder = self.server.service.embedder
            self._send(200, json.dumps({"status": "Healthy", "mode": embedder.mode, "path": embedder.path,
                                        "why": embedder.why}).encode())
        else:
            self._error(404, f"no route GET {urlsplit(self.path).path}; try GET /ping")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        name = self.server.config.name
        if path != "/invocations" and not (path.startswith("/endpoints/") and path.endswith("/invocations")):
            self._discard_body()
            self._error(404, f"no route POST {path}; use /invocations or /endpoints/{name}/invocations")
            return
        if path.startswith("/endpoints/") and path != f"/endpoints/{name}/invocations":
            self._discard_body()
            self._error(404, f"no endpoint {path.split('/')[2]!r} here; this server is {name!r}")
            return
        body = self._read_body()
        if body is None:
            return
        if not self._authorized(body):
            return
        try:
            payload, content_type = self.server.service.invoke(
                body, self.headers.get("Content-Type"), self.headers.get("Accept"))
        except RequestError as e:
            self._error(e.status, e.message)
            return
        except Exception as e:  # the server keeps serving whatever one request does
            logger.error("request failed: %s", traceback.format_exc())
            self._error(500, f"internal error: {type(e).__name__}: {e}".splitlines()[0])
            return
        self._send(200, payload, content_type)

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 411/413 (then the connection closes)."""
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length is None or not length.isdigit():
            self.close_connection = True
            self._error(411, "send the body with a Content-Length header (chunked bodies are not supported)")
            return None
        limit = self.server.config.max_payload_bytes
        if int(length) > limit:
            self.close_connection = True  # the unread body would be taken for the next request
            self._error(413, f"body of {int(length)} bytes is over this endpoint's limit of {limit} bytes")
            return None
        return self.rfile.read(int(length))

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= self.server.config.max_payload_bytes:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def _authorized(self, body: bytes) -> bool:
        if "Authorization" not in self.headers:
            return True  # plain local use
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            key = key.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        config = self.server.config
        parts = urlsplit(self.path)
        try:
            verify("POST", parts.path, parts.query, headers, body, region=config.region, service="sagemaker",
                   access_key=config.access_key, secret_key=config.secret_key)
        except SigV4Error as e:
            self._error(403, str(e))
            return False
        return True


@dataclass
class ServerHandle:
    """A running server: ``url`` (``http://host:port``), ``port``, ``stop()``."""

    server: _Server
    thread: threading.Thread
    host: str
    port: int
    name: str
    _stopped: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def invocations_url(self) -> str:
        """The SageMaker-runtime-style URL of this endpoint."""
        return f"{self.url}/endpoints/{self.name}/invocations"

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish, close idle connections. Idempotent.

        A request whose bytes are still unread when stop() begins counts as idle: its
        connection closes unanswered, which HTTP clients treat as a retryable failure.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.server.stopping = True
        self.server.shutdown()  # returns once serve_forever has left its loop
        self.server.close_idle_connections()
        self.server.server_close()  # joins the connection threads (block_on_close)
        self.thread.join()


def start_server(model_dir: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0, name: str = "local",
                 region: str = "us-east-1", access_key: str | None = None, secret_key: str | None = None,
                 mode: str = "exact", max_batch: int = DEFAULT_MAX_BATCH,
                 max_payload_mb: float = DEFAULT_MAX_PAYLOAD_MB, threads: int | None = None,
                 backend: str | None = None) -> ServerHandle:
    """Load the model and serve it on a background thread; returns once it is listening."""
    if (access_key is None) != (secret_key is None):
        raise UsageError("give both the access key and the secret key, or neither")
    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if backend not in (None, *BACKENDS):
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if max_batch < 1 or max_payload_mb <= 0 or (threads is not None and threads < 1):
        raise UsageError("--max-batch, --max-payload-mb and --threads must be positive")
    embedder = load_embedder(Path(model_dir), mode=mode, threads=threads, backend=backend)
    service = EmbeddingService(embedder, load_corpus(Path(model_dir)), max_batch=max_batch)
    config = ServerConfig(name=name, region=region, access_key=access_key, secret_key=secret_key,
                          max_payload_bytes=int(max_payload_mb * 1024 * 1024))
    try:
        server = _Server((host, port), service, config)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    thread = threading.Thread(target=server.serve_forever, name=f"semsearch-serve-{name}", daemon=True)
    thread.start()
    return ServerHandle(server=server, thread=thread, host=host, port=server.server_address[1], name=name)


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve a model as the custom SageMaker endpoint would, locally",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", help="sentence-transformers model folder (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port (default: 8080)")
    p.add_argument("--name", default="local", help="endpoint name in /endpoints/NAME/invocations (default: local)")
    p.add_argument("--region", default="us-east-1", help="region SigV4 signatures must be scoped to")
    p.add_argument("--access-key", default=os.environ.get("SEMSEARCH_ACCESS_KEY"),
                   help="verify SigV4 signatures with this key pair (default: $SEMSEARCH_ACCESS_KEY)")
    p.add_argument("--secret-key", default=os.environ.get("SEMSEARCH_SECRET_KEY"),
                   help="(default: $SEMSEARCH_SECRET_KEY)")
    p.add_argument("--mode", choices=MODES, default="exact",
                   help="exact: cosine >= 0.9999 to sentence-transformers (bf16 where the CPU has it, else fp32); "
                   "fast: recall within half a point (bf16 on AMX, else int8) (default: exact)")
    p.add_argument("--backend", choices=BACKENDS, help="run this backend rather than the one picked for the CPU "
                   "(onnx: fp32/int8 by mode; openvino: bf16; torch: fp32/bf16 by mode), e.g. to compare them")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"texts per request (default: {DEFAULT_MAX_BATCH})")
    p.add_argument("--max-payload-mb", type=float, default=DEFAULT_MAX_PAYLOAD_MB,
                   help=f"largest request body (default: {DEFAULT_MAX_PAYLOAD_MB:g}, SageMaker's limit)")
    p.add_argument("--threads", type=int, help="model threads (default: every core; fewer when the machine is "
                   "shared, e.g. with a local OpenSearch)")
    p.set_defaults(func=run)


def run(args) -> int:
    from semsearch.models import resolve_model_dir

    model_dir = resolve_model_dir(args.model_dir)
    handle = start_server(model_dir, host=args.host, port=args.port, name=args.name, region=args.region,
                          access_key=args.access_key, secret_key=args.secret_key, mode=args.mode,
                          max_batch=args.max_batch, max_payload_mb=args.max_payload_mb, threads=args.threads,
                          backend=args.backend)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    embedder = handle.server.service.embedder
    print(f"serving {args.name} on {handle.url}", flush=True)
    print(f"{args.name}: mode {embedder.mode} on {embedder.path} ({embedder.why})", file=sys.stderr, flush=True)
    done.wait()
    print(f"stopping {args.name}: finishing requests in flight", file=sys.stderr, flush=True)
    handle.stop()
    return 0
