"""TEI's own router (Hugging Face text-embeddings-inference) as the local ``tei`` endpoint.

Where the router comes from, in this order (``find_tei``): ``--tei-bin PATH`` or
``--tei-url URL`` (a TEI that runs already), then ``$SEMSEARCH_TEI_BIN``, then
``$SEMSEARCH_TEI_URL``, then ``../shared/tools/tei/text-embeddings-router`` beside the
repository. None of them: an error naming all three ways.

A router we start gets the model folder with an ONNX graph beside the weights (what TEI's
CPU backend serves; `semsearch package` writes one, else it is exported once into the cache)
and the batch limits of the stage's endpoint environment (stacks.containers
``tei_container_environment``: MAX_CLIENT_BATCH_SIZE, MAX_BATCH_TOKENS, AUTO_TRUNCATE).

Prompts: the connector puts the catalog's query/passage prefix in front of each text
(lambda/endpoint_request), so TEI must add none of its own. TEI v1.8.2 reads only ``prompts``
from the model's ``config_sentence_transformers.json`` (a ``default_prompt_name`` there is
ignored) and applies one only when a request names it (``prompt_name``, which our body never
does) or when started with ``--default-prompt[-name]`` / ``$DEFAULT_PROMPT[_NAME]``. A router we
start gets none of TEI's argument variables from our environment, and ``start_tei`` refuses
any TEI that prefixes texts nobody asked it to (``prompt_chars``), ours or the user's.

TEI checks no signature, but SageMaker does: ml-commons signs its calls (SigV4), so the
router sits behind a front that checks them exactly as `semsearch serve` does
(semsearch.sigv4), takes SageMaker's runtime path ``/endpoints/<name>/invocations`` and
hands the body to TEI's ``/invocations`` unchanged; TEI's status and body come back as
they are (its 413s and ``{"error", "error_type"}`` bodies included).

``python -m semsearch.local.tei ...`` runs router and front in one process group until
SIGTERM (how `semsearch local up --flavor tei` keeps them running); it prints
``serving NAME on http://...`` once TEI answers /health.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from semsearch.errors import UsageError
from semsearch.local.opensearch import free_port
from semsearch.sigv4 import SigV4Error, verify

REPO = Path(__file__).resolve().parents[2]
#: TEI v1.8.2's router built for CPU, as a checkout beside ../shared has it (its README says how).
SHARED_ROUTER = REPO.parent / "shared" / "tools" / "tei" / "text-embeddings-router"
CDK_JSON = REPO / "cdk.json"
#: SageMaker real-time endpoints refuse request bodies over 6 MB; the front does too.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
HOW_TO_GET_ONE = ("pass --tei-bin PATH (or set $SEMSEARCH_TEI_BIN) to TEI's text-embeddings-router, "
                  f"put it at {SHARED_ROUTER}, or pass --tei-url URL (or set $SEMSEARCH_TEI_URL) "
                  "for a TEI that runs already")


#: TEI v1.8.2 reads each of its arguments from the environment variable of that name too
#: (router/src/main.rs). A router we start gets only what ``router_command`` says: a
#: DEFAULT_PROMPT or DEFAULT_PROMPT_NAME left in the caller's environment would prefix every
#: text again on top of the connector's prefix; an API_KEY would make it refuse the front.
ROUTER_ARGUMENT_VARIABLES = (
    "MODEL_ID", "REVISION", "TOKENIZATION_WORKERS", "DTYPE", "POOLING", "MAX_CONCURRENT_REQUESTS",
    "MAX_BATCH_TOKENS", "MAX_BATCH_REQUESTS", "MAX_CLIENT_BATCH_SIZE", "AUTO_TRUNCATE", "DEFAULT_PROMPT_NAME",
    "DEFAULT_PROMPT", "DENSE_PATH", "HOSTNAME", "PORT", "UDS_PATH", "HUGGINGFACE_HUB_CACHE", "PAYLOAD_LIMIT",
    "API_KEY", "JSON_OUTPUT", "DISABLE_SPANS", "OTLP_ENDPOINT", "OTLP_SERVICE_NAME", "PROMETHEUS_PORT",
    "CORS_ALLOW_ORIGIN")
#: What ``prompt_chars`` asks TEI to tokenize (ASCII: TEI's offsets count the same in bytes and chars).
PROBE_TEXT = "semsearch prompt probe"


class TeiNotFound(UsageError):
    """No TEI router anywhere we look; the message says where we looked."""


@dataclass(frozen=True)
class TeiSource:
    """A router binary to start (``bin``) or a running TEI (``url``), and who named it."""

    origin: str
    bin: Path | None = None
    url: str | None = None

    def describe(self) -> str:
        return f"{self.bin or self.url} ({self.origin})"


def _router(path: str | os.PathLike[str], origin: str) -> TeiSource:
    path = Path(path).expanduser()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise TeiNotFound(f"{origin} {str(path)!r} is not an executable file (TEI's text-embeddings-router)")
    return TeiSource(origin=origin, bin=path.resolve())


def _running(url: str, origin: str) -> TeiSource:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TeiNotFound(f"{origin} {url!r} is not an http(s) URL of a TEI router")
    return TeiSource(origin=origin, url=url.rstrip("/"))


def find_tei(tei_bin: str | os.PathLike[str] | None = None, tei_url: str | None = None, *,
             environ: Mapping[str, str] = os.environ, shared_router: Path = SHARED_ROUTER) -> TeiSource:
    """The TEI to serve with (see the module docstring for the order); TeiNotFound if none."""
    if tei_bin and tei_url:
        raise UsageError("give --tei-bin or --tei-url, not both")
    if tei_bin:
        return _router(tei_bin, "--tei-bin")
    if tei_url:
        return _running(tei_url, "--tei-url")
    if environ.get("SEMSEARCH_TEI_BIN"):
        return _router(environ["SEMSEARCH_TEI_BIN"], "$SEMSEARCH_TEI_BIN")
    if environ.get("SEMSEARCH_TEI_URL"):
        return _running(environ["SEMSEARCH_TEI_URL"], "$SEMSEARCH_TEI_URL")
    if shared_router.is_file() and os.access(shared_router, os.X_OK):
        return TeiSource(origin="../shared/tools/tei", bin=shared_router)
    raise TeiNotFound(f"no TEI router found: {HOW_TO_GET_ONE}")


# ---------------------------------------------------------------------------------------
# What a stage deploys: the flavor and TEI's limits


@dataclass(frozen=True)
class StageServing:
    """The connector endpoint of a stage, as far as the local stack copies it."""

    stage: str
    flavor: str
    max_client_batch_size: int
    max_batch_tokens: int
    auto_truncate: bool
    tei_version: str = ""  # the TEI the stage's image runs


def stage_serving(stage: str | None = None, cdk_json: Path = CDK_JSON) -> StageServing:
    """From the validated config (the first stage by default, which the default deployment
    deploys first), through the same definition the endpoint's environment uses."""
    from stacks.config import ConfigError, load_config
    from stacks.containers import tei_container_environment

    try:
        context = json.loads(cdk_json.read_text()).get("context", {})
        name = stage or next(iter(context.get("stages") or {}), "")
        config = load_config({**context, "stage": name}).stage(name)
    except (OSError, ValueError, KeyError, ConfigError) as e:
        raise UsageError(f"cannot read the serving settings of stage {stage or '(first)'} from {cdk_json}: "
                         f"{str(e).splitlines()[0]}") from None
    endpoint = config.connector_endpoint
    env = tei_container_environment(endpoint)
    return StageServing(stage=config.name, flavor=endpoint.flavor,
                        max_client_batch_size=int(env["MAX_CLIENT_BATCH_SIZE"]),
                        max_batch_tokens=int(env["MAX_BATCH_TOKENS"]), auto_truncate=env["AUTO_TRUNCATE"] == "true",
                        tei_version=endpoint.tei_version)


# ---------------------------------------------------------------------------------------
# The router


def tei_model_folder(model_dir: Path, work_dir: Path) -> Path:
    """``model_dir`` itself when it holds an ONNX graph, else a folder of links to its files
    plus ``onnx/model.onnx`` (exported once into the cache), so TEI's CPU backend serves ONNX
    as the official CPU image does rather than its much slower candle path."""
    from inference_code.model_info import read_model_info
    from inference_code.onnx_export import FILES, ONNX_SUBDIR, onnx_path

    model_dir = Path(model_dir).resolve()
    if (model_dir / FILES["exact"]).is_file() or (model_dir / ONNX_SUBDIR / FILES["exact"]).is_file():
        return model_dir
    graph = onnx_path(read_model_info(model_dir), "exact")
    folder = work_dir / "tei-model"
    if folder.exists():
        for entry in sorted(folder.rglob("*"), reverse=True):  # links and the onnx/ folder only
            entry.rmdir() if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    (folder / ONNX_SUBDIR).mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        (folder / item.name).symlink_to(item)
    (folder / ONNX_SUBDIR / FILES["exact"]).symlink_to(graph)
    return folder


def router_command(router: Path, model_folder: Path, *, port: int, serving: StageServing) -> list[str]:
    cmd = [str(router), "--model-id", str(model_folder), "--dtype", "float32", "--hostname", "127.0.0.1",
           "--port", str(port), "--max-client-batch-size", str(serving.max_client_batch_size),
           "--max-batch-tokens", str(serving.max_batch_tokens)]
    return cmd + (["--auto-truncate"] if serving.auto_truncate else [])


def wait_healthy(url: str, *, timeout_s: float = 300, process: subprocess.Popen | None = None,
                 log_file: Path | None = None) -> None:
    """Until TEI answers GET /health with 200 (it warms the model up first: ~20 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                return
        except OSError as e:
            tail = log_file.read_text(errors="replace")[-2000:] if log_file and log_file.exists() else ""
            if process is not None and process.poll() is not None:
                raise UsageError(f"TEI's router exited ({process.returncode}) during start-up: {tail}") from None
            if time.monotonic() > deadline:
                raise UsageError(f"TEI at {url} not healthy after {timeout_s:.0f} s ({e}): {tail}") from None
            time.sleep(0.5)


def router_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The router's environment: ours, offline, without TEI's argument variables."""
    return {**{k: v for k, v in environ.items() if k not in ROUTER_ARGUMENT_VARIABLES}, "HF_HUB_OFFLINE": "1"}


def prompt_chars(url: str, prompt_name: str | None = None) -> int:
    """How many characters TEI puts before a text it embeds when the request names
    ``prompt_name`` (None: names none, as our connector's body): 0 for no prompt. From TEI's
    /tokenize, which applies prompts as /embed does and whose offsets count in the text as
    TEI encodes it (the prompt first)."""
    body = {"inputs": PROBE_TEXT, "add_special_tokens": False, **({"prompt_name": prompt_name} if prompt_name else {})}
    request = urllib.request.Request(f"{url}/tokenize", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        (tokens,) = json.load(response)
    return max(token["stop"] for token in tokens) - len(PROBE_TEXT)


def check_no_default_prompt(url: str) -> None:
    """UsageError when TEI at ``url`` prefixes texts whose request names no prompt: the
    connector has put the model's prefix there already, and it would count twice."""
    extra = prompt_chars(url)
    if extra:
        raise UsageError(f"TEI at {url} puts a default prompt ({extra} characters) before every text (started with "
                         "--default-prompt / --default-prompt-name or $DEFAULT_PROMPT / $DEFAULT_PROMPT_NAME): the "
                         "connector adds the query/passage prefix itself, so it would be applied twice; start TEI "
                         "without a default prompt")


def router_info(url: str) -> dict:
    """TEI's GET /info: its version, model, max_client_batch_size, max_input_length, auto_truncate..."""
    with urllib.request.urlopen(f"{url}/info", timeout=10) as response:
        return dict(json.load(response))


# ---------------------------------------------------------------------------------------
# The SigV4-checking front


class _Front(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, *, target: str, name: str, region: str, access_key: str | None,
                 secret_key: str | None):
        self.target = urlsplit(target)
        self.name, self.region, self.access_key, self.secret_key = name, region, access_key, secret_key
        super().__init__(address, _FrontHandler)


class _FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as ml-commons pools its connections
    server: _Front

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode())

    def _forward(self, method: str, path: str, body: bytes | None) -> None:
        target = self.server.target
        conn_class = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
        conn = conn_class(target.netloc, timeout=120)
        try:
            conn.request(method, target.path.rstrip("/") + path, body,
                         {"Content-Type": self.headers.get("Content-Type") or "application/json"})
            answer = conn.getresponse()
            payload = answer.read()
        except OSError as e:
            # What SageMaker answers when the container behind it does not: a 5xx naming why.
            self._error(502, f"TEI at {target.geturl()} did not answer: {type(e).__name__}: {e}")
            return
        finally:
            conn.close()
        self._send(answer.status, payload, answer.getheader("Content-Type") or "application/json")

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if urlsplit(self.path).path == "/ping":
            self._forward("GET", "/health", None)
        else:
            self._error(404, f"no route GET {urlsplit(self.path).path}; try GET /ping")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        parts = urlsplit(self.path)
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_PAYLOAD_BYTES:
            self.close_connection = True
            self._error(413 if length.isdigit() else 411,
                        f"send a Content-Length of at most {MAX_PAYLOAD_BYTES} bytes (got {length or 'none'})")
            return
        body = self.rfile.read(int(length))
        if parts.path not in ("/invocations", f"/endpoints/{self.server.name}/invocations"):
            self._error(404, f"no route POST {parts.path}; use /endpoints/{self.server.name}/invocations")
            return
        if "Authorization" in self.headers:  # none: plain local use, as `semsearch serve` allows
            headers: dict[str, str] = {}
            for key, value in self.headers.items():
                key = key.lower()
                headers[key] = f"{headers[key]},{value}" if key in headers else value
            try:
                verify("POST", parts.path, parts.query, headers, body, region=self.server.region,
                       service="sagemaker", access_key=self.server.access_key, secret_key=self.server.secret_key)
            except SigV4Error as e:
                self._error(403, str(e))
                return
        self._forward("POST", "/invocations", body)


@dataclass
class FrontHandle:
    server: _Front
    port: int
    name: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def invocations_url(self) -> str:
        return f"{self.url}/endpoints/{self.name}/invocations"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_front(target: str, *, name: str, region: str, access_key: str | None = None,
                secret_key: str | None = None, port: int = 0) -> FrontHandle:
    """The SigV4-checking front before ``target`` (a TEI base URL), on a background thread."""
    try:
        server = _Front(("127.0.0.1", port), target=target, name=name, region=region, access_key=access_key,
                        secret_key=secret_key)
    except OSError as e:
        raise UsageError(f"cannot listen on 127.0.0.1:{port}: {e.strerror or e}") from None
    threading.Thread(target=server.serve_forever, name=f"tei-front-{name}", daemon=True).start()
    return FrontHandle(server=server, port=server.server_address[1], name=name)


# ---------------------------------------------------------------------------------------
# Router + front


@dataclass
class RunningTei:
    """TEI (``tei_url``: ours or the user's) and the front before it (``front``)."""

    source: TeiSource
    tei_url: str
    front: FrontHandle
    process: subprocess.Popen | None = None
    log_file: Path | None = None
    info: dict = field(default_factory=dict)

    def stop(self) -> None:
        self.front.stop()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_tei(source: TeiSource, model_dir: Path, *, work_dir: Path, serving: StageServing, name: str,
              region: str, access_key: str | None = None, secret_key: str | None = None, port: int = 0,
              new_session: bool = True) -> RunningTei:
    """Start the router (unless ``source`` is a running TEI), wait until it is healthy, then
    the front; ``new_session=False`` keeps the router in this process's group (the CLI's
    process, whose group `local down` stops)."""
    process = log_file = None
    if source.bin is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        folder = tei_model_folder(model_dir, work_dir)
        tei_url = f"http://127.0.0.1:{free_port()}"
        log_file = work_dir / "tei.log"
        with log_file.open("wb") as out:
            process = subprocess.Popen(
                router_command(source.bin, folder, port=urlsplit(tei_url).port or 0, serving=serving),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=new_session,
                env=router_environment())
    else:
        assert source.url is not None
        tei_url = source.url
    try:
        wait_healthy(tei_url, process=process, log_file=log_file)
        check_no_default_prompt(tei_url)
        info = router_info(tei_url)
        front = start_front(tei_url, name=name, region=region, access_key=access_key, secret_key=secret_key,
                            port=port)
    except BaseException:
        if process is not None:
            process.kill()
            process.wait()
        raise
    return RunningTei(source=source, tei_url=tei_url, front=front, process=process, log_file=log_file, info=info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m semsearch.local.tei", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--work-dir", required=True, type=Path, help="TEI's model folder of links and its log")
    parser.add_argument("--tei-bin")
    parser.add_argument("--tei-url")
    parser.add_argument("--port", type=int, required=True, help="the front's port")
    parser.add_argument("--name", required=True, help="endpoint name in /endpoints/NAME/invocations")
    parser.add_argument("--region", required=True)
    parser.add_argument("--access-key", default=os.environ.get("SEMSEARCH_ACCESS_KEY"))
    parser.add_argument("--secret-key", default=os.environ.get("SEMSEARCH_SECRET_KEY"))
    args = parser.parse_args(argv)
    try:
        running = start_tei(find_tei(args.tei_bin, args.tei_url), args.model_dir, work_dir=args.work_dir,
                            serving=stage_serving(), name=args.name, region=args.region,
                            access_key=args.access_key, secret_key=args.secret_key, port=args.port,
                            new_session=False)
    except UsageError as e:
        print(f"tei: error: {e}", file=sys.stderr, flush=True)
        return 2
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    info = running.info
    print(f"TEI {info.get('version')} ({running.source.describe()}) at {running.tei_url}: "
          f"max_client_batch_size {info.get('max_client_batch_size')}, auto_truncate {info.get('auto_truncate')}",
          flush=True)
    print(f"serving {args.name} on {running.front.url}", flush=True)
    done.wait()
    with contextlib.suppress(Exception):
        running.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
