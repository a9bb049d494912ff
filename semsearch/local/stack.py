"""The whole search path on this machine: OpenSearch node + local endpoint + glue + corpus.

``up`` provisions by sending the glue (lambda/search_glue) the Create event CloudFormation
would send, its properties built from the same definitions a stage uses (the glue's
GlueProperties, the catalog's model shape, the config's index and field names), through ``run_custom_resource``, which plays the CDK Provider framework's part
(on_event, then is_complete until done). Both servers run in their own sessions, so they
outlive the command; their ids, ports and the glue's outputs live in
``<home>/stacks/<name>/state.json`` (home: see semsearch.local.opensearch; name: "local",
or $SEMSEARCH_LOCAL_STACK).

The endpoint serves one of the two flavors a stage deploys (default: the default config's):
``custom``, our handler (`semsearch serve`), or ``tei``, TEI's own router behind the same
SigV4-checking front (semsearch.local.tei); the glue gets that flavor's connector body.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from semsearch.errors import UsageError
from semsearch.local.client import Connection
from semsearch.local.ingest import bulk_ingest, read_corpus
from semsearch.local.opensearch import NodeSettings, OpenSearchNode, local_home, stop_process_group, wait_ready
from semsearch.local.tei import TeiSource, find_tei, stage_serving
from semsearch.models import DEFAULT_MODEL_ID
from stacks.catalog import MODELS, ModelSpec
from stacks.config import SearchConfig
from stacks.glue_properties import GlueProperties, index_properties

REGION = "us-east-1"
DEFAULT_OPENSEARCH_PORT = 19200
DEFAULT_ENDPOINT_PORT = 18081
#: A stage's search settings as the config defaults them (index alias, field names, k-NN
#: engine and graph): the local stack matches what a stage deploys unless told otherwise.
SEARCH_DEFAULTS = SearchConfig(endpoint="local")
FLAVORS = ("tei", "custom")
#: What the endpoint process's command line holds, per flavor (to tell it from any other process).
ENDPOINT_MARKERS = {"custom": "semsearch.cli serve", "tei": "semsearch.local.tei"}


# ---------------------------------------------------------------------------------------
# The glue, driven the way CloudFormation and the Provider framework drive it


def glue() -> ModuleType:
    """search_glue.handler (stacks.glue_properties put lambda/ on the import path)."""
    return importlib.import_module("search_glue.handler")


def cfn_strings(value: Any) -> Any:
    """Property values as CloudFormation delivers them: every scalar a string."""
    if isinstance(value, dict):
        return {k: cfn_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [cfn_strings(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run_custom_resource(request_type: str, props: dict[str, Any], *, physical_id: str | None = None,
                        old_props: dict[str, Any] | None = None, timeout_s: float = 180,
                        interval_s: float = 0.5) -> dict[str, Any]:
    """One custom-resource request: on_event, then is_complete until it says done.

    Returns ``{"PhysicalResourceId", "Data"}``; the handler's exception propagates (the
    framework's FAILED). Only the CloudFormation service itself is missing here.
    """
    handler = glue()
    event: dict[str, Any] = {
        "RequestType": request_type, "RequestId": str(uuid.uuid4()), "StackId": "semsearch-local",
        "LogicalResourceId": "SearchGlue", "ResourceType": "Custom::SearchGlue",
        "ResourceProperties": cfn_strings(props),
    }
    if physical_id:
        event["PhysicalResourceId"] = physical_id
    if old_props is not None:
        event["OldResourceProperties"] = cfn_strings(old_props)
    result = handler.on_event(event)
    # The framework hands is_complete the request plus on_event's answer.
    event = {**event, **result}
    data = dict(result.get("Data") or {})
    deadline = time.monotonic() + timeout_s
    while True:
        done = handler.is_complete(event)
        if done.get("IsComplete"):
            data.update(done.get("Data") or {})
            return {"PhysicalResourceId": event["PhysicalResourceId"], "Data": data}
        if time.monotonic() > deadline:
            raise TimeoutError(f"is_complete still false after {timeout_s:.0f} s")
        time.sleep(interval_s)


# ---------------------------------------------------------------------------------------
# The model's shape, read from its files (no weights loaded)


def model_shape(model_dir: Path) -> tuple[int, str]:
    """(dimension, space type) a sentence-transformers folder declares, to check it against
    the catalog entry it is served as (``catalog_model``).

    The dimension is the last Dense layer's output, else the pooling width; a model that
    ends in Normalize compares by inner product (cosine at lower cost), others by cosine.
    """
    modules = json.loads((model_dir / "modules.json").read_text())
    dimension = 0
    normalized = False
    for module in modules:
        cfg = model_dir / module["path"] / "config.json"
        if module["type"].endswith("Pooling"):
            dimension = json.loads(cfg.read_text())["word_embedding_dimension"]
        elif module["type"].endswith("Dense"):
            dimension = json.loads(cfg.read_text())["out_features"]
        normalized = module["type"].endswith("Normalize") or (normalized and not module["type"].endswith("Dense"))
    if not dimension:
        raise UsageError(f"{model_dir}: no Pooling module in modules.json; cannot tell the embedding dimension")
    return dimension, "innerproduct" if normalized else "cosinesimil"


def catalog_model(model_id: str, model_dir: Path) -> ModelSpec:
    """The catalog entry that gives the index its dimension and space type, as on AWS.

    The folder must have that shape: a model fine-tuned from an entry keeps the entry's.
    """
    if model_id not in MODELS:
        raise UsageError(f"--model {model_id!r} is not in the catalog; choose one of: {', '.join(MODELS)}")
    spec = MODELS[model_id]
    found = model_shape(model_dir)
    if found != (spec.dimension, spec.space_type):
        raise UsageError(f"--model-dir {str(model_dir)!r} holds a {found[0]}-dimension model compared by {found[1]}, "
                         f"but catalog model {model_id} is {spec.dimension}-dimension by {spec.space_type}: "
                         "pass --model with the entry it was trained from")
    return spec


def glue_properties(*, connection: Connection, endpoint_url: str, access_key: str, secret_key: str,
                    dimension: int, space_type: str, name: str = "semsearch-local",
                    index: str = SEARCH_DEFAULTS.index_name, flavor: str = "custom",
                    ingest_batch_size: int = 32, **overrides: Any) -> dict[str, Any]:
    """The custom resource's properties for a local node and endpoint.

    ``ingest_batch_size``: texts per endpoint call from the ingest pipeline; a stage sets it
    to the endpoint's ``max_client_batch_size`` (stacks/search_stack.py), as ``up`` does.

    ``overrides`` (by property name) go in as given, unchecked: tests send bad ones on purpose.
    """
    props = GlueProperties(
        opensearch_url=connection.url,
        auth_mode="basic" if connection.username else "none",
        region=REGION,
        username=connection.username or "",
        password=connection.password or "",
        ca_file=connection.ca_file or "",
        name=name,
        flavor=flavor,  # type: ignore[arg-type]  # checked by GlueProperties itself
        endpoint_url=endpoint_url,
        dimension=dimension,
        connector_access_key=access_key,
        connector_secret_key=secret_key,
        # The config's default k-NN engine, Lucene, is the only one a node from Maven Central has.
        **index_properties(dataclasses.replace(SEARCH_DEFAULTS, index_name=index)),
        space_type=space_type,
        number_of_replicas=0,  # one node: a replica could never be assigned
        ingest_batch_size=ingest_batch_size,
    )
    return {**props.to_properties(), **overrides}


# ---------------------------------------------------------------------------------------
# Processes


def _alive(pid: int | None, marker: str) -> bool:
    """True if ``pid`` runs and is the process we started (its command line names ``marker``)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_endpoint_process(model_dir: Path, *, port: int, name: str, access_key: str, secret_key: str,
                           log_file: Path, timeout_s: float = 400, tei: TeiSource | None = None) -> int:
    """The endpoint in its own session; returns its pid once it reports it serves.

    Without ``tei``: `semsearch serve` (flavor custom). With it: TEI's router (started from
    ``tei.bin``, or the one at ``tei.url``) behind the SigV4-checking front, one process group.
    """
    if tei is None:
        cmd = [sys.executable, "-m", "semsearch.cli", "serve", "--model-dir", str(model_dir), "--port", str(port),
               "--name", name, "--region", REGION]
    else:
        cmd = [sys.executable, "-m", "semsearch.local.tei", "--model-dir", str(model_dir), "--port", str(port),
               "--name", name, "--region", REGION, "--work-dir", str(log_file.parent / "tei"),
               *(["--tei-bin", str(tei.bin)] if tei.bin else ["--tei-url", str(tei.url)])]
    what = "`semsearch serve`" if tei is None else f"TEI ({tei.describe()}) and its front"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True,
                                # The keys travel in the environment: argv is world-readable in ps, and
                                # a urlsafe secret may start with "-", which argparse takes for an option.
                                env={**os.environ, "PYTHONUNBUFFERED": "1",
                                     "SEMSEARCH_ACCESS_KEY": access_key, "SEMSEARCH_SECRET_KEY": secret_key})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if f"serving {name} on http://" in log_file.read_text(errors="replace"):
            return proc.pid
        if proc.poll() is not None:
            raise UsageError(f"{what} exited ({proc.returncode}): {log_file.read_text()[-2000:]}")
        time.sleep(0.3)
    stop_process_group(proc.pid)
    raise UsageError(f"{what} did not report ready in {timeout_s:.0f} s; log: {log_file}")


# ---------------------------------------------------------------------------------------
# The stack


class LocalStack:
    """``up`` / ``status`` / ``down`` for one named local stack (the CLI's is "local")."""

    def __init__(self, name: str | None = None):
        # SEMSEARCH_LOCAL_STACK lets tests run their own stack beside a developer's.
        self.name = name or os.environ.get("SEMSEARCH_LOCAL_STACK") or "local"
        self.dir = local_home() / "stacks" / self.name
        self.state_file = self.dir / "state.json"

    def load(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text()) if self.state_file.is_file() else {}

    def save(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.chmod(0o600)  # it holds the node's admin password and the endpoint's keys
        tmp.replace(self.state_file)

    def connection(self, state: dict[str, Any] | None = None) -> Connection:
        state = state if state is not None else self.load()
        if not state.get("opensearch_url"):
            raise UsageError(f"no local stack {self.name!r}: run `semsearch local up` first")
        auth = state.get("auth") or {}
        return Connection(state["opensearch_url"], auth.get("username"), auth.get("password"), state.get("ca_file"))

    def up(self, model_dir: Path, *, model: str = DEFAULT_MODEL_ID, corpus: str | None = None,
           opensearch_port: int = DEFAULT_OPENSEARCH_PORT, endpoint_port: int = DEFAULT_ENDPOINT_PORT,
           security: bool = True, progress: Any = print, flavor: str | None = None,
           tei_bin: str | None = None, tei_url: str | None = None) -> dict[str, Any]:
        """Start whatever is not running, provision (adopting what exists), ingest the corpus.

        ``model`` is the catalog entry ``model_dir`` is (or was fine-tuned from). ``flavor``
        picks the endpoint (default: the one this stack serves with, so a re-`up` or a
        re-embed keeps it; for a new stack the default config's); ``tei_bin`` / ``tei_url``
        say where TEI comes from (semsearch.local.tei.find_tei).
        """
        started = time.monotonic()
        state = self.load()
        model_dir = model_dir.resolve()
        spec = catalog_model(model, model_dir)
        serving = stage_serving()
        # A stack from before flavors existed served with our handler.
        flavor = flavor or state.get("flavor") or ("custom" if state.get("endpoint_pid") else serving.flavor)
        if flavor not in FLAVORS:
            raise UsageError(f"--flavor must be one of {', '.join(FLAVORS)}, got {flavor!r}")
        if flavor != "tei" and (tei_bin or tei_url):
            raise UsageError("--tei-bin and --tei-url are for --flavor tei")
        tei = find_tei(tei_bin, tei_url) if flavor == "tei" else None
        state.setdefault("access_key", "AKLOCAL" + secrets.token_hex(6).upper())
        state.setdefault("secret_key", secrets.token_urlsafe(24))
        # The endpoint name follows the model and the flavor: another model or flavor means
        # another connector URL, hence new objects under a new physical id, as a new
        # SageMaker endpoint would.
        endpoint_name = "local-" + hashlib.sha256(
            (str(model_dir) + ("" if flavor == "custom" else f"#{flavor}")).encode()).hexdigest()[:8]
        tei_source = tei.describe() if tei else None

        old_marker = ENDPOINT_MARKERS[state.get("flavor", "custom")]
        if not (_alive(state.get("endpoint_pid"), old_marker) and state.get("endpoint_name") == endpoint_name
                and state.get("tei_source") == tei_source and _listening(state.get("endpoint_port", 0))):
            if state.get("endpoint_pid") and _alive(state["endpoint_pid"], old_marker):
                stop_process_group(state["endpoint_pid"])  # serving another model or flavor
            if _listening(endpoint_port):
                raise UsageError(f"port {endpoint_port} is taken by another program: pass --endpoint-port")
            progress(f"starting the {flavor} endpoint ({model_dir}"
                     + (f", TEI {tei_source}" if tei_source else "") + f") on port {endpoint_port}")
            state["endpoint_pid"] = start_endpoint_process(
                model_dir, port=endpoint_port, name=endpoint_name, access_key=state["access_key"],
                secret_key=state["secret_key"], log_file=self.dir / "endpoint.log", tei=tei)
            state.update(endpoint_port=endpoint_port, endpoint_name=endpoint_name, model_dir=str(model_dir),
                         flavor=flavor, tei_source=tei_source)
            self.save(state)
        state["endpoint_url"] = f"http://127.0.0.1:{state['endpoint_port']}/endpoints/{endpoint_name}/invocations"

        if _alive(state.get("opensearch_pid"), "org.opensearch.bootstrap.OpenSearch"):
            conn = self.connection(state)
            wait_ready(conn, deadline=time.monotonic() + 120)
        else:
            if _listening(opensearch_port):
                raise UsageError(f"port {opensearch_port} is taken by another program: pass --opensearch-port")
            progress(f"starting OpenSearch on port {opensearch_port}")
            node = OpenSearchNode(f"stack-{self.name}", NodeSettings(security=security, http_port=opensearch_port))
            conn = node.start()
            assert node.proc is not None
            state.update(opensearch_pid=node.proc.pid, opensearch_url=conn.url, ca_file=conn.ca_file,
                         auth={"username": conn.username, "password": conn.password} if conn.username else None,
                         opensearch_log=str(node.log_file))
            self.save(state)

        progress("provisioning connector, model, pipeline and index (the glue's Create)")
        props = glue_properties(connection=conn, endpoint_url=state["endpoint_url"], access_key=state["access_key"],
                                secret_key=state["secret_key"], dimension=spec.dimension,
                                space_type=spec.space_type, flavor=flavor,
                                ingest_batch_size=serving.max_client_batch_size)
        try:
            result = run_custom_resource("Create", props)
        except Exception as e:  # the glue's FAILED reason names the step, status and body
            raise UsageError(f"provisioning failed: {e}") from e
        previous = state.get("physical_id")
        if previous and previous != result["PhysicalResourceId"] and state.get("glue_properties"):
            # What CloudFormation does after a replacement: delete the old resource.
            progress(f"removing the objects of the previous model ({previous})")
            run_custom_resource("Delete", {**state["glue_properties"], **_connection_props(props)},
                                physical_id=previous)
        data = result["Data"]
        state.update(physical_id=result["PhysicalResourceId"], glue_properties=props, index=data["IndexName"],
                     model_id=data["ModelId"], pipeline=data["PipelineName"], connector_id=data["ConnectorId"],
                     embedding_field=props["EmbeddingField"], text_field=props["TextField"],
                     dimension=spec.dimension)
        self.save(state)

        if corpus:
            progress(f"ingesting {corpus} through pipeline {data['PipelineName']}")
            report = bulk_ingest(conn, data["IndexName"], read_corpus(corpus), text_field=props["TextField"])
            state["last_ingest"] = {"corpus": str(corpus), "indexed": report.indexed, "retried": report.retried,
                                    "seconds": round(report.seconds, 1), "docs_per_s": round(report.docs_per_s, 1)}
            self.save(state)
        state["up_seconds"] = round(time.monotonic() - started, 1)
        self.save(state)
        return self.status()

    def status(self) -> dict[str, Any]:
        state = self.load()
        if not state:
            return {"running": False, "stack": self.name}
        opensearch_up = _alive(state.get("opensearch_pid"), "org.opensearch.bootstrap.OpenSearch")
        endpoint_up = _alive(state.get("endpoint_pid"), ENDPOINT_MARKERS[state.get("flavor", "custom")])
        out: dict[str, Any] = {
            "stack": self.name,
            "running": opensearch_up and endpoint_up,
            "opensearch_running": opensearch_up,
            "endpoint_running": endpoint_up,
            "flavor": state.get("flavor", "custom"),
            "tei": state.get("tei_source"),
            "opensearch_url": state.get("opensearch_url"),
            "endpoint_url": state.get("endpoint_url"),
            "index": state.get("index"),
            "model_id": state.get("model_id"),
            "pipeline": state.get("pipeline"),
            "connector_id": state.get("connector_id"),
            "physical_id": state.get("physical_id"),
            "embedding_field": state.get("embedding_field"),
            "dimension": state.get("dimension"),
            "model_dir": state.get("model_dir"),
        }
        if state.get("auth"):
            out["auth"] = state["auth"]
            out["ca_file"] = state.get("ca_file")
        if state.get("last_ingest"):
            out["last_ingest"] = state["last_ingest"]
        if opensearch_up and state.get("index"):
            with contextlib.suppress(Exception):
                out["documents"] = self.connection(state).request("GET", f"/{state['index']}/_count")[1]["count"]
        return out

    def down(self, *, purge: bool = False) -> list[str]:
        """Stop both servers (only the processes this stack started); with purge, drop the data."""
        state = self.load()
        stopped = []
        for what, marker, port in (
                ("endpoint", ENDPOINT_MARKERS[state.get("flavor", "custom")], state.get("endpoint_port")),
                ("opensearch", "org.opensearch.bootstrap.OpenSearch", _port_of(state.get("opensearch_url")))):
            pid = state.pop(f"{what}_pid", None)
            if pid and _alive(pid, marker):
                stop_process_group(pid)
                stopped.append(what)
                if port and _listening(port):
                    raise UsageError(f"port {port} still answers after stopping {what}: another program holds it")
        if purge:
            shutil.rmtree(self.dir, ignore_errors=True)
            shutil.rmtree(local_home() / "nodes" / f"stack-{self.name}", ignore_errors=True)
        elif state:
            self.save(state)
        return stopped


def _connection_props(props: dict[str, Any]) -> dict[str, Any]:
    keys = ("OpenSearchUrl", "AuthMode", "Username", "Password", "CaFile")
    return {k: props[k] for k in keys if k in props}


def _port_of(url: str | None) -> int | None:
    return int(url.rsplit(":", 1)[1].rstrip("/")) if url else None
