"""Podlab's own log: one rotating file in the state folder, configured once per process.

The file is private (0600 in a 0700 folder) and every record passes `SecretRedactor`, so that an
API key, a Hugging Face token or an Authorization header never reaches the disk even when an
error message or a traceback quotes one.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Iterable
from io import TextIOWrapper
from pathlib import Path

from podlab.core.paths import Locations

__all__ = [
    "DEFAULT_LEVEL",
    "LOG_LEVELS",
    "REDACTED",
    "SecretRedactor",
    "add_log_level_option",
    "close_logging",
    "configure_logging",
    "hold_logging",
    "log_file",
    "redact",
]

LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LEVEL = "info"
REDACTED = "[redacted]"
MAX_BYTES = 2_000_000
BACKUPS = 3
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Environment variables whose values are secrets wherever they show up in a message.
SECRET_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "PODLAB_API_KEY")

_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer xyz / 'authorization': 'Basic xyz' (headers printed as dicts too)
    (
        re.compile(
            r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(bearer\s+|basic\s+|token\s+)?[^\s'\",}]+"
        ),
        r"\g<1>\g<2>" + REDACTED,
    ),
    # api_key=..., "api-key": "...", x-api-key: ..., HF_TOKEN=..., token: ...
    (
        re.compile(
            r"(?i)(\b(?:api[_-]?key|hf_token|hugging_face_hub_token|access_token|token|password)"
            r"['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"
        ),
        r"\g<1>" + REDACTED,
    ),
    # Token shapes that are secrets on their own: Hugging Face and OpenAI style keys.
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}"), REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), REDACTED),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with known secret values and secret-shaped words replaced by `[redacted]`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class SecretRedactor(logging.Filter):
    """Rewrites each record's message and traceback text with `redact` before any handler
    formats it; the values of `SECRET_VARIABLES` are redacted verbatim too."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = [value for value in secrets if len(value) >= 4]
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self._secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._secrets)
        return True


def add_log_level_option(parser: argparse.ArgumentParser) -> None:
    """`--log-level`, one option for both faces (the CLI and the window)."""
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=DEFAULT_LEVEL,
        help=f"how much goes to the log file {Locations.default().log_file} "
        f"(default {DEFAULT_LEVEL})",
    )


def _private_file(path: Path) -> None:
    """Create the log folder 0700 and the file 0600 before the handler opens it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def _rotating_file_handler(path: Path) -> logging.Handler:
    # Imported here: logging.handlers brings sockets, pickle and queues, which the window's
    # first paint does without (the GUI holds its records until then, see `hold_logging`).
    import logging.handlers

    class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
        """Rotated files are opened fresh; keep them private like the first."""

        def _open(self) -> TextIOWrapper:
            _private_file(Path(self.baseFilename))
            return super()._open()

    return PrivateRotatingFileHandler(
        path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
    )


class _HeldRecords(logging.Handler):
    """The records logged before the log file is opened; `configure_logging` writes them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_handler: logging.Handler | None = None


def hold_logging(level: str = DEFAULT_LEVEL) -> None:
    """Log at `level` into memory until `configure_logging` opens the file: the GUI paints its
    window first, and nothing logged meanwhile is lost."""
    _check_level(level)
    _install(_HeldRecords(), level)


def configure_logging(level: str = DEFAULT_LEVEL, locations: Locations | None = None) -> Path:
    """Send the `podlab` loggers (and warnings of libraries) to the rotating log file.

    Called once at start by the GUI and the CLI; a second call replaces the first's handler,
    so tests and a re-launch in the same process never log twice. Returns the file's path.
    """
    _check_level(level)
    path = (locations or Locations.default()).log_file
    _private_file(path)
    handler = _rotating_file_handler(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(SecretRedactor(os.environ.get(name, "") for name in SECRET_VARIABLES))
    held = _handler.records if isinstance(_handler, _HeldRecords) else []
    _install(handler, level)
    for record in held:
        handler.handle(record)
    return path


def _check_level(level: str) -> None:
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")


def _install(handler: logging.Handler, level: str) -> None:
    """Make `handler` the root logger's only Podlab handler, at `level`."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close()
    root.addHandler(handler)
    _handler = handler
    numeric = getattr(logging, level.upper())
    # Podlab's own records at the chosen level; other libraries only from warnings up, unless
    # the user asked for everything.
    root.setLevel(numeric if level == "debug" else logging.WARNING)
    logging.getLogger("podlab").setLevel(numeric)
    logging.captureWarnings(True)


def close_logging() -> None:
    """Flush and close the log file (the process ends, or a test is done with it)."""
    global _handler
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler.close()
        _handler = None


def log_file() -> Path | None:
    """The file the log goes to in this process, None before `configure_logging`."""
    if isinstance(_handler, logging.FileHandler):
        return Path(_handler.baseFilename)
    return None
