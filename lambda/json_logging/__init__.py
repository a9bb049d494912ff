"""One-line JSON logs for the Lambda functions, each line carrying its invocation's request id.

CloudWatch Logs Insights reads a JSON line as fields, so ``filter request_id = "..."`` or
``filter level = "ERROR"`` needs no parsing. A function's package logs through its own
logger; ``lambda_entry`` gives those loggers a JSON handler (and ``propagate = False``, so
the Lambda runtime's text handler on the root logger does not print the line again) the
first time a Lambda invocation arrives, and binds the invocation's ``aws_request_id``.

Called without a Lambda context (``semsearch local``, the tests), a handler is the plain
function: logging stays the caller's to arrange.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

Handler = TypeVar("Handler", bound=Callable[..., Any])

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id"}`` plus ``data`` (``extra={"data": {...}}``)
    and ``exception`` when there is one; one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": _request_id.get(),
        }
        data = getattr(record, "data", None)
        if data is not None:
            entry["data"] = data
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def set_level(*logger_names: str) -> None:
    """LOG_LEVEL (default INFO) on these loggers: the runtime's root logger would drop INFO."""
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    for name in logger_names:
        logging.getLogger(name).setLevel(level)


def _install(logger_names: tuple[str, ...]) -> None:
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(JsonFormatter())
            logger.addHandler(handler)
        logger.propagate = False


def lambda_entry(*logger_names: str) -> Callable[[Handler], Handler]:
    """Decorates ``handler(event, context)``: when ``context`` is a Lambda context (it has
    ``aws_request_id``), the named loggers write JSON lines and each line carries that id."""

    def decorate(fn: Handler) -> Handler:
        @functools.wraps(fn)
        def wrapper(event: dict[str, Any], context: Any = None) -> Any:
            request_id = getattr(context, "aws_request_id", None)
            if not isinstance(request_id, str):
                return fn(event, context)
            _install(logger_names)
            token = _request_id.set(request_id)
            try:
                return fn(event, context)
            finally:
                _request_id.reset(token)

        return cast(Handler, wrapper)

    return decorate
