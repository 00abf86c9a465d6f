"""Token counts of one request, read from any object shaped like the API's ``usage``.

Attributes are read by name, so first-party, beta, Bedrock and Vertex usage objects (and the ingestion
paths' plain values) all fit; nothing here imports the SDK.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_TOKENS", "Usage"]

_USAGE_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation",
    "service_tier",
    "speed",
    "inference_geo",
    "server_tool_use",
    "iterations",
    "fallback_credit",
)
# Which optional fields each usage class has, decided once per class: pydantic answers a missing
# attribute slowly (about 1.6 us), and message_delta usage lacks two of them.
_FIELDS: dict[type, frozenset[str]] = {}


def _fields_of(cls: type, usage: Any) -> frozenset[str]:
    declared = getattr(cls, "model_fields", None)
    if isinstance(declared, dict):
        found = frozenset(name for name in _USAGE_FIELDS if name in declared)
        _FIELDS[cls] = found
        return found
    return frozenset(name for name in _USAGE_FIELDS if hasattr(usage, name))  # not cached: not a model


# The most tokens one request may report: far above any real request, far below where the float sums
# of the counters lose whole tokens. A count outside [0, MAX_TOKENS] is refused before it is stored.
MAX_TOKENS = 10**12


def _count(value: Any) -> int:
    if value.__class__ is int and 0 <= value <= MAX_TOKENS:
        return value
    raise ValueError(f"token count out of range: {str(value)[:40]}")


class Usage:
    """Token counts of one request; stream events overwrite fields as they arrive. Counts are checked
    where they enter (:meth:`update`): one outside 0..:data:`MAX_TOKENS` raises ``ValueError`` (a fault
    for the caller to count) and is not kept."""

    __slots__ = (
        "cache_1h",
        "cache_5m",
        "cache_creation",
        "cache_miss",
        "cache_missed",
        "cache_read",
        "fallback",
        "geo",
        "input",
        "iterations",
        "output",
        "refusal",
        "service_tier",
        "speed",
        "web_fetch",
        "web_search",
    )

    def __init__(self, input: int = 0, output: int = 0, cache_creation: int = 0, cache_read: int = 0) -> None:
        self.input = input
        self.output = output
        self.cache_creation = cache_creation
        self.cache_read = cache_read
        self.cache_5m: int | None = None
        self.cache_1h: int | None = None
        self.service_tier: str | None = None
        self.speed: str | None = None
        self.geo: str | None = None
        self.web_search = 0
        self.web_fetch = 0
        self.iterations: Any = None  # usage.iterations as given; parsed only to price the request
        self.fallback: Any = None  # usage.fallback_credit
        # What the message says beside its usage (one object per response, so kept here).
        self.cache_miss: str | None = None  # diagnostics.cache_miss_reason.type, bounded
        self.cache_missed = 0  # its cache_missed_input_tokens
        self.refusal: str | None = None  # stop_details.category of a refusal, bounded

    def update(self, usage: Any) -> None:
        """Overwrite with every count ``usage`` carries (message_delta usage is cumulative)."""
        if usage is None:
            return
        cls = type(usage)
        has = _FIELDS.get(cls)
        if has is None:
            has = _fields_of(cls, usage)
        if "input_tokens" in has and (value := usage.input_tokens) is not None:
            self.input = _count(value)
        if (value := usage.output_tokens) is not None:
            self.output = _count(value)
        if "cache_creation_input_tokens" in has and (value := usage.cache_creation_input_tokens) is not None:
            self.cache_creation = _count(value)
        if "cache_read_input_tokens" in has and (value := usage.cache_read_input_tokens) is not None:
            self.cache_read = _count(value)
        if "cache_creation" in has and (split := usage.cache_creation) is not None:
            five = getattr(split, "ephemeral_5m_input_tokens", None)
            hour = getattr(split, "ephemeral_1h_input_tokens", None)
            self.cache_5m = None if five is None else _count(five)
            self.cache_1h = None if hour is None else _count(hour)
        if "service_tier" in has and (tier := usage.service_tier) is not None:
            self.service_tier = tier
        if "speed" in has and (speed := usage.speed) is not None:
            self.speed = speed
        if "inference_geo" in has and (geo := usage.inference_geo) is not None:
            self.geo = geo
        if "server_tool_use" in has and (tools := usage.server_tool_use) is not None:
            self.web_search = getattr(tools, "web_search_requests", 0) or 0
            self.web_fetch = getattr(tools, "web_fetch_requests", 0) or 0
        if "iterations" in has and (iterations := usage.iterations) is not None:
            self.iterations = iterations
        if "fallback_credit" in has and (credit := usage.fallback_credit) is not None:
            self.fallback = credit

    @property
    def all_input(self) -> int:
        """Input as the model processed it: plain input plus cache writes and reads."""
        return self.input + self.cache_creation + self.cache_read
