"""Checking AWS Signature Version 4 on requests to the local endpoint.

The OpenSearch connector signs its calls to SageMaker (``protocol: aws_sigv4``); the local
endpoint checks them the way SageMaker would, so the connector's configuration is tested
for real: algorithm, credential scope (region, service ``sagemaker``), timestamp and, when
the server knows the keys, the signature over method, path, query, signed headers and body.

Implemented from the published SigV4 algorithm with hashlib/hmac only. For services other
than S3 the canonical path is the request path URI-encoded once more, which is what
botocore and the AWS SDK for Java (ml-commons) sign.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Mapping
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
#: SageMaker and most AWS services refuse signatures more than 15 minutes off.
MAX_SKEW = dt.timedelta(minutes=15)
_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")


class SigV4Error(Exception):
    """Why a signed request is refused (HTTP 403), in one line."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(("AWS4" + secret_key).encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def parse_authorization(value: str) -> dict[str, str]:
    """``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`` -> its three fields."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SigV4Error(f"unsupported Authorization scheme {algorithm!r}; expected {ALGORITHM}")
    fields = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            fields[key] = val
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not fields.get(k)]
    if missing:
        raise SigV4Error(f"malformed SigV4 Authorization header: no {', '.join(missing)}")
    return fields


def _canonical_query(query: str) -> str:
    pairs = []
    for part in query.split("&") if query else []:
        key, _, val = part.partition("=")
        pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(val), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(method: str, path: str, query: str, headers: Mapping[str, str], signed_headers: list[str],
                      payload_hash: str) -> str:
    lines = [method.upper(), quote(path or "/", safe="/~"), _canonical_query(query)]
    for name in signed_headers:
        lines.append(f"{name}:{' '.join(headers[name].split())}")
    return "\n".join([*lines, "", ";".join(signed_headers), payload_hash])


def verify(method: str, path: str, query: str, headers: Mapping[str, str], body: bytes, *, region: str,
           service: str = "sagemaker", access_key: str | None = None, secret_key: str | None = None,
           now: dt.datetime | None = None) -> str:
    """Check a SigV4-signed request; returns the access key id, raises SigV4Error.

    ``headers`` maps lower-case names to values. Without ``secret_key`` only the shape is
    checked (scope, date, header list); with it, the signature and the clock as well.
    """
    fields = parse_authorization(headers.get("authorization", ""))
    credential = fields["Credential"].split("/")
    if len(credential) != 5 or credential[4] != "aws4_request":
        raise SigV4Error("malformed SigV4 credential: expected ACCESS_KEY/DATE/REGION/SERVICE/aws4_request")
    key_id, date, scope_region, scope_service, _ = credential
    if scope_service != service:
        raise SigV4Error(f"SigV4 credential is for service {scope_service!r}, this endpoint is {service!r}")
    if scope_region != region:
        raise SigV4Error(f"SigV4 credential is for region {scope_region!r}, this endpoint is in {region!r}")
    amz_date = headers.get("x-amz-date", "")
    if not _AMZ_DATE.match(amz_date):
        raise SigV4Error("missing or malformed X-Amz-Date header (expected YYYYMMDDTHHMMSSZ)")
    if amz_date[:8] != date:
        raise SigV4Error(f"SigV4 credential date {date} does not match X-Amz-Date {amz_date}")
    signed = fields["SignedHeaders"].split(";")
    if signed != sorted(signed) or "host" not in signed:
        raise SigV4Error("SignedHeaders must be sorted and include host")
    absent = [name for name in signed if name not in headers]
    if absent:
        raise SigV4Error(f"signed header(s) {', '.join(absent)} missing from the request")
    if not _SIGNATURE.match(fields["Signature"]):
        raise SigV4Error("malformed SigV4 signature: expected 64 hex digits")

    body_hash = _sha256(body)
    claimed = headers.get("x-amz-content-sha256")
    if claimed and claimed != "UNSIGNED-PAYLOAD" and claimed != body_hash:
        raise SigV4Error("X-Amz-Content-SHA256 does not match the body")
    if secret_key is None:
        return key_id

    if access_key is not None and key_id != access_key:
        raise SigV4Error(f"unknown access key {key_id!r}")
    signed_at = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    if abs(now - signed_at) > MAX_SKEW:
        raise SigV4Error(f"signature time {amz_date} is more than 15 minutes from the server's clock")
    payload_hash = claimed if claimed == "UNSIGNED-PAYLOAD" else body_hash
    request = canonical_request(method, path, query, headers, signed, payload_hash)
    string_to_sign = "\n".join([ALGORITHM, amz_date, "/".join(credential[1:]), _sha256(request.encode())])
    expected = hmac.new(signing_key(secret_key, date, region, service), string_to_sign.encode(),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["Signature"]):
        raise SigV4Error("the request signature does not match (wrong secret key, or the request was altered)")
    return key_id
