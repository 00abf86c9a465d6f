"""Token counts of one request, read from any object shaped like the API's ``usage``.

Attributes are read by name, so first-party, beta, Bedrock and Vertex usage objects (and the ingestion
paths' plain values) all fit; nothing here imports the SDK.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Usage"]

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


class Usage:
    """Token counts of one request; stream events overwrite fields as they arrive."""

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
            self.input = value
        if (value := usage.output_tokens) is not None:
            self.output = value
        if "cache_creation_input_tokens" in has and (value := usage.cache_creation_input_tokens) is not None:
            self.cache_creation = value
        if "cache_read_input_tokens" in has and (value := usage.cache_read_input_tokens) is not None:
            self.cache_read = value
        if "cache_creation" in has and (split := usage.cache_creation) is not None:
            self.cache_5m = getattr(split, "ephemeral_5m_input_tokens", None)
            self.cache_1h = getattr(split, "ephemeral_1h_input_tokens", None)
        if "service_tier" in has and (tier := usage.service_tier) is not None:
            self.service_tier = tier

    @property
    def all_input(self) -> int:
        """Input as the model processed it: plain input plus cache writes and reads."""
        return self.input + self.cache_creation + self.cache_read
