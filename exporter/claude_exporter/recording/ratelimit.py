"""The ``anthropic-ratelimit-*`` response headers: which there are, and their values as numbers.

Read where the headers are kept: at scrape time from the queue of recent responses (one process), or on
arrival into the files (multiprocess mode), since another worker's queue cannot be read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

__all__ = ["GAUGES", "HEADERS", "PREFIX", "RESOURCES", "parse_ratelimit", "present"]

RESOURCES = ("requests", "tokens", "input_tokens", "output_tokens")
_FIELDS = ("limit", "remaining", "reset")
#: Header field -> the gauge family it is exposed as.
GAUGES = {
    "limit": "claude_ratelimit_limit",
    "remaining": "claude_ratelimit_remaining",
    "reset": "claude_ratelimit_reset_timestamp_seconds",
}
#: What every such header name starts with (lower case).
PREFIX = "anthropic-ratelimit-"
#: (header name, resource, field) of every header read, in a fixed order.
HEADERS: tuple[tuple[str, str, str], ...] = tuple(
    ("anthropic-ratelimit-" + resource.replace("_", "-") + "-" + field, resource, field)
    for resource in RESOURCES
    for field in _FIELDS
)


_PREFIX = PREFIX.encode()
_PREFIX_LENGTH = len(_PREFIX)


def present(headers: Any) -> bool:
    """Whether any ``anthropic-ratelimit-*`` header is there. One pass over the raw names when the
    headers have them (httpx's ``Headers.raw``), where looking up each of the twelve would scan all the
    headers twelve times; most responses of a gateway or a fake have none."""
    raw = getattr(headers, "raw", None)
    if raw is None:
        return any(headers.get(name) is not None for name, _, _ in HEADERS)
    for name, _ in raw:  # noqa: SIM110 - a plain loop: any() with a generator costs more per response
        if name[:_PREFIX_LENGTH].lower() == _PREFIX:
            return True
    return False


def parse_ratelimit(headers: Any, fault: Callable[[str], None]) -> Iterator[tuple[str, str, float]]:
    """``(resource, field, value)`` of every ``anthropic-ratelimit-*`` header present (a response without
    one keeps the last known value); a header that does not parse is counted as a fault."""
    for name, resource, field in HEADERS:
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            yield resource, field, _parse(field, raw)
        except ValueError:
            fault("ratelimit_header")


def _parse(field: str, raw: str) -> float:
    """A header's value; ``ValueError`` for anything but a finite count (or an ISO 8601 time)."""
    if field != "reset":
        value = float(raw)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"not a finite count: {raw[:40]}")
        return value
    return datetime.fromisoformat(raw.strip().replace("Z", "+00:00")).timestamp()
