"""Token counts of one request, read from any object shaped like the API's ``usage``.

Attributes are read by name, so first-party, beta, Bedrock and Vertex usage objects (and the ingestion
paths' plain values) all fit; nothing here imports the SDK.
"""

from __future__ import annotations

import operator
from typing import Any, NoReturn

__all__ = ["MAX_TOKENS", "Usage"]

_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
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
_READ = operator.itemgetter(*_USAGE_FIELDS)
_NONE = dict.fromkeys(_USAGE_FIELDS)
_COMPLETE: dict[type, bool] = {}  # usage class -> whether its models' __dict__ has every field read
# The most tokens one request may report: far above any real request, far below where the float sums
# of the counters lose whole tokens. A count outside [0, MAX_TOKENS] is refused before it is stored.
MAX_TOKENS = 10**12


def _count(value: Any) -> int:
    if value.__class__ is int and 0 <= value <= MAX_TOKENS:
        return value
    _refuse(value)


def _refuse(value: Any) -> NoReturn:
    raise ValueError(f"token count out of range: {str(value)[:40]}")


class Usage:
    """Token counts of one request; stream events overwrite fields as they arrive. Counts are checked
    where they enter (:meth:`update`): one outside 0..:data:`MAX_TOKENS` raises ``ValueError`` (a fault
    for the caller to count) and is not kept."""

    # Class-level defaults rather than slots: a request sets its four counts and, rarely, one or two of
    # the others, so a new Usage costs four writes instead of sixteen.
    cache_5m: int | None = None
    cache_1h: int | None = None
    service_tier: str | None = None
    speed: str | None = None
    geo: str | None = None
    web_search = 0
    web_fetch = 0
    iterations: Any = None  # usage.iterations as given; parsed only to price the request
    fallback: Any = None  # usage.fallback_credit
    # What the message says beside its usage (one object per response, so kept here).
    cache_miss: str | None = None  # diagnostics.cache_miss_reason.type, bounded
    cache_missed = 0  # its cache_missed_input_tokens
    refusal: str | None = None  # stop_details.category of a refusal, bounded
    model: str | None = None  # the model the response names, which bills it (may differ from the request's)

    def __init__(self, input: int = 0, output: int = 0, cache_creation: int = 0, cache_read: int = 0) -> None:
        self.input = input
        self.output = output
        self.cache_creation = cache_creation
        self.cache_read = cache_read

    def update(self, usage: Any) -> None:
        """Overwrite with every count ``usage`` carries (message_delta usage is cumulative)."""
        if usage is None:
            return
        # A pydantic model keeps its fields in its __dict__: every one read in one C call, where each
        # missing optional field read as an attribute would go through pydantic's __getattr__.
        fields = getattr(usage, "__dict__", None)
        if fields is None:  # not a model
            fields = {name: getattr(usage, name, None) for name in _USAGE_FIELDS}
        else:
            cls = usage.__class__
            complete = _COMPLETE.get(cls)
            if complete is None:  # decided once per class: a model's __dict__ holds every declared field
                complete = _COMPLETE[cls] = all(name in fields for name in _USAGE_FIELDS)
            if not complete:  # a usage class without some of the fields (message_delta's, an older SDK's)
                fields = {**_NONE, **fields}
        (
            input, output, written, read, split, tier, speed, geo, tools, iterations, credit
        ) = _READ(fields)  # fmt: skip
        # The four counts, checked inline: this runs once per response and per stream delta.
        if input is not None:
            if input.__class__ is not int or not 0 <= input <= MAX_TOKENS:
                _refuse(input)
            self.input = input
        if output is not None:
            if output.__class__ is not int or not 0 <= output <= MAX_TOKENS:
                _refuse(output)
            self.output = output
        if written is not None:
            if written.__class__ is not int or not 0 <= written <= MAX_TOKENS:
                _refuse(written)
            if split is None and written != self.cache_creation and (self.cache_5m or self.cache_1h):
                self._rescale_split(written)
            self.cache_creation = written
        if read is not None:
            if read.__class__ is not int or not 0 <= read <= MAX_TOKENS:
                _refuse(read)
            self.cache_read = read
        if split is not None:
            five = getattr(split, "ephemeral_5m_input_tokens", None)
            hour = getattr(split, "ephemeral_1h_input_tokens", None)
            self.cache_5m = None if five is None else _count(five)
            self.cache_1h = None if hour is None else _count(hour)
        if tier is not None:
            self.service_tier = tier
        if speed is not None:
            self.speed = speed
        if geo is not None:
            self.geo = geo
        if tools is not None:
            self.web_search = getattr(tools, "web_search_requests", 0) or 0
            self.web_fetch = getattr(tools, "web_fetch_requests", 0) or 0
        if iterations is not None:
            self.iterations = iterations
        if credit is not None:
            self.fallback = credit

    def _rescale_split(self, total: int) -> None:
        """A new cache-write total without its 5m/1h split (a stream's message_delta after the split of
        message_start): the split kept in the proportion it had, so the writes are not all taken for
        5-minute ones (the 1-hour part rounded down, the rest 5-minute)."""
        five, hour = self.cache_5m or 0, self.cache_1h or 0
        hour = total * hour // (five + hour)
        self.cache_5m, self.cache_1h = total - hour, hour

    @property
    def all_input(self) -> int:
        """Input as the model processed it: plain input plus cache writes and reads."""
        return self.input + self.cache_creation + self.cache_read
