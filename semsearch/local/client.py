"""The local tools' OpenSearch client: the Lambdas' own (lambda/opensearch_http), basic auth or none.

One client for the glue, the bulk loader and the CLI; it lives in lambda/ because that is
what the Lambda assets are made of, and the CLI imports it from there (as ``semsearch
local`` imports the glue itself).
"""

from __future__ import annotations

from typing import Any

import stacks.glue_properties  # noqa: F401  (the one place that puts lambda/ on the import path)

# isort: split
from opensearch_http import HTTPStatusError, OpenSearchClient

#: A non-2xx answer: the method, path, status and body, all in the message.
OpenSearchError = HTTPStatusError


class Connection(OpenSearchClient):
    """Where a node listens and how to talk to it: basic auth when ``username`` is given.

    ``ca_file`` is the node's own root certificate when security (TLS) is on, so the
    connection is verified rather than trusted blindly.
    """

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 ca_file: str | None = None, timeout_s: float = 60.0) -> None:
        super().__init__(url, auth_mode="basic" if username is not None else "none", username=username or "",
                         password=password or "", ca_file=ca_file or "", read_timeout_s=timeout_s)

    def as_dict(self) -> dict[str, Any]:
        basic = self.auth_mode == "basic"
        return {"url": self.url, "username": self.username if basic else None,
                "password": self.password if basic else None, "ca_file": self.ca_file or None}

    def __repr__(self) -> str:
        return f"Connection({self.url!r}, username={self.username or None!r})"
