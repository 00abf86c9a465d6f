"""The price table: each model's figures, the table-wide billing rules, and lookup by any model name.

A :class:`PriceTable` maps canonical model ids to :class:`ModelPrice` (USD per million tokens) and holds
the :class:`Modifiers` every model shares. :meth:`PriceTable.lookup` resolves the name a response reports
(see :mod:`.names`) and returns ``None`` for a model it does not price: its tokens are then counted as
unpriced, never as a silent $0. Tables are immutable; :mod:`.load` builds them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from claude_exporter.recording.pricing.names import resolve_name

__all__ = [
    "DEFAULT_MODIFIERS",
    "PRICE_FIELDS",
    "ModelPrice",
    "Modifiers",
    "PriceLookup",
    "PriceTable",
    "rate",
]

#: The five per-model figures, USD per million tokens; also the keys a config override may set.
PRICE_FIELDS: tuple[str, ...] = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")

_LOOKUP_CACHE_MAX = 4096
_MISSING = "\x00"  # cache sentinel: never a model name


def rate(value: object, what: str) -> float:
    """``value`` as a price (a finite number >= 0, not a bool); ``ValueError`` naming ``what`` if not."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{what}: expected a finite number >= 0, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Modifiers:
    """Table-wide billing rules: multipliers by service tier and inference geo, server-tool fees (USD per
    request), and the platforms whose own price lists the table does not hold."""

    priority_multiplier: float = 1.0
    geo_multipliers: Mapping[str, float] = field(default_factory=lambda: {"global": 1.0, "us": 1.1})
    web_search_fee: float = 0.01
    web_fetch_fee: float = 0.0
    unpriced_platforms: frozenset[str] = frozenset({"bedrock", "vertex"})


DEFAULT_MODIFIERS = Modifiers()


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's prices, USD per million tokens.

    When ``long_context_threshold`` is set, a request whose prompt (input + cache writes + cache reads)
    is larger than the threshold pays the ``long_context_*`` rates on all of its tokens, output
    included. ``batch_multiplier`` scales the whole cost of a Batch API request (0.5: 50% off).
    """

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    long_context_threshold: int | None = None
    long_context_input: float | None = None
    long_context_output: float | None = None
    long_context_cache_write_5m: float | None = None
    long_context_cache_write_1h: float | None = None
    long_context_cache_read: float | None = None
    batch_multiplier: float = 0.5
    fast_input: float | None = None
    fast_output: float | None = None
    geo_eligible: bool = False  # inference_geo multipliers apply (Claude 4.6 and later)
    modifiers: Modifiers = DEFAULT_MODIFIERS
    #: The figures no official price list prints (third-party reports, a partner's page): named as in
    #: pricing.yaml (``cache_read``, ``fast.input``, ``long_context.output``); shown as estimates.
    estimated: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in (*PRICE_FIELDS, "batch_multiplier"):
            rate(getattr(self, name), name)
        if (self.fast_input is None) != (self.fast_output is None):
            raise ValueError("fast rates need both fast_input and fast_output")
        if self.fast_input is not None:
            rate(self.fast_input, "fast_input")
            rate(self.fast_output, "fast_output")
        if self.long_context_threshold is None:
            if self.long_context_input is not None or self.long_context_output is not None:
                raise ValueError("long-context rates given without long_context_threshold")
            return
        if isinstance(self.long_context_threshold, bool) or not isinstance(self.long_context_threshold, int):
            raise ValueError(f"long_context_threshold must be an int, not {self.long_context_threshold!r}")
        if self.long_context_threshold < 0:
            raise ValueError("long_context_threshold must be >= 0")
        if self.long_context_input is None or self.long_context_output is None:
            raise ValueError("long_context_threshold needs long_context_input and long_context_output")
        for name in PRICE_FIELDS:
            value = getattr(self, "long_context_" + name)
            if value is not None:
                rate(value, "long_context_" + name)


#: A model name -> its prices, or ``None`` when it is not priced (:meth:`PriceTable.lookup`).
PriceLookup = Callable[[str], "ModelPrice | None"]


class PriceTable:
    """An immutable price table: canonical model ids -> :class:`ModelPrice`, plus aliases."""

    __slots__ = (
        "_cache",
        "_index",
        "_lock",
        "_prices",
        "aliases",
        "as_of",
        "batch_multiplier",
        "cites",
        "modifiers",
        "overridden",
        "sections",
        "source",
    )

    as_of: str
    source: str

    def __init__(
        self,
        as_of: str,
        source: str,
        prices: Mapping[str, ModelPrice],
        aliases: Mapping[str, str] | None = None,
        batch_multiplier: float = 0.5,
        modifiers: Modifiers = DEFAULT_MODIFIERS,
        sections: Mapping[str, str] | None = None,
        cites: Mapping[str, str] | None = None,
        overridden: frozenset[str] = frozenset(),
    ) -> None:
        self.as_of = as_of
        self.source = source
        self.modifiers = modifiers
        #: the Batch API multiplier, for models a config override adds
        self.batch_multiplier = batch_multiplier
        #: section id -> URL of that part of a price list
        self.sections: Mapping[str, str] = dict(sections or {})
        #: what each figure cites, "<model>" or "<model>.fast" / "modifiers.<name>" -> "<section>@<date>"
        self.cites: Mapping[str, str] = dict(cites or {})
        #: canonical ids whose figures a config override changed or added
        self.overridden = overridden
        self._prices: dict[str, ModelPrice] = {k.strip().lower(): v for k, v in prices.items()}
        #: alias -> canonical id
        self.aliases: Mapping[str, str] = {
            k.strip().lower(): v.strip().lower() for k, v in (aliases or {}).items()
        }
        index: dict[str, str] = {name: name for name in self._prices}
        for alias, canonical in self.aliases.items():
            if canonical not in self._prices:
                raise ValueError(f"alias {alias!r} points at {canonical!r}, which has no prices")
            if alias in index and index[alias] != canonical:
                raise ValueError(f"model name {alias!r} is listed twice")
            index[alias] = canonical
        self._index = index
        self._cache: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def models(self) -> list[str]:
        """The canonical model ids, in table order."""
        return list(self._prices)

    def price(self, canonical: str) -> ModelPrice:
        """The prices of a canonical id (``KeyError`` if it is not one)."""
        return self._prices[canonical]

    def resolve(self, model: str) -> str | None:
        """The canonical id ``model`` resolves to (see :mod:`.names`), or ``None``."""
        found = self._index.get(model)
        if found is not None:
            return found
        cache = self._cache
        cached = cache.get(model, _MISSING)
        if cached != _MISSING:
            return cached
        result = resolve_name(self._index, model)
        with self._lock:
            if len(cache) >= _LOOKUP_CACHE_MAX:
                cache.clear()
            cache[model] = result
        return result

    def lookup(self, model: str) -> ModelPrice | None:
        """The prices of ``model``, or ``None`` when it is not priced."""
        canonical = self.resolve(model)
        return None if canonical is None else self._prices[canonical]

    def __repr__(self) -> str:
        return f"PriceTable(as_of={self.as_of!r}, source={self.source!r}, models={len(self._prices)})"
