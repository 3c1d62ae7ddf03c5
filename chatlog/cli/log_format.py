"""Structured log output: plain text or one JSON object per line.

chatlog's loggers attach the coordinates of what they talk about as
``extra`` fields (topic, partition, offset, session, group, ...); both
formats print them. Log records carry ids and coordinates only, never the
content of a chat message, so logs can be shipped without leaking
conversations. Every value is printed with its control characters written
as escapes (a Kafka key is whatever a producer sent: a newline in it must
not start a forged log line, nor an escape sequence restyle a terminal).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any

from chatlog.cli.escaping import visible, visible_json
from chatlog.errors import ConfigurationError
from chatlog.secrets import SecretMaskingFilter

#: ``extra`` fields that both formats print when a record has them.
CONTEXT_FIELDS = (
    "topic",
    "group",
    "partition",
    "partitions",
    "offset",
    "session_id",
    "user_id",
    "event_type",
    "rebalance",
    "operation",
)

LOG_FORMATS = ("text", "json")

__all__ = [
    "CONTEXT_FIELDS",
    "LOG_FORMATS",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "formatter",
]


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a single JSON line."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_context(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return visible_json(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """``time level logger message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The ``time level logger message`` line, its control characters escaped."""
        return visible(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        """The traceback on lines of its own, every other control character escaped."""
        return visible(super().formatException(ei), multiline=True)

    def formatStack(self, stack_info: str) -> str:
        """The stack on lines of its own, every other control character escaped."""
        return visible(super().formatStack(stack_info), multiline=True)

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` with its context appended as ``key=value`` pairs."""
        line = super().format(record)
        context = _context(record)
        if not context:
            return line
        pairs = " ".join(f"{key}={visible(_text(value))}" for key, value in context.items())
        head, newline, rest = line.partition("\n")  # keep a traceback below the pairs
        return f"{head} {pairs}{newline}{rest}"


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``text`` or ``json``."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ConfigurationError(f"log format must be one of {LOG_FORMATS}, got {log_format!r}")


def configure_logging(
    log_format: str = "text", level: int = logging.INFO, *, stream: IO[str] | None = None
) -> logging.Handler:
    """Send all logging to ``stream`` (default stderr) in ``log_format``; return the handler.

    Replaces the root logger's handlers, so calling it again switches format.
    Secrets in messages (URL passwords, ``password=...``) are masked.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(SecretMaskingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {name: record.__dict__[name] for name in CONTEXT_FIELDS if name in record.__dict__}


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple, set)):
        return ",".join(map(str, value))
    return str(value)
