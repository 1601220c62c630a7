"""Structured logs: one JSON object per line on standard error.

supervisord writes each process's standard error to its own file under var/log/.
A line written inside a traced call carries its `trace_id` and `span_id` (OpenTelemetry,
hex as in every trace viewer), so a log line leads to its trace and back.
Only fields named in SAFE_FIELDS are ever copied from messages into a log line, so a
password or a token cannot reach a log by accident.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import sys
from typing import Any

from opentelemetry import trace

# Message fields that may be logged. Anything else (passwords, tokens) never is.
SAFE_FIELDS = (
    "username",
    "bank_id",
    "account_number",
    "payee_username",
    "amount",
    "currency",
    "idempotency_key",
    "payment_id",
    "transaction_id",
    "reference",
    "status",
    "vote",
    "reason",
    "page_size",
)
# A field's text is logged up to this many characters: requests are checked after they are
# logged, and a refused one may carry a name or key of up to the message size limit.
LOGGED_TEXT_MAX = 128


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = format(span.trace_id, "032x")
            line["span_id"] = format(span.span_id, "016x")
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


def setup_logging(process: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("paygate").info("starting", extra={"fields": {"process": process}})


def safe_fields(message: Any) -> dict[str, Any]:
    """The loggable fields that are set on a protobuf message (and its `payment`, if any)."""
    out: dict[str, Any] = {}
    for source in (message, getattr(message, "payment", None)):
        if source is None or not hasattr(source, "DESCRIPTOR"):
            continue
        for name in _loggable_names(source.DESCRIPTOR):
            value = getattr(source, name)
            if isinstance(value, str) and len(value) > LOGGED_TEXT_MAX:
                value = f"{value[:LOGGED_TEXT_MAX]}... ({len(value)} characters)"
            if value not in ("", 0):
                out[name] = value
    return out


@functools.cache
def _loggable_names(descriptor: Any) -> tuple[str, ...]:
    """The SAFE_FIELDS a message type has, in SAFE_FIELDS order (one entry per type)."""
    return tuple(name for name in SAFE_FIELDS if name in descriptor.fields_by_name)
