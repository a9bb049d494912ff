"""HTTP to the domain: urllib3 (in the Lambda runtime) and botocore's SigV4 signer.

Every call names the step it belongs to, so any failure reads
``<step>: <METHOD> <path> -> HTTP <status>: <body>`` plus, for a 403, the grant that is
probably missing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import urllib3

log = logging.getLogger(__name__)

# Far below the Lambda timeout: one hung call must leave time to report FAILED.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 50

HINTS_403 = {
    "role_mapping": "the glue role may not edit FGAC role mappings: make it the domain's master user "
                    "(or map it to all_access / security_manager)",
    "connector": "creating a connector with credential.roleArn needs iam:PassRole on that role for the glue "
                 "role, and the glue role mapped to ml_full_access (RoleMappings)",
}
HINT_403_DEFAULT = ("the glue role lacks an FGAC permission: map it to ml_full_access (ml-commons) and to "
                    "all_access or an index/pipeline admin role (RoleMappings), or make it the master user")


class StepError(Exception):
    """A failed step: what, the HTTP status (0 when the domain was not reached) and body."""

    def __init__(self, step: str, message: str, status: int = 0, body: Any = None):
        self.step = step
        self.detail = message
        self.status = status
        self.body = body
        super().__init__(f"{step}: {message}")


class OpenSearch:
    """A domain (or local node) with one authentication mode: sigv4, basic or none."""

    def __init__(self, url: str, *, auth_mode: str = "sigv4", region: str = "", username: str = "",
                 password: str = "", ca_file: str = ""):
        self.url = url.rstrip("/")
        self.auth_mode = auth_mode
        self.region = region
        self.username = username
        self.password = password
        tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED"}
        if ca_file:
            tls["ca_certs"] = ca_file
        self.pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S,
                                                                                read=READ_TIMEOUT_S), **tls)
        self._credentials: Any = None

    @classmethod
    def from_properties(cls, props: Any) -> OpenSearch:
        return cls(props.opensearch_url, auth_mode=props.auth_mode, region=props.region,
                   username=props.username, password=props.password, ca_file=props.ca_file)

    def _headers(self, method: str, url: str, data: bytes | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.auth_mode == "basic":
            headers.update(urllib3.make_headers(basic_auth=f"{self.username}:{self.password}"))
        elif self.auth_mode == "sigv4":
            # Imported here: local runs (basic/none) need no AWS libraries at all.
            from botocore.auth import SigV4Auth
            from botocore.awsrequest import AWSRequest
            from botocore.session import Session

            if self._credentials is None:
                self._credentials = Session().get_credentials()
                if self._credentials is None:
                    raise StepError("auth", "no AWS credentials found for SigV4")
            request = AWSRequest(method=method, url=url, data=data, headers=headers)
            SigV4Auth(self._credentials.get_frozen_credentials(), "es", self.region).add_auth(request)
            headers = dict(request.headers.items())
        return headers

    def call(self, step: str, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = ()) -> tuple[int, Any]:
        """One request; returns (status, JSON) for 2xx and the statuses in ``ok``, else raises StepError."""
        url = self.url + path
        data = json.dumps(body).encode() if body is not None else None
        try:
            resp = self.pool.request(method, url, body=data, headers=self._headers(method, url, data))
        except urllib3.exceptions.HTTPError as e:
            raise StepError(step, f"{method} {path} -> cannot reach {self.url}: {e}") from e
        try:
            payload = json.loads(resp.data) if resp.data else None
        except ValueError:
            payload = resp.data.decode(errors="replace")[:2000]
        log.debug("%s %s %s -> %s", step, method, path, resp.status)
        if 200 <= resp.status < 300 or resp.status in ok:
            return resp.status, payload
        message = f"{method} {path} -> HTTP {resp.status}: {json.dumps(payload)[:3000]}"
        if resp.status == 403:
            message += f" (hint: {HINTS_403.get(step, HINT_403_DEFAULT)})"
        raise StepError(step, message, resp.status, payload)
