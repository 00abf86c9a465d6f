"""The raw parts of a response's usage, read for billing: iterations, fallback credit, cache-write split.

``Usage`` keeps ``usage.iterations`` and ``usage.fallback_credit`` as the SDK gives them; they are read
here only when a request is priced, SDK objects and dicts of the same shape alike (plain attribute reads,
no model dumps). :func:`split_cache_writes` is the one rule for 5-minute / 1-hour cache writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Iteration", "fallback_redeemed", "iterations_of", "split_cache_writes"]


@dataclass(slots=True)
class Iteration:
    """One entry of ``usage.iterations``: its type (message, compaction, fallback_message,
    advisor_message), its model (``None``: the request's own) and its tokens. Not frozen: a frozen
    dataclass sets each field through ``object.__setattr__``, and one is made per iteration priced."""

    kind: str
    model: str | None
    input: int = 0
    output: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0

    @property
    def tokens(self) -> int:
        return self.input + self.output + self.cache_write_5m + self.cache_write_1h + self.cache_read


def split_cache_writes(total: int, five: int | None, hour: int | None) -> tuple[int, int]:
    """The one rule for ``(5-minute, 1-hour)`` cache writes from a total and its optional breakdown:
    without a breakdown all are 5-minute (the default TTL); a part the breakdown leaves out is 5-minute."""
    if five is None and hour is None:
        return total, 0
    five = five or 0
    hour = hour or 0
    rest = total - five - hour
    return (five + rest if rest > 0 else five), hour


def iterations_of(items: object) -> tuple[Iteration, ...]:
    """The :class:`Iteration` entries of ``usage.iterations`` (SDK objects or dicts); ``()`` if absent."""
    if not isinstance(items, (list, tuple)) or not items:
        return ()
    out = []
    for item in items:
        five, hour = _split_cache_creation(item)
        model = _get(item, "model")
        out.append(
            Iteration(
                str(_get(item, "type") or "message"),
                model if isinstance(model, str) and model else None,
                _count(_get(item, "input_tokens")),
                _count(_get(item, "output_tokens")),
                five,
                hour,
                _count(_get(item, "cache_read_input_tokens")),
            )
        )
    return tuple(out)


def fallback_redeemed(credit: object) -> bool:
    """Whether ``usage.fallback_credit`` says the reprice was applied (status type ``redeemed``)."""
    if credit is None:
        return False
    return bool(_get(_get(credit, "status"), "type") == "redeemed")


def _split_cache_creation(usage: object) -> tuple[int, int]:
    """``(5-minute, 1-hour)`` cache writes of a usage-shaped object: its ``cache_creation`` breakdown
    (``ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens``) of ``cache_creation_input_tokens``."""
    breakdown = _get(usage, "cache_creation")
    five = hour = None
    if breakdown is not None:
        five = _get(breakdown, "ephemeral_5m_input_tokens")
        hour = _get(breakdown, "ephemeral_1h_input_tokens")
    return split_cache_writes(_get(usage, "cache_creation_input_tokens") or 0, five, hour)


def _get(obj: object, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
