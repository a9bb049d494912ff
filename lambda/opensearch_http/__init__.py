"""The one HTTP client for OpenSearch: the search glue, the bulk loader and the semsearch CLI.

urllib3 with botocore's SigV4 signer (service ``es``) on Amazon OpenSearch Service, basic
auth or none on a local node. Both libraries ship in the Lambda Python runtime, so this
package goes into each function's asset as plain source (``lambda_code`` in
stacks/components/lambda_assets.py): synth copies files, with no bundling, no Docker and
no network, and an asset's hash changes only when this code does. (opensearch-py would
have to be copied into every asset at synth, with its dependencies, from whatever the
venv holds; what this code needs from it is one signed request.)

Two levels, both returning ``(status, parsed body)``:

- ``send``: one request, whatever the status; for callers that decide per status (the
  bulk writer retries 429 and 5xx).
- ``request``: JSON (or NDJSON) in; raises HTTPStatusError unless the status is 2xx or one
  listed in ``ok``.

Both raise Unreachable when no answer came (refused, timed out, TLS), and CredentialsError
when SigV4 finds no AWS credentials. Retries are the callers' own: urllib3's are off.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import urllib3

log = logging.getLogger(__name__)

AUTH_MODES = ("sigv4", "basic", "none")
CONNECT_TIMEOUT_S = 5.0
#: How much of an error body a message quotes.
MAX_BODY_IN_MESSAGE = 3000


class ClientConfigError(ValueError):
    """The client cannot be built as asked (unknown auth mode, SigV4 without a region)."""


class CredentialsError(Exception):
    """SigV4 was asked for and botocore found no AWS credentials."""


class Unreachable(Exception):
    """No HTTP answer from the node: refused, timed out, TLS failure. The message names the URL."""


class HTTPStatusError(Exception):
    """An answer outside 2xx (and outside ``ok``): method, path, status and body, all in the message."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        super().__init__(f"{method} {path} -> HTTP {status}: {json.dumps(body)[:MAX_BODY_IN_MESSAGE]}")


class OpenSearchClient:
    """A domain or node, and how to authenticate to it.

    ``ca_file`` is the node's own root certificate when it serves TLS with one, so the
    connection is verified rather than trusted blindly; certificates are always checked.
    """

    def __init__(self, url: str, *, auth_mode: str = "sigv4", region: str = "", username: str = "",
                 password: str = "", ca_file: str = "", read_timeout_s: float = 60.0) -> None:
        if auth_mode not in AUTH_MODES:
            raise ClientConfigError(f"auth mode {auth_mode!r}: expected one of {', '.join(AUTH_MODES)}")
        if auth_mode == "sigv4" and not region:
            raise ClientConfigError("SigV4 needs the domain's region (AWS_REGION)")
        self.url = url.rstrip("/")
        self.auth_mode = auth_mode
        self.region = region
        self.username = username
        self.password = password
        self.ca_file = ca_file
        tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED"}
        if ca_file:
            tls["ca_certs"] = ca_file
        # maxsize: the CLI's ingest sends from a few threads at once.
        self.pool = urllib3.PoolManager(maxsize=8, retries=False, timeout=urllib3.Timeout(
            connect=CONNECT_TIMEOUT_S, read=read_timeout_s), **tls)
        self._credentials: Any = None

    def _headers(self, method: str, url: str, data: bytes | None,
                 content_type: str = "application/json") -> dict[str, str]:
        headers = {"Content-Type": content_type}
        if self.auth_mode == "basic":
            headers.update(urllib3.make_headers(basic_auth=f"{self.username}:{self.password}"))
        elif self.auth_mode == "sigv4":
            # Imported here: local runs (basic or none) need no AWS libraries at all.
            from botocore.auth import SigV4Auth
            from botocore.awsrequest import AWSRequest
            from botocore.session import Session

            if self._credentials is None:
                self._credentials = Session().get_credentials()
                if self._credentials is None:
                    raise CredentialsError("no AWS credentials found to sign requests (SigV4)")
            request = AWSRequest(method=method, url=url, data=data, headers=headers)
            # Frozen per request: a Lambda role's credentials rotate under a long run.
            SigV4Auth(self._credentials.get_frozen_credentials(), "es", self.region).add_auth(request)
            headers = dict(request.headers.items())
        return headers

    def send(self, method: str, path: str, data: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, Any]:
        """One request, any status: (status, body parsed as JSON, else as text, else None)."""
        url = self.url + path
        headers = self._headers(method, url, data, content_type)
        try:
            resp = self.pool.request(method, url, body=data, headers=headers)
        except urllib3.exceptions.HTTPError as e:
            raise Unreachable(f"cannot reach {self.url}: {e}") from e
        try:
            body = json.loads(resp.data) if resp.data else None
        except ValueError:
            body = resp.data.decode(errors="replace")
        log.debug("%s %s -> %s", method, path, resp.status)
        return resp.status, body

    def request(self, method: str, path: str, body: Any = None, *, ndjson: str | None = None,
                ok: tuple[int, ...] = ()) -> tuple[int, Any]:
        """``body`` as JSON (or ``ndjson`` as is); HTTPStatusError unless 2xx or a status in ``ok``."""
        if ndjson is not None:
            status, payload = self.send(method, path, ndjson.encode(), "application/x-ndjson")
        else:
            status, payload = self.send(method, path, json.dumps(body).encode() if body is not None else None)
        if not (200 <= status < 300 or status in ok):
            raise HTTPStatusError(method, path, status, payload)
        return status, payload
