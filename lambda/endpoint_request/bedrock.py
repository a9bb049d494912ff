"""What Amazon Bedrock's text-embedding models are sent and answer: one definition of each
model's InvokeModel body, its limits and its response, for the ml-commons connector the glue
registers (search_glue.steps), the `semsearch` client (semsearch/bedrock.py) and the local
stand-in for the Bedrock runtime (semsearch/local/bedrock.py).

The request bodies are templates in ml-commons' syntax (``${parameters.NAME}``): the connector
sends them as written, and ``request_body`` renders the same template with the same values,
so a text gets the same request by either path.

Documented facts used here (Amazon Bedrock user guide, "Amazon Titan Embeddings Text" and
"Cohere Embed v3" inference parameters):

- Titan Text Embeddings v2 (``amazon.titan-embed-text-v2:0``): one text per call
  (``inputText``, at least 1 and at most 50,000 characters, 8,192 tokens), ``dimensions``
  1024 (default), 512 or 256, ``normalize`` (default true); answers ``{"embedding": [...],
  "inputTextTokenCount": n}``. Queries and documents are embedded alike.
- Cohere Embed v3 (``cohere.embed-english-v3``, ``cohere.embed-multilingual-v3``): ``texts``
  (at most 96 per call, each at most 2,048 characters), ``input_type`` (required:
  search_document, search_query, classification or clustering), ``truncate`` (NONE, the
  default, errs on over-long input; START or END drop tokens past 512); 1024 dimensions;
  answers ``{"id", "response_type": "embeddings_floats", "texts", "embeddings": [[...]]}``.

Over-long texts are cut at the documented character limit before they are sent (by the
client here, by the connector's pre_process script in ml-commons), rather than refused:
ingest must not fail on a long document, as the SageMaker endpoints truncate too.

Standard library only: it ships in the Lambda assets (stacks/components/lambda_assets.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

TITAN_V2 = "titan-text-v2"
COHERE_V3 = "cohere-embed-v3"
#: Cohere's input types; Titan v2 takes none (it embeds queries and documents alike).
INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
#: What each text kind of the lifecycle design (a passage model, a query model) is sent as.
KIND_INPUT_TYPES: Mapping[str, str] = MappingProxyType({"passage": "search_document", "query": "search_query"})
COHERE_TRUNCATE = ("NONE", "START", "END")
#: What we ask Cohere to do with a text past 512 tokens: keep its start, as the endpoints do.
TRUNCATE = "END"
CONTENT_TYPE = "application/json"
SERVICE = "bedrock"


class BedrockModelError(ValueError):
    """A model id, dimension, input type or text that the Bedrock model does not accept."""


@dataclass(frozen=True, kw_only=True)
class BedrockModel:
    """One Bedrock text-embedding model as far as a caller needs it."""

    id: str
    family: str
    #: The vector lengths the model offers; the first is its default.
    dimensions: tuple[int, ...]
    #: Texts per InvokeModel call.
    max_texts: int
    #: Characters per text the request may carry (documented limit).
    max_chars: int
    #: Tokens the model reads of one text.
    max_tokens: int
    multilingual: bool
    #: The request can ask for unit-length vectors (Titan v2's ``normalize``).
    normalize_option: bool

    @property
    def default_dimension(self) -> int:
        return self.dimensions[0]

    @property
    def foundation_model_arn_suffix(self) -> str:
        """``foundation-model/<id>``: the resource part of the model's ARN (no account)."""
        return f"foundation-model/{self.id}"


MODELS: Mapping[str, BedrockModel] = MappingProxyType({
    m.id: m for m in (
        BedrockModel(id="amazon.titan-embed-text-v2:0", family=TITAN_V2, dimensions=(1024, 512, 256),
                     max_texts=1, max_chars=50_000, max_tokens=8192, multilingual=True, normalize_option=True),
        BedrockModel(id="cohere.embed-english-v3", family=COHERE_V3, dimensions=(1024,),
                     max_texts=96, max_chars=2048, max_tokens=512, multilingual=False, normalize_option=False),
        BedrockModel(id="cohere.embed-multilingual-v3", family=COHERE_V3, dimensions=(1024,),
                     max_texts=96, max_chars=2048, max_tokens=512, multilingual=True, normalize_option=False),
    )
})

# The InvokeModel bodies, in ml-commons' template syntax. String parameters sit inside quotes
# (ml-commons substitutes their JSON-escaped content); the others are JSON values.
BODY_TEMPLATES: Mapping[str, str] = MappingProxyType({
    TITAN_V2: '{"inputText": "${parameters.inputText}", "dimensions": ${parameters.dimensions}, '
              '"normalize": ${parameters.normalize}}',
    COHERE_V3: '{"texts": ${parameters.texts}, "input_type": "${parameters.input_type}", '
               '"truncate": "${parameters.truncate}"}',
})
#: ml-commons 2.19's built-in post-processing for each response shape ($.embedding for one
#: vector, $.embeddings for a list of them).
POST_PROCESS = MappingProxyType({TITAN_V2: "connector.post_process.bedrock.embedding",
                                 COHERE_V3: "connector.post_process.cohere.embedding"})
_PARAMETER = re.compile(r"\$\{parameters\.([A-Za-z_]+)\}")


def model(model_id: str) -> BedrockModel:
    """The catalog entry of ``model_id``; an unknown id is an error naming the known ones."""
    try:
        return MODELS[model_id]
    except KeyError:
        raise BedrockModelError(f"unknown Bedrock embedding model {model_id!r}; known: {', '.join(MODELS)}") from None


def dimension_for(model_id: str, dimension: int | None = None) -> int:
    """``dimension`` if the model offers it, else an error naming what it offers; None: its default."""
    spec = model(model_id)
    if dimension is None:
        return spec.default_dimension
    if dimension not in spec.dimensions:
        offered = ", ".join(str(d) for d in spec.dimensions)
        raise BedrockModelError(f"Bedrock model {model_id} offers dimension(s) {offered}, not {dimension}")
    return dimension


def normalize_for(model_id: str, normalize: bool | None = None) -> bool | None:
    """What the request asks for: Titan v2 normalizes unless told not to; a model without the
    option takes no value (None), and asking it for one is an error."""
    spec = model(model_id)
    if not spec.normalize_option:
        if normalize is not None:
            raise BedrockModelError(f"Bedrock model {model_id} has no normalize option (its vectors are as the "
                                    "model makes them); leave normalize unset")
        return None
    return True if normalize is None else normalize


def input_type_for(kind: str) -> str:
    """Cohere's input type for a text kind of the lifecycle design: passage or query."""
    try:
        return KIND_INPUT_TYPES[kind]
    except KeyError:
        raise BedrockModelError(f"unknown text kind {kind!r}; expected one of {', '.join(KIND_INPUT_TYPES)}") from None


def _check_input_type(input_type: str) -> None:
    if input_type not in INPUT_TYPES:
        raise BedrockModelError(f"unknown input_type {input_type!r}; expected one of {', '.join(INPUT_TYPES)}")


def clip(model_id: str, text: str) -> str:
    """``text`` cut to the model's documented character limit (the connector's script does the same)."""
    return text[:model(model_id).max_chars]


def batches(model_id: str, texts: Sequence[str]) -> Iterator[list[str]]:
    """``texts`` in the groups one InvokeModel call may carry, in order."""
    size = model(model_id).max_texts
    for start in range(0, len(texts), size):
        yield list(texts[start:start + size])


def template_parameters(model_id: str, *, input_type: str, dimension: int | None = None,
                        normalize: bool | None = None) -> dict[str, Any]:
    """The template's parameters other than the texts: what the connector fixes per model."""
    spec = model(model_id)
    _check_input_type(input_type)
    dim = dimension_for(model_id, dimension)
    norm = normalize_for(model_id, normalize)
    if spec.family == TITAN_V2:
        return {"dimensions": dim, "normalize": norm}
    return {"input_type": input_type, "truncate": TRUNCATE}


def render(template: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``template`` with each ``${parameters.NAME}`` replaced the way ml-commons replaces it:
    a string's JSON-escaped content (the template supplies the quotes), any other value as JSON."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in parameters:
            raise BedrockModelError(f"template parameter {name!r} has no value")
        v = parameters[name]
        return json.dumps(v)[1:-1] if isinstance(v, str) else json.dumps(v)

    body: dict[str, Any] = json.loads(_PARAMETER.sub(value, template))
    return body


def request_body(model_id: str, texts: Sequence[str], *, input_type: str, dimension: int | None = None,
                 normalize: bool | None = None) -> dict[str, Any]:
    """The InvokeModel body for ``texts`` (one call's worth: see ``batches``), over-long texts clipped."""
    spec = model(model_id)
    if not texts:
        raise BedrockModelError(f"no texts to embed with {model_id}")
    if len(texts) > spec.max_texts:
        raise BedrockModelError(f"{len(texts)} texts in one call; {model_id} takes at most {spec.max_texts}")
    parameters = template_parameters(model_id, input_type=input_type, dimension=dimension, normalize=normalize)
    clipped = [clip(model_id, t) for t in texts]
    if spec.family == TITAN_V2:
        if not clipped[0]:
            raise BedrockModelError(f"{model_id} cannot embed an empty text (inputText needs at least one character)")
        parameters["inputText"] = clipped[0]
    else:
        parameters["texts"] = clipped
    return render(BODY_TEMPLATES[spec.family], parameters)


def parse_response(model_id: str, body: Mapping[str, Any], *, count: int, dimension: int) -> list[list[float]]:
    """The vectors of an InvokeModel answer, checked: ``count`` of them, each ``dimension`` long."""
    spec = model(model_id)
    vectors: Any
    if spec.family == TITAN_V2:
        vectors = [body.get("embedding")]
    else:
        embeddings = body.get("embeddings")
        # Asked for embedding_types, Cohere answers {"float": [[...]], ...} (embeddings_by_type).
        vectors = embeddings.get("float") if isinstance(embeddings, Mapping) else embeddings
    if not isinstance(vectors, list) or len(vectors) != count:
        raise BedrockModelError(f"{model_id} answered no list of {count} embedding(s): {str(dict(body))[:200]}")
    for vector in vectors:
        if not isinstance(vector, list) or len(vector) != dimension:
            length = len(vector) if isinstance(vector, list) else type(vector).__name__
            raise BedrockModelError(f"{model_id} answered an embedding of length {length}, expected {dimension}")
    return [[float(x) for x in vector] for vector in vectors]


# ---------------------------------------------------------------------------------------
# The ml-commons connector


def invoke_url(model_id: str, region: str) -> str:
    """The Bedrock runtime's InvokeModel URL for ``model_id`` in ``region``."""
    model(model_id)
    return f"https://bedrock-runtime.{region}.amazonaws.com/model/{model_id}/invoke"


# A painless function: the first ``limit`` characters of a text as ml-commons hands it to a
# script (JSON-escaped, without quotes: an escape sequence counts as the one character it
# stands for, and is never cut). Java counts UTF-16 units, so a text with characters outside
# the BMP may be cut a little shorter than Python's text[:limit]; never longer.
_CLIP_FUNCTION = (
    "String clip(String s, int limit) { int i = 0; int n = 0; "
    "while (i < s.length() && n < limit) { "
    "if (s.charAt(i) == (char) '\\\\') { i += s.charAt(i + 1) == (char) 'u' ? 6 : 2; } else { i += 1; } "
    "n += 1; } "
    "if (i > 0 && i < s.length() && Character.isHighSurrogate(s.charAt(i - 1))) { i -= 1; } "
    "return s.substring(0, i); } "
)


def pre_process_script(model_id: str) -> str:
    """The connector's pre_process_function: the texts, clipped to the documented limit, as the
    template's text parameter (Titan: ``inputText``, one text; Cohere: ``texts``, a list).

    ml-commons 2.19 runs a script once per text unless the connector names a step size
    (``input_docs_processed_step_size``, set for Cohere to its 96 texts per call).
    """
    spec = model(model_id)
    if spec.family == TITAN_V2:
        return (_CLIP_FUNCTION + "return '{\"parameters\": {\"inputText\": \"' + "
                f"clip(params.text_docs[0], {spec.max_chars}) + '\"}}}}';")
    return (_CLIP_FUNCTION + "List texts = new ArrayList(); "
            f"for (def doc : params.text_docs) {{ texts.add('\"' + clip(doc, {spec.max_chars}) + '\"'); }} "
            "return '{\"parameters\": {\"texts\": [' + String.join(',', texts) + ']}}';")


def connector_parameters(model_id: str, kind: str, *, region: str, dimension: int | None = None,
                         normalize: bool | None = None) -> dict[str, Any]:
    """The connector's ``parameters``: signing (region, service bedrock) and the template's fixed values."""
    spec = model(model_id)
    fixed = template_parameters(model_id, input_type=input_type_for(kind), dimension=dimension, normalize=normalize)
    step = {"input_docs_processed_step_size": spec.max_texts} if spec.max_texts > 1 else {}
    return {"region": region, "service_name": SERVICE, "model": model_id, **fixed, **step}


def predict_parameters(model_id: str, texts: Sequence[str]) -> dict[str, Any]:
    """The template's text parameter for ml-commons' _predict API, which fills the template from
    ``parameters`` without running the pre_process script (Titan: one text)."""
    spec = model(model_id)
    clipped = [clip(model_id, t) for t in texts]
    if spec.family == TITAN_V2:
        if len(clipped) != 1:
            raise BedrockModelError(f"{model_id} embeds one text a call, not {len(clipped)}")
        return {"inputText": clipped[0]}
    return {"texts": clipped}


def connector_action(model_id: str, url: str) -> dict[str, Any]:
    """The connector's predict action: POST the model's template to ``url`` (the runtime's
    InvokeModel URL, or a stand-in's), its pre- and post-processing."""
    spec = model(model_id)
    return {
        "action_type": "predict",
        "method": "POST",
        "url": url,
        # ml-commons signs the body's hash when asked to by this header.
        "headers": {"content-type": CONTENT_TYPE, "x-amz-content-sha256": "required"},
        "request_body": BODY_TEMPLATES[spec.family],
        "pre_process_function": pre_process_script(model_id),
        "post_process_function": POST_PROCESS[spec.family],
    }
