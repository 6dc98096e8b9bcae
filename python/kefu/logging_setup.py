"""Process logging: one JSON object per line (or plain text), to stderr or a file, never a secret.

Kefu never logs message bodies; the redaction below is the second line of defence for what a library
or a future log call could let through: bearer tokens, `token=` query strings (the WebSocket URL
carries the token) and password fields are replaced with `***` before a record is written.

Log rotation: by default logs go to stderr, for the container runtime or journald to keep. With
KEFU_LOG_FILE the file is a WatchedFileHandler: after logrotate moves it away (no copytruncate
needed), the next record reopens the path, so no signal is required.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
import time
from typing import Any

_SECRETS = re.compile(
    r"(?i)(token=|bearer\s+|\"?(?:token|password|secret)\"?\s*[:=]\s*\"?)([^\s\"&',;}]+)")
# Attributes every LogRecord has; anything else came in through `extra=` and goes into the JSON.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    return _SECRETS.sub(lambda m: m.group(1) + "***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(*, fmt: str = "json", level: str = "WARNING", file: str | None = None) -> logging.Handler:
    """Replace the root logger's handlers with one that writes `fmt` to stderr or `file`."""
    handler: logging.Handler = (logging.handlers.WatchedFileHandler(file, encoding="utf-8") if file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
