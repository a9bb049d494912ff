"""SigV4 checks of the local endpoint, with requests signed by the real botocore signer.

The last tests call the server through boto3's real ``sagemaker-runtime`` client (pointed at
it with endpoint_url), which is what the OpenSearch connector's AWS SDK does on AWS.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from semsearch.serve import start_server
from semsearch.sigv4 import SigV4Error, verify

REGION = "eu-west-1"
ACCESS_KEY, SECRET_KEY = "AKIDLOCALTEST", "local-secret-key"
NAME = "signed-ep"


def signed(url: str, body: bytes, *, secret=SECRET_KEY, access=ACCESS_KEY, region=REGION, service="sagemaker",
           headers=None) -> botocore.awsrequest.AWSPreparedRequest:
    request = botocore.awsrequest.AWSRequest(method="POST", url=url, data=body,
                                             headers={"Content-Type": "application/json", **(headers or {})})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(access, secret), service, region).add_auth(request)
    return request.prepare()


def check(prepared, body: bytes, **kw) -> str:
    """verify() on a prepared botocore request, as the server sees it."""
    from urllib.parse import urlsplit

    parts = urlsplit(prepared.url)
    headers = {k.lower(): v for k, v in prepared.headers.items()}
    headers["host"] = parts.netloc
    options = {"region": REGION, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, **kw}
    return verify("POST", parts.path, parts.query, headers, body, **options)


URL = f"http://127.0.0.1:8080/endpoints/{NAME}/invocations"
BODY = b'["hello"]'


def test_a_botocore_signature_verifies():
    assert check(signed(URL, BODY), BODY) == ACCESS_KEY


def test_query_strings_and_session_tokens_are_part_of_the_signature():
    url = URL + "?b=2&a=x%20y"
    assert check(signed(url, BODY, headers={"X-Amz-Security-Token": "token/with+chars"}), BODY) == ACCESS_KEY


@pytest.mark.parametrize(("make", "body", "options", "reason"), [
    (lambda: signed(URL, BODY, secret="wrong"), BODY, {}, "signature does not match"),
    (lambda: signed(URL, BODY), b'["altered"]', {}, "signature does not match"),
    (lambda: signed(URL, BODY, access="AKIDOTHER"), BODY, {}, "unknown access key 'AKIDOTHER'"),
    (lambda: signed(URL, BODY, region="us-east-1"), BODY, {}, "region 'us-east-1', this endpoint is in 'eu-west-1'"),
    (lambda: signed(URL, BODY, service="es"), BODY, {}, "service 'es', this endpoint is 'sagemaker'"),
    # "now" is computed when the test runs, not at collection (a long suite would eat the skew).
    (lambda: signed(URL, BODY), BODY, {"now": lambda: dt.datetime.now(dt.UTC) + dt.timedelta(minutes=20)},
     "15 minutes"),
    (lambda: signed(URL, BODY, headers={"X-Amz-Content-SHA256": "0" * 64}), BODY, {}, "does not match the body"),
], ids=["secret", "body", "access-key", "region", "service", "clock-skew", "content-hash"])
def test_wrong_signatures_are_named(make, body, options, reason):
    options = {k: v() if callable(v) else v for k, v in options.items()}
    with pytest.raises(SigV4Error, match=reason):
        check(make(), body, **options)


def test_without_keys_only_the_shape_is_checked():
    assert check(signed(URL, BODY, secret="anything"), BODY, access_key=None, secret_key=None) == ACCESS_KEY
    with pytest.raises(SigV4Error, match="region"):
        check(signed(URL, BODY, region="us-west-2"), BODY, access_key=None, secret_key=None)


@pytest.mark.parametrize(("authorization", "reason"), [
    ("Basic dXNlcjpwYXNz", "unsupported Authorization scheme 'Basic'"),
    ("AWS4-HMAC-SHA256 Credential=AKID/20240101/eu-west-1/sagemaker/aws4_request", "no SignedHeaders, Signature"),
    ("AWS4-HMAC-SHA256 Credential=AKID/eu-west-1/sagemaker, SignedHeaders=host;x-amz-date, Signature=" + "a" * 64,
     "malformed SigV4 credential"),
])
def test_malformed_authorization_headers(authorization, reason):
    headers = {"authorization": authorization, "host": "h", "x-amz-date": "20240101T000000Z"}
    with pytest.raises(SigV4Error, match=reason):
        verify("POST", "/invocations", "", headers, b"", region=REGION)


@pytest.fixture(scope="module")
def server(model_dir):
    handle = start_server(model_dir, name=NAME, region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    yield handle
    handle.stop()


def send(prepared) -> tuple[int, bytes]:
    request = urllib.request.Request(prepared.url, data=prepared.body, headers=dict(prepared.headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_server_accepts_a_signed_request(server):
    status, data = send(signed(f"{server.url}/endpoints/{NAME}/invocations", BODY))
    assert status == 200 and len(json.loads(data)[0]) == 384


@pytest.mark.parametrize("kw", [{"secret": "wrong"}, {"region": "us-east-1"}, {"service": "execute-api"}],
                         ids=["secret", "region", "service"])
def test_server_refuses_bad_signatures_with_403_and_keeps_serving(server, kw):
    status, data = send(signed(f"{server.url}/endpoints/{NAME}/invocations", BODY, **kw))
    assert status == 403
    reason = json.loads(data)["error"]
    assert reason and "\n" not in reason
    assert send(signed(f"{server.url}/endpoints/{NAME}/invocations", BODY))[0] == 200


def test_server_allows_unsigned_local_calls(server):
    request = urllib.request.Request(f"{server.url}/invocations", data=BODY,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200


def runtime_client(server, secret=SECRET_KEY):
    return boto3.client("sagemaker-runtime", region_name=REGION, endpoint_url=server.url,
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}))


def test_boto3_sagemaker_runtime_client_gets_embeddings(server):
    response = runtime_client(server).invoke_endpoint(EndpointName=NAME, Body=json.dumps(["a", "b"]),
                                                      ContentType="application/json", Accept="application/json")
    vectors = json.loads(response["Body"].read())
    assert len(vectors) == 2 and len(vectors[0]) == 384


def test_boto3_with_a_wrong_secret_gets_403(server):
    with pytest.raises(ClientError) as info:
        runtime_client(server, secret="wrong").invoke_endpoint(EndpointName=NAME, Body=b'["a"]',
                                                               ContentType="application/json")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
