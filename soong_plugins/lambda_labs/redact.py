"""Keeping the API key out of everything but the Authorization header.

DESIGN ("Rules of thumb"): secrets never appear in output, logs, tracebacks or process
arguments. The client registers each key it holds here; every record of the
``soong.lambda`` logger (the only logger this plugin writes to; ``http.client``'s
debuglevel is never turned on) passes through :class:`RedactingFilter`, and every text
that reaches an error message passes through :func:`redact`. Redaction is a second
line of defence: the code never formats the key into a message in the first place.

Standard library only; importing it costs nothing.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "****"
LOGGER_NAME = "soong.lambda"

_secrets: set[str] = set()
_lock = threading.Lock()
_AUTH_HEADER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=:-]{6,}")
"""An Authorization header's value, wherever one was quoted (a proxy's error page...)."""
MIN_SECRET = 6
"""Shorter strings are not registered: masking every "abc" in every line helps nobody."""


def register_secret(secret: str | None) -> None:
    """Mask ``secret`` from now on, in this process."""
    if secret and len(secret) >= MIN_SECRET:
        with _lock:
            _secrets.add(secret)


def redact(text: str) -> str:
    """``text`` with every registered secret and any ``Bearer ...`` value masked."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return _AUTH_HEADER.sub(lambda m: f"{m.group(1)} {MASK}", text)


class RedactingFilter(logging.Filter):
    """Formats each record once and masks secrets in the result (args included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken log call must not leak its raw arguments either
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        return True


def get_logger() -> logging.Logger:
    """The ``soong.lambda`` logger with its redacting filter (added once)."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger
