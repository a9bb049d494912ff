"""The domain as the glue's steps see it: the shared client (opensearch_http), every call named.

Every call names the step it belongs to, so any failure reads
``<step>: <METHOD> <path> -> HTTP <status>: <body>`` plus, for a 403, the grant that is
probably missing.
"""

from __future__ import annotations

from typing import Any

from opensearch_http import CredentialsError, HTTPStatusError, OpenSearchClient, Unreachable

from .properties import GlueProperties

# Far below the Lambda timeout: one hung call must leave time to report FAILED.
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


class OpenSearch(OpenSearchClient):
    """A domain (or local node) with one authentication mode: sigv4, basic or none."""

    def __init__(self, url: str, *, auth_mode: str = "sigv4", region: str = "", username: str = "",
                 password: str = "", ca_file: str = ""):
        super().__init__(url, auth_mode=auth_mode, region=region, username=username, password=password,
                         ca_file=ca_file, read_timeout_s=READ_TIMEOUT_S)

    @classmethod
    def from_properties(cls, props: GlueProperties) -> OpenSearch:
        return cls(props.opensearch_url, auth_mode=props.auth_mode, region=props.region,
                   username=props.username, password=props.password, ca_file=props.ca_file)

    def call(self, step: str, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = ()) -> tuple[int, Any]:
        """One request; returns (status, JSON) for 2xx and the statuses in ``ok``, else raises StepError."""
        try:
            return self.request(method, path, body, ok=ok)
        except HTTPStatusError as e:
            message = str(e)
            if e.status == 403:
                message += f" (hint: {HINTS_403.get(step, HINT_403_DEFAULT)})"
            raise StepError(step, message, e.status, e.body) from e
        except Unreachable as e:
            raise StepError(step, f"{method} {path} -> {e}") from e
        except CredentialsError as e:
            raise StepError("auth", str(e)) from e
