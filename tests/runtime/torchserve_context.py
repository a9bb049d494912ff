"""Stands in for TorchServe's request context, which the SageMaker inference toolkit hands its
handlers. TorchServe (a Java model server) does not run in these tests; this carries exactly the
members the toolkit reads and writes. Both toolkit tests load it by path into their own
interpreter: the repository's venv (test_package) and the container's Python 3.12 (sagemaker_container).
"""

from __future__ import annotations

from typing import Any


class RequestProcessor:
    def __init__(self, headers: dict[str, Any]) -> None:
        self.headers = headers

    def get_request_properties(self) -> dict[str, Any]:
        return self.headers


class Context:
    def __init__(self, model_dir: str, headers: dict[str, Any]) -> None:
        self.system_properties = {"model_dir": model_dir, "gpu_id": None}
        self.request_processor = [RequestProcessor(headers)]
        self.status: int = 200
        self.content_type: str | None = None

    def set_response_status(self, code: int, phrase: str) -> None:
        self.status = code

    def set_response_content_type(self, idx: int, content_type: str) -> None:
        self.content_type = content_type
