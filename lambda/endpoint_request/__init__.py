"""What an embedding endpoint is sent for a batch of texts, per serving flavor: one definition
for the ml-commons connector (search_glue.steps) and the batch-embed request lines
(bulk_loader.prepare), so a document gets the same vector by either path.

ml-commons fills ``${parameters.input}`` with a JSON array of strings. TEI embeds its inputs
as given (its prompts only exist where the model's files define them) and truncates
over-long ones when asked: the caller puts the catalog's prefix in front of each text. Our
handler (inference_code) is told the kind and adds the model's own prefix for it.

Standard library only: it ships in the Lambda assets (stacks/components/lambda_assets.py).
"""

from __future__ import annotations

import json
from typing import Any

FLAVORS = ("tei", "custom")
KINDS = ("passage", "query")
#: Where ml-commons puts the texts in a connector's request body.
INPUT = "${parameters.input}"
TEI_BODY = '{"inputs": ${parameters.input}, "truncate": true}'
CUSTOM_BODY = '{"inputs": ${parameters.input}, "prompt_name": "%s"}'


def body_template(flavor: str, kind: str) -> str:
    """The connector's ``request_body`` for ``kind`` texts on a ``flavor`` endpoint."""
    _check(flavor, kind)
    return CUSTOM_BODY % kind if flavor == "custom" else TEI_BODY


def caller_prefix(flavor: str, prefix: str) -> str:
    """What the caller puts in front of each text: the model's prefix for TEI, nothing for our
    handler (it adds its own)."""
    _check(flavor, KINDS[0])
    return "" if flavor == "custom" else prefix


def request_body(flavor: str, kind: str, texts: list[str], prefix: str) -> dict[str, Any]:
    """The JSON body the connector would send the endpoint for ``texts``: the template with
    the (prefixed) texts where ml-commons puts them."""
    start = caller_prefix(flavor, prefix)
    rendered = body_template(flavor, kind).replace(INPUT, json.dumps([start + text for text in texts]))
    body: dict[str, Any] = json.loads(rendered)
    return body


def _check(flavor: str, kind: str) -> None:
    if flavor not in FLAVORS:
        raise ValueError(f"unknown serving flavor {flavor!r}; expected one of {', '.join(FLAVORS)}")
    if kind not in KINDS:
        raise ValueError(f"unknown text kind {kind!r}; expected one of {', '.join(KINDS)}")
