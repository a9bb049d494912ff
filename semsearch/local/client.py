"""The smallest OpenSearch HTTP client the local tools need: JSON in, (status, JSON) out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import urllib3


class OpenSearchError(Exception):
    """A non-2xx answer: the method, path, status and body, all in the message."""

    def __init__(self, method: str, path: str, status: int, body: Any):
        self.status = status
        self.body = body
        super().__init__(f"{method} {path} -> HTTP {status}: {json.dumps(body)[:2000]}")


@dataclass
class Connection:
    """Where a node listens and how to talk to it.

    ``ca_file`` is the node's own root certificate when security (TLS) is on, so the
    connection is verified rather than trusted blindly.
    """

    url: str
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    timeout_s: float = 60.0
    _pool: urllib3.PoolManager | None = field(default=None, repr=False, compare=False)

    @property
    def pool(self) -> urllib3.PoolManager:
        if self._pool is None:
            kwargs: dict[str, Any] = {"retries": False, "timeout": urllib3.Timeout(connect=5, read=self.timeout_s)}
            if self.ca_file:
                kwargs.update(cert_reqs="CERT_REQUIRED", ca_certs=self.ca_file)
            self._pool = urllib3.PoolManager(maxsize=8, **kwargs)
        return self._pool

    def request(self, method: str, path: str, body: Any = None, *, ndjson: str | None = None,
                ok: tuple[int, ...] = ()) -> tuple[int, Any]:
        """Send one request; raise OpenSearchError unless 2xx or a status listed in ``ok``."""
        headers = {"Content-Type": "application/json"}
        data: bytes | None = None
        if ndjson is not None:
            headers["Content-Type"] = "application/x-ndjson"
            data = ndjson.encode()
        elif body is not None:
            data = json.dumps(body).encode()
        if self.username is not None:
            headers.update(urllib3.make_headers(basic_auth=f"{self.username}:{self.password or ''}"))
        resp = self.pool.request(method, self.url.rstrip("/") + path, body=data, headers=headers)
        try:
            payload = json.loads(resp.data) if resp.data else None
        except ValueError:
            payload = resp.data.decode(errors="replace")
        if not (200 <= resp.status < 300 or resp.status in ok):
            raise OpenSearchError(method, path, resp.status, payload)
        return resp.status, payload

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "username": self.username, "password": self.password, "ca_file": self.ca_file}
