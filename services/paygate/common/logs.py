"""Structured logs: one JSON object per line on standard error.

supervisord writes each process's standard error to its own file under var/log/; what
native code (gRPC's C core) writes there is turned into JSON lines too (native_stderr.py).
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
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from paygate.common.native_stderr import route_native_stderr

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
    "session_id",  # a session's public id, unrelated to its token
    "all_sessions",
)
# Safe fields that are not safe in one message: the name typed into Login may be a password
# typed into the wrong field. The gateway's login logs it only once it names a user
# (gateway/accounts.py; SECURITY.md).
UNLOGGED_FIELDS = frozenset({("paygate.v1.LoginRequest", "username")})
# A field's text is logged up to this many characters: requests are checked after they are
# logged, and a refused one may carry a name or key of up to the message size limit.
LOGGED_TEXT_MAX = 128
# A batch's line names this many of its transactions (a batch holds up to 256), and counts all.
LOGGED_IDS_MAX = 16


# One encoder for every line: json.dumps with arguments builds a new one per call.
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # The time of the last line, to its second, in ISO 8601: the lines of one second
        # share it, and only their milliseconds are formatted anew.
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record.created),
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
        return _ENCODER.encode(line)

    def _time(self, created: float) -> str:
        """`created` as datetime's isoformat(timespec="milliseconds") writes it, in UTC."""
        second = int(created)
        microseconds = round((created - second) * 1_000_000)  # rounded as datetime does
        if microseconds >= 1_000_000:
            second, microseconds = second + 1, microseconds - 1_000_000
        if second != self._second:
            moment = datetime.datetime.fromtimestamp(second, datetime.UTC)
            self._second, self._second_text = second, moment.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{microseconds // 1000:03d}+00:00"


def setup_logging(process: str, level: int = logging.INFO) -> None:
    """Log JSON lines to standard error; native code's lines too (native_stderr.py)."""
    route_native_stderr()
    # A line names no thread, process or source line: logging need not look them up for
    # every record (the logging HOWTO's "Optimization").
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # nor the caller's frame (the HOWTO's own advice)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("paygate").info("starting", extra={"fields": {"process": process}})


def safe_fields(
    message: Any, unlogged: frozenset[tuple[str, str]] = frozenset()
) -> dict[str, Any]:
    """The loggable fields that are set on a protobuf message (and its `payment`, if any),
    enums by name; for a batch, the transaction ids of its items (at most LOGGED_IDS_MAX).
    `unlogged` names (message type, field) pairs to leave out (UNLOGGED_FIELDS)."""
    out: dict[str, Any] = {}
    for source in (message, getattr(message, "payment", None)):
        if source is None or not hasattr(source, "DESCRIPTOR"):
            continue
        for name, enum_names in _loggable_fields(source.DESCRIPTOR):
            if unlogged and (source.DESCRIPTOR.full_name, name) in unlogged:
                continue
            value = getattr(source, name)
            if isinstance(value, str) and len(value) > LOGGED_TEXT_MAX:
                value = f"{value[:LOGGED_TEXT_MAX]}... ({len(value)} characters)"
            if value not in ("", 0):
                out[name] = enum_names.get(value, value) if enum_names else value
        if _is_batch(source.DESCRIPTOR):
            items = source.transactions
            out["transactions"] = len(items)
            out["transaction_ids"] = [
                _cut(item.transaction_id) for item in items[:LOGGED_IDS_MAX]
            ]
    return out


def safe_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """The pairs of an error's metadata that may be logged (SAFE_FIELDS, and `outcome`)."""
    return {
        key: _cut(value)
        for key, value in metadata.items()
        if key in SAFE_FIELDS or key == "outcome"
    }


def _cut(text: str) -> str:
    if len(text) > LOGGED_TEXT_MAX:
        return f"{text[:LOGGED_TEXT_MAX]}... ({len(text)} characters)"
    return text


@functools.cache
def _loggable_fields(descriptor: Any) -> tuple[tuple[str, dict[int, str]], ...]:
    """The SAFE_FIELDS a message type has, in SAFE_FIELDS order, each with the names of its
    enum's values (empty for a field that is not an enum); worked out once per type."""
    fields = []
    for name in SAFE_FIELDS:
        field = descriptor.fields_by_name.get(name)
        if field is None or _is_repeated(field):
            continue
        enum = field.enum_type
        names = {value.number: value.name for value in enum.values} if enum else {}
        fields.append((name, names))
    return tuple(fields)


@functools.cache
def _is_batch(descriptor: Any) -> bool:
    """A batch request: `transactions`, a list of messages that each name a transaction."""
    field = descriptor.fields_by_name.get("transactions")
    return (
        field is not None
        and _is_repeated(field)
        and field.message_type is not None
        and "transaction_id" in field.message_type.fields_by_name
    )


def _is_repeated(field: Any) -> bool:
    # FieldDescriptor.label is deprecated in newer protobuf; is_repeated is its successor.
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return bool(field.label == field.LABEL_REPEATED)
