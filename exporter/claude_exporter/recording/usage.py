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

    __slots__ = ("cache_1h", "cache_5m", "cache_creation", "cache_read", "input", "output", "service_tier")

    def __init__(self, input: int = 0, output: int = 0, cache_creation: int = 0, cache_read: int = 0) -> None:
        self.input = input
        self.output = output
        self.cache_creation = cache_creation
        self.cache_read = cache_read
        self.cache_5m: int | None = None
        self.cache_1h: int | None = None
        self.service_tier: str | None = None

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

    @property
    def all_input(self) -> int:
        """Input as the model processed it: plain input plus cache writes and reads."""
        return self.input + self.cache_creation + self.cache_read
