"""Structured logs: one JSON object per line.

Every line has time, level, instance and event; user, room and other
context come from ``extra=``. Tokens are never logged: nothing here reads
request URLs, and the auth module never puts a token into a message.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message"}
_TOKEN = re.compile(
    r"((?:t|%74)(?:o|%6f)(?:k|%6b)(?:e|%65)(?:n|%6e)(?:=|%3d)|bearer[. ])[^&\s\"']+",
    re.IGNORECASE,
)
# Client mistakes that uvicorn reports at error level with a traceback; any
# client could flood the log with them, so they are kept at info, untraced.
_CLIENT_FAULTS = ("Invalid UTF-8 sequence received from client.",)


class RedactTokens(logging.Filter):
    """uvicorn logs request targets, and ``?token=`` would carry a JWT."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in _CLIENT_FAULTS:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        message = record.getMessage()
        redacted = _TOKEN.sub(r"\1<redacted>", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, instance: str) -> None:
        super().__init__()
        self._instance = instance

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "instance": self._instance,
            "logger": record.name,
            "event": getattr(record, "event", None) or record.getMessage(),
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "event":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(instance: str, fmt: str) -> None:
    """Route the service's and uvicorn's loggers through one handler."""
    handler = logging.StreamHandler()
    handler.addFilter(RedactTokens())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(instance))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        if name == "uvicorn.access" and not lg.handlers and not lg.propagate:
            continue  # access log switched off (--no-access-log): keep it off
        lg.handlers[:] = []
        lg.propagate = True
