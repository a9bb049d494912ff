"""The glue's property contract, lambda/search_glue/properties.py, for the stacks and the CLI.

The module ships inside the glue's Lambda asset, so it lives there; ``lambda`` is a Python
keyword, so its folder goes on the import path instead of being a package. The module uses
the standard library only: importing it here pulls in neither boto3 nor CDK.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TypedDict

from stacks.config import SearchConfig

LAMBDA_DIR = Path(__file__).resolve().parents[1] / "lambda"
if str(LAMBDA_DIR) not in sys.path:
    sys.path.append(str(LAMBDA_DIR))

from search_glue.properties import GlueProperties, PropertyError, parse  # noqa: E402

__all__ = ["LAMBDA_DIR", "GlueProperties", "IndexProperties", "PropertyError", "index_properties", "parse"]


class IndexProperties(TypedDict):
    index_name: str
    text_field: str
    embedding_field: str
    knn_engine: str
    hnsw_m: int
    hnsw_ef_construction: int


def index_properties(search: SearchConfig) -> IndexProperties:
    """The k-NN index the glue makes, as a search config sets it (the local stack: the defaults)."""
    return IndexProperties(index_name=search.index_name, text_field=search.text_field,
                           embedding_field=search.embedding_field, knn_engine=search.knn_engine,
                           hnsw_m=search.hnsw_m, hnsw_ef_construction=search.hnsw_ef_construction)
