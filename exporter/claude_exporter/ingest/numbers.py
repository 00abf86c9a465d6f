"""The one range check for every number the ingest endpoints take, from events, OTLP and hooks alike.

It covers ``/v1/events`` fields, the numeric attributes of OTLP log records that the Claude Code mapping
reads, OTLP sum points and hook bodies.

A number passes when it is a real number (not a bool, not NaN or an infinity, not an integer too long to
convert) inside its field's inclusive range in :data:`RANGES`; anything else is a problem worded the same
wherever it came from, e.g. ``must be an integer from 0 to 1000000000000, got an integer of 400 digits``.
The ranges sit far above anything real and far below where a float stops adding exactly (2**53), so no
accepted number can make a counter or a histogram sum infinite, NaN or stuck.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["POINT", "RANGES", "Range", "check", "screen", "show"]

_SHOW = 80  # characters of a bad value quoted back
_DAYS_30_MS = 30 * 86_400_000


@dataclass(frozen=True)
class Range:
    low: int
    high: int
    whole: bool  # an integer count, not any number

    def __str__(self) -> str:
        return f"{'an integer' if self.whole else 'a number'} from {self.low} to {self.high}"


_TOKENS = Range(0, 10**12, True)  # a trillion tokens in one event
_MILLIS = Range(0, _DAYS_30_MS, False)
POINT = "value"  # an OTLP sum data point's value

# Every number the ingest reads, by field name (the same name means the same thing in every source).
RANGES: dict[str, Range] = {
    # /v1/events
    "input_tokens": _TOKENS,
    "output_tokens": _TOKENS,
    "cache_creation_input_tokens": _TOKENS,
    "cache_read_input_tokens": _TOKENS,
    "duration_ms": _MILLIS,  # also Claude Code's events and hooks
    "requests": Range(1, 10**6, True),
    # Claude Code's api_request / api_error / tool_result attributes
    "cache_creation_tokens": _TOKENS,
    "cache_read_tokens": _TOKENS,
    "ttft_ms": _MILLIS,
    "cost_usd": Range(0, 10**6, False),  # a million dollars for one request
    "status_code": Range(0, 999, True),
    "attempt": Range(0, 10**6, True),
    # a sum point (a count since its start, or a delta; non-monotonic sums may go down)
    POINT: Range(-(10**15), 10**15, False),
}


def show(value: object) -> str:
    """A bad value quoted back: JSON, at most 80 characters; a huge integer by its number of digits."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**_SHOW:
        return f"an integer of {len(str(abs(value) // 10**_SHOW)) + _SHOW} digits"
    try:
        text = json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        text = repr(type(value))
    return text if len(text) <= _SHOW else text[: _SHOW - 3] + "..."


def _parse(text: str) -> float | int | None:
    """A number written as text (OTLP attributes often carry them so), or None."""
    text = text.strip()
    if not text or len(text) > _SHOW:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def check(value: object, field: str, *, lenient: bool = False) -> tuple[float, str | None]:
    """``value`` as a float within ``RANGES[field]``, or ``(0.0, problem)``. ``lenient`` (OTLP attributes):
    a number written as text is read, and a whole float counts as an integer."""
    limit = RANGES[field]
    number: object = _parse(value) if lenient and isinstance(value, str) else value
    if lenient and limit.whole and isinstance(number, float) and number.is_integer():
        number = int(number)
    if (
        isinstance(number, (int, float))
        and not isinstance(number, bool)
        and (isinstance(number, int) or not limit.whole)
        and (isinstance(number, int) or math.isfinite(number))
        and limit.low <= number <= limit.high  # before float(): an integer of 400 digits overflows it
    ):
        return float(number), None
    return 0.0, f"must be {limit}, got {show(value)}"


def screen(attrs: Mapping[str, object]) -> list[str]:
    """The problems of the numbers (numeric text included) in ``attrs`` that :data:`RANGES` names.

    What is not a number at all ("undefined", a bool) is left to the event reader, which knows whether
    its field is required; a number out of range never gets that far.
    """
    problems = []
    for key, value in attrs.items():
        if key not in RANGES or key == POINT:
            continue
        numeric = _parse(value) is not None if isinstance(value, str) else isinstance(value, (int, float))
        if numeric and not isinstance(value, bool):
            _, problem = check(value, key, lenient=True)
            if problem is not None:
                problems.append(f"{key}: {problem}")
    return problems
