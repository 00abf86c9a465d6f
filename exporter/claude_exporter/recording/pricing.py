"""Offline price table for Claude models, and the per-request cost arithmetic.

The table ships with the package as ``pricing.yaml`` (USD per million tokens, with its ``as_of`` date and
the ``source`` price list). :func:`load_price_table` reads it once; :meth:`PriceTable.lookup` maps the
model name a response reports to a :class:`ModelPrice`, or ``None`` when the model is not priced (the
caller then counts its tokens as unpriced: never a silent $0). :func:`cost_usd` turns a
:class:`TokenCounts` into dollars with plain float arithmetic, and :func:`split_cache_creation` reads the
5-minute / 1-hour cache-write split from an ``anthropic`` ``Usage``.

Model names that :meth:`PriceTable.lookup` resolves (case-insensitive, surrounding blanks ignored), in the
order they are tried:

1. a canonical id or an alias from the table: ``claude-sonnet-4-5``, ``claude-sonnet-4-5-20250929``;
2. after stripping, in this order:

   * a trailing bracketed tag, as Claude Code writes it: ``claude-opus-4-6[1m]``;
   * everything up to the last ``/``: Bedrock ARNs
     (``arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude-...``) and
     ``publisher/model`` forms (``anthropic/claude-opus-4-6``);
   * the Bedrock form ``[<region>.]anthropic.<id>[-v<N>[:<M>]]``, where ``<region>`` is one dot-free
     prefix such as ``us``, ``eu``, ``apac``, ``global``, ``us-gov``:
     ``anthropic.claude-sonnet-4-5-20250929-v1:0``, ``us.anthropic.claude-opus-4-6-v1``;
   * the Vertex AI form ``<id>[-v<N>]@<YYYYMMDD>`` becomes ``<id>-<YYYYMMDD>``
     (``claude-sonnet-4-5@20250929``, ``claude-3-5-sonnet-v2@20241022``); any other ``@<tag>`` (such as
     ``@default``) is dropped;

   the result is looked up as in 1;
3. a dated snapshot missing from the table, ``<family>-<YYYYMMDD>``, resolves to ``<family>`` when the
   family is in the table: ``claude-haiku-4-5-20991231`` -> ``claude-haiku-4-5``.

Nothing else is guessed: an unlisted point release (``claude-opus-5-6``) or an unknown suffix
(``claude-opus-4-6-fast``) is unpriced, never priced as a sibling.

What a request is billed (:func:`estimate`) follows the fields its ``usage`` carries: service tier (batch
x0.5, priority at list rates), speed (``fast`` rates where the table has them, else unpriced), inference
geo (x1.1 for ``"us"`` on the models the table lists), long context, 5-minute / 1-hour cache writes, web
search requests, ``usage.iterations`` (each iteration at its own model's rates, compaction included) and a
redeemed fallback credit. ``pricing.yaml`` explains each rule and cites every figure.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CACHE_MULTIPLIERS",
    "PRICE_FIELDS",
    "UNPRICED_REASONS",
    "Estimate",
    "Iteration",
    "ModelPrice",
    "Modifiers",
    "PriceTable",
    "TokenCounts",
    "cache_savings",
    "cost_of",
    "cost_usd",
    "estimate",
    "estimate_tokens",
    "load_price_table",
    "split_cache_creation",
    "split_cache_writes",
    "token_counts",
    "unpriced_reason",
]

#: The five per-model figures, USD per million tokens; also the keys a config override may set.
PRICE_FIELDS: tuple[str, ...] = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")

#: The price list's prompt-caching multipliers of the base input price, used to derive the cache figures
#: of a model that an override adds with only ``input`` and ``output``.
CACHE_MULTIPLIERS: Mapping[str, float] = {"cache_write_5m": 1.25, "cache_write_1h": 2.0, "cache_read": 0.1}

#: Why tokens went unpriced (the ``reason`` of ``claude_exporter_unpriced_tokens_total``): the model is
#: not in the table, its platform bills on a list the table does not hold, or a billed mode (fast speed,
#: an inference geo) has no figure for that model.
UNPRICED_REASONS: tuple[str, ...] = ("model", "platform", "speed", "inference_geo")

_PER_TOKEN = 1e-6  # figures are per million tokens
_LONG_FIELDS = ("threshold", "cite", *PRICE_FIELDS)
_MODEL_KEYS = frozenset({*PRICE_FIELDS, "aliases", "long_context", "derived_by_rule", "cite", "fast"})
_TOP_KEYS = frozenset(
    {"as_of", "source", "currency", "unit", "sections", "cache_multipliers", "modifiers", "models"}
)
_CITE = re.compile(r"^(?P<section>[a-z0-9-]+)@(?P<date>\d{4}-\d{2}-\d{2})$")


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

    def __post_init__(self) -> None:
        for name in (*PRICE_FIELDS, "batch_multiplier"):
            _check_rate(getattr(self, name), name)
        if (self.fast_input is None) != (self.fast_output is None):
            raise ValueError("fast rates need both fast_input and fast_output")
        if self.fast_input is not None:
            _check_rate(self.fast_input, "fast_input")
            _check_rate(self.fast_output, "fast_output")
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
        for name in ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read"):
            value = getattr(self, "long_context_" + name)
            if value is not None:
                _check_rate(value, "long_context_" + name)


@dataclass(frozen=True, slots=True)
class Iteration:
    """One entry of ``usage.iterations``: its type (message, compaction, fallback_message,
    advisor_message), its model (``None``: the request's own) and its tokens."""

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


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """What one request's usage bills on. ``input`` excludes cache writes and reads (as the API reports
    it); ``batch`` (or ``service_tier == "batch"``) marks a Batch API request."""

    input: int = 0
    output: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    batch: bool = False
    service_tier: str | None = None
    speed: str | None = None
    inference_geo: str | None = None
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    iterations: tuple[Iteration, ...] = ()
    fallback_redeemed: bool = False


@dataclass(frozen=True, slots=True)
class Estimate:
    """A request's estimated cost in USD, the tokens that could not be priced, and why."""

    usd: float
    unpriced_tokens: int = 0
    reason: str | None = None


PriceLookup = Callable[[str], "ModelPrice | None"]


def cost_usd(price: ModelPrice, tokens: TokenCounts) -> float | None:
    """The token cost of ``tokens`` at ``price`` in USD (no iterations, no server-tool fees), or ``None``
    when a billed mode (fast speed, an inference geo) has no figure for this model."""
    return cost_of(
        price,
        tokens.input,
        tokens.output,
        tokens.cache_write_5m,
        tokens.cache_write_1h,
        tokens.cache_read,
        tokens.batch or tokens.service_tier == "batch",
        tokens.speed,
        tokens.inference_geo,
        tokens.service_tier,
        tokens.fallback_redeemed,
    )


def estimate_tokens(price: ModelPrice, tokens: TokenCounts, lookup: PriceLookup | None = None) -> Estimate:
    """:func:`estimate` from a :class:`TokenCounts`."""
    tier = "batch" if tokens.batch else tokens.service_tier
    usd, unpriced, reason = estimate(
        price,
        lookup,
        tokens.input,
        tokens.output,
        tokens.cache_write_5m,
        tokens.cache_write_1h,
        tokens.cache_read,
        tier,
        tokens.speed,
        tokens.inference_geo,
        tokens.web_search_requests,
        tokens.web_fetch_requests,
        tokens.iterations,
        tokens.fallback_redeemed,
    )
    return Estimate(usd, unpriced, reason)


def estimate(
    price: ModelPrice,
    lookup: PriceLookup | None,
    input: int,
    output: int,
    cache_write_5m: int,
    cache_write_1h: int,
    cache_read: int,
    tier: str | None = None,
    speed: str | None = None,
    geo: str | None = None,
    web_search: int = 0,
    web_fetch: int = 0,
    iterations: Iterable[Iteration] = (),
    redeemed: bool = False,
) -> tuple[float, int, str | None]:
    """``(usd, unpriced tokens, reason)`` of one request at ``price`` (its model's prices).

    Without iterations: the tokens at ``price`` with every modifier. With ``usage.iterations``: the sum of
    the iterations, each at its own model's prices (``lookup``), since the top-level counts leave out
    compaction; fast speed applies only to iterations on the request's own model. Server-tool fees are
    added once. Tokens that cannot be priced (an iteration model missing from the table, a fast request on
    a model without fast rates, an unknown inference geo) are counted, never guessed.
    """
    batch = tier == "batch"
    fees = price.modifiers
    # Server-tool fees are per request; the batch discount is "on both input and output tokens" only.
    usd = web_search * fees.web_search_fee + web_fetch * fees.web_fetch_fee
    unpriced = 0
    reason: str | None = None
    found_any = False
    for it in iterations:
        found_any = True
        p = price if it.model is None or lookup is None else lookup(it.model)
        if p is None:
            unpriced += it.tokens
            reason = reason or "model"
            continue
        own = p is price or it.model is None
        cost = cost_of(
            p,
            it.input,
            it.output,
            it.cache_write_5m,
            it.cache_write_1h,
            it.cache_read,
            batch,
            speed if own else None,
            geo,
            tier,
            redeemed,
        )
        if cost is None:
            unpriced += it.tokens
            reason = reason or unpriced_reason(p, speed if own else None)
        else:
            usd += cost
    if found_any:
        return usd, unpriced, reason
    cost = cost_of(
        price, input, output, cache_write_5m, cache_write_1h, cache_read, batch, speed, geo, tier, redeemed
    )
    if cost is None:
        total = input + output + cache_write_5m + cache_write_1h + cache_read
        return usd, total, unpriced_reason(price, speed)
    return usd + cost, 0, None


def cache_savings(
    price: ModelPrice,
    input: int,
    output: int,
    cache_write_5m: int,
    cache_write_1h: int,
    cache_read: int,
    tier: str | None = None,
    speed: str | None = None,
    geo: str | None = None,
) -> float:
    """USD the cache reads of one request saved: its cost with the reads billed as plain input, less its
    cost. Both at the same prompt size, so long-context tiers and every modifier apply alike; 0 when the
    request cannot be priced."""
    if not cache_read:
        return 0.0
    batch = tier == "batch"
    if price.long_context_threshold is None and speed != "fast":
        # The common case, without a second pass: the rates do not depend on the prompt size.
        multiplier = _multiplier(price, batch, geo, tier)
        if multiplier is None:
            return 0.0
        saved = cache_read * (price.input - price.cache_read) * multiplier * _PER_TOKEN
        return saved if saved > 0 else 0.0
    actual = cost_of(
        price, input, output, cache_write_5m, cache_write_1h, cache_read, batch, speed, geo, tier
    )
    uncached = cost_of(
        price, input + cache_read, output, cache_write_5m, cache_write_1h, 0, batch, speed, geo, tier
    )
    if actual is None or uncached is None:
        return 0.0
    return max(uncached - actual, 0.0)


def _multiplier(price: ModelPrice, batch: bool, geo: str | None, tier: str | None) -> float | None:
    """The product of the inference-geo, tier and batch multipliers; ``None`` for a geo off the list."""
    multiplier = 1.0
    if geo is not None and price.geo_eligible:
        found = price.modifiers.geo_multipliers.get(geo)
        if found is None:
            return None
        multiplier = found
    if tier == "priority":
        multiplier *= price.modifiers.priority_multiplier
    if batch:
        multiplier *= price.batch_multiplier
    return multiplier


def unpriced_reason(price: ModelPrice, speed: str | None) -> str:
    """Why :func:`cost_of` could not price a request at ``price``: fast speed or an inference geo."""
    return "speed" if speed == "fast" and price.fast_input is None else "inference_geo"


def cost_of(
    price: ModelPrice,
    input: int,
    output: int,
    cache_write_5m: int,
    cache_write_1h: int,
    cache_read: int,
    batch: bool,
    speed: str | None = None,
    geo: str | None = None,
    tier: str | None = None,
    redeemed: bool = False,
) -> float | None:
    """The token cost of one request (or iteration) in USD, from plain counts (nothing allocated but
    the result); ``None`` when ``speed`` or ``geo`` asks for a figure this model does not have.

    Order: fast rates (whole context window) or long-context rates above the threshold or the base rates;
    a redeemed fallback credit bills cache writes at the cache-read rate; then the inference-geo, tier and
    batch multipliers.
    """
    if geo is None and tier != "priority" and not batch:
        multiplier = 1.0  # the common case, decided without a call
    else:
        found = _multiplier(price, batch, geo, tier)
        if found is None:
            return None
        multiplier = found
    if speed == "fast":
        fast_in = price.fast_input
        if fast_in is None or price.fast_output is None:
            return None
        base = price.input
        read_rate = price.cache_read / base * fast_in if base else 0.0
        w5_rate = price.cache_write_5m / base * fast_in if base else 0.0
        w1_rate = price.cache_write_1h / base * fast_in if base else 0.0
        if redeemed:
            w5_rate = w1_rate = read_rate
        total = (
            input * fast_in
            + output * price.fast_output
            + cache_write_5m * w5_rate
            + cache_write_1h * w1_rate
            + cache_read * read_rate
        )
        return total * multiplier * _PER_TOKEN
    threshold = price.long_context_threshold
    if threshold is not None and input + cache_write_5m + cache_write_1h + cache_read > threshold:
        lc_in = price.long_context_input
        lc_out = price.long_context_output
        lc_5m = price.long_context_cache_write_5m
        lc_1h = price.long_context_cache_write_1h
        lc_read = price.long_context_cache_read
        read_rate = price.cache_read if lc_read is None else lc_read
        w5_rate = read_rate if redeemed else (price.cache_write_5m if lc_5m is None else lc_5m)
        w1_rate = read_rate if redeemed else (price.cache_write_1h if lc_1h is None else lc_1h)
        total = (
            input * (price.input if lc_in is None else lc_in)
            + output * (price.output if lc_out is None else lc_out)
            + cache_write_5m * w5_rate
            + cache_write_1h * w1_rate
            + cache_read * read_rate
        )
    elif redeemed:
        read_rate = price.cache_read
        total = (
            input * price.input
            + output * price.output
            + (cache_write_5m + cache_write_1h + cache_read) * read_rate
        )
    else:
        total = (
            input * price.input
            + output * price.output
            + cache_write_5m * price.cache_write_5m
            + cache_write_1h * price.cache_write_1h
            + cache_read * price.cache_read
        )
    if multiplier != 1.0:
        total *= multiplier
    return total * _PER_TOKEN


def _get(obj: object, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def split_cache_creation(usage: object) -> tuple[int, int]:
    """``(5-minute, 1-hour)`` cache-write tokens of an ``anthropic`` ``Usage`` / ``BetaUsage`` or a dict
    of the same shape.

    Uses ``usage.cache_creation.ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens`` when the
    breakdown is present; any part of ``cache_creation_input_tokens`` the breakdown does not account for
    counts as 5-minute. Without a breakdown, all of ``cache_creation_input_tokens`` counts as 5-minute
    (the default TTL). Plain attribute reads: no model dumps.
    """
    breakdown = _get(usage, "cache_creation")
    five = hour = None
    if breakdown is not None:
        five = _get(breakdown, "ephemeral_5m_input_tokens")
        hour = _get(breakdown, "ephemeral_1h_input_tokens")
    return split_cache_writes(_get(usage, "cache_creation_input_tokens") or 0, five, hour)


def split_cache_writes(total: int, five: int | None, hour: int | None) -> tuple[int, int]:
    """The one rule for ``(5-minute, 1-hour)`` cache writes from a total and its optional breakdown:
    without a breakdown all are 5-minute (the default TTL); a part the breakdown leaves out is 5-minute."""
    if five is None and hour is None:
        return total, 0
    five = five or 0
    hour = hour or 0
    rest = total - five - hour
    return (five + rest if rest > 0 else five), hour


def token_counts(usage: object) -> TokenCounts:
    """A :class:`TokenCounts` from an ``anthropic`` ``Usage`` / ``BetaUsage`` or a dict of that shape."""
    five, hour = split_cache_creation(usage)
    tools = _get(usage, "server_tool_use")
    tier = _get(usage, "service_tier")
    return TokenCounts(
        input=_get(usage, "input_tokens") or 0,
        output=_get(usage, "output_tokens") or 0,
        cache_write_5m=five,
        cache_write_1h=hour,
        cache_read=_get(usage, "cache_read_input_tokens") or 0,
        batch=tier == "batch",
        service_tier=tier if isinstance(tier, str) else None,
        speed=_str_or_none(_get(usage, "speed")),
        inference_geo=_str_or_none(_get(usage, "inference_geo")),
        web_search_requests=_count(_get(tools, "web_search_requests")) if tools is not None else 0,
        web_fetch_requests=_count(_get(tools, "web_fetch_requests")) if tools is not None else 0,
        iterations=iterations_of(_get(usage, "iterations")),
        fallback_redeemed=fallback_redeemed(_get(usage, "fallback_credit")),
    )


def iterations_of(items: object) -> tuple[Iteration, ...]:
    """The :class:`Iteration` entries of ``usage.iterations`` (SDK objects or dicts); ``()`` if absent."""
    if not isinstance(items, (list, tuple)) or not items:
        return ()
    out = []
    for item in items:
        five, hour = split_cache_creation(item)
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


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


# ----------------------------------------------------------------------------------------- name forms

_TAG = re.compile(r"\[[^\]]*\]$")
_BEDROCK = re.compile(
    r"^(?:[a-z]{2,10}(?:-[a-z]+)?\.)?anthropic\.(?P<id>[a-z0-9][a-z0-9.-]*?)(?:-v\d+(?::\d+)?)?$"
)
_VERTEX = re.compile(r"^(?P<id>[a-z0-9][a-z0-9.-]*?)(?:-v\d+)?@(?P<tag>[a-z0-9._-]*)$")
_DATED = re.compile(r"^(?P<family>.+)-(?P<date>\d{8})$")
_LOOKUP_CACHE_MAX = 4096
_MISSING = "\x00"  # cache sentinel: never a model name


def _strip_forms(name: str) -> str:
    name = _TAG.sub("", name)
    if "/" in name:
        name = name.rsplit("/", 1)[1]
    m = _BEDROCK.match(name)
    if m is not None:
        name = m.group("id")
    m = _VERTEX.match(name)
    if m is not None:
        tag = m.group("tag")
        name = m.group("id") + ("-" + tag if len(tag) == 8 and tag.isdigit() else "")
    return name


# ---------------------------------------------------------------------------------------------- table


class PriceTable:
    """An immutable price table: canonical model ids -> :class:`ModelPrice`, plus aliases."""

    __slots__ = (
        "_batch_multiplier",
        "_cache",
        "_index",
        "_lock",
        "_prices",
        "aliases",
        "as_of",
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
        self._batch_multiplier = batch_multiplier
        self._cache: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def models(self) -> list[str]:
        """The canonical model ids, in table order."""
        return list(self._prices)

    def price(self, canonical: str) -> ModelPrice:
        """The prices of a canonical id (``KeyError`` if it is not one)."""
        return self._prices[canonical]

    def resolve(self, model: str) -> str | None:
        """The canonical id ``model`` resolves to (see the module docstring), or ``None``."""
        found = self._index.get(model)
        if found is not None:
            return found
        cache = self._cache
        cached = cache.get(model, _MISSING)
        if cached != _MISSING:
            return cached
        result = self._resolve_slow(model)
        with self._lock:
            if len(cache) >= _LOOKUP_CACHE_MAX:
                cache.clear()
            cache[model] = result
        return result

    def _resolve_slow(self, model: str) -> str | None:
        if not isinstance(model, str):
            return None
        index = self._index
        name = model.strip().lower()
        found = index.get(name)
        if found is not None:
            return found
        name = _strip_forms(name)
        found = index.get(name)
        if found is not None:
            return found
        m = _DATED.match(name)
        if m is not None:
            return index.get(m.group("family"))
        return None

    def lookup(self, model: str) -> ModelPrice | None:
        """The prices of ``model``, or ``None`` when it is not priced."""
        canonical = self.resolve(model)
        return None if canonical is None else self._prices[canonical]

    def lookup_on(self, model: str, platform: str) -> tuple[ModelPrice | None, str | None]:
        """``(prices, None)`` for ``model`` on ``platform`` (``anthropic``, ``bedrock``, ``vertex``,
        ``foundry``, ...), or ``(None, reason)`` with a reason of :data:`UNPRICED_REASONS`."""
        if platform in self.modifiers.unpriced_platforms:
            return None, "platform"
        found = self.lookup(model)
        return (found, None) if found is not None else (None, "model")

    def with_overrides(self, overrides: Mapping[str, Mapping[str, float]]) -> PriceTable:
        """A copy of the table with config overrides applied.

        ``overrides`` maps a model name to some of ``input``, ``output``, ``cache_write_5m``,
        ``cache_write_1h``, ``cache_read`` (USD per million tokens). A name that is a canonical id or an
        alias of the table overrides that model and keeps its other figures (long-context rates too). Any
        other name adds a model, which needs at least ``input`` and ``output``; its missing cache figures
        are derived with :data:`CACHE_MULTIPLIERS`. A bad name, key or value raises ``ValueError`` naming
        the model and the key.
        """
        if not isinstance(overrides, Mapping):
            raise ValueError(
                f"price overrides must be a mapping of model -> prices, not {type(overrides).__name__}"
            )
        prices = dict(self._prices)
        aliases = dict(self.aliases)
        for model, figures in overrides.items():
            if not isinstance(model, str) or not model.strip():
                raise ValueError(f"price override: model name must be a non-empty string, not {model!r}")
            if not isinstance(figures, Mapping):
                raise ValueError(f"price override for model {model!r}: expected a mapping of prices")
            values: dict[str, Any] = {}
            for key, value in figures.items():
                if key not in PRICE_FIELDS:
                    expected = ", ".join(PRICE_FIELDS)
                    raise ValueError(
                        f"price override for model {model!r}: unknown key {key!r} (expected {expected})"
                    )
                values[key] = _rate(value, f"price override for model {model!r}, key {key!r}")
            name = model.strip().lower()
            canonical = self._index.get(name)
            if canonical is not None:
                prices[canonical] = replace(prices[canonical], **values)
                continue
            for key in ("input", "output"):
                if key not in values:
                    raise ValueError(f"price override for new model {model!r}: missing key {key!r}")
            for key, mult in CACHE_MULTIPLIERS.items():
                values.setdefault(key, values["input"] * mult)
            prices[name] = ModelPrice(
                batch_multiplier=self._batch_multiplier, modifiers=self.modifiers, **values
            )
        changed = frozenset(self._index.get(m.strip().lower(), m.strip().lower()) for m in overrides)
        return PriceTable(
            self.as_of,
            self.source,
            prices,
            aliases,
            self._batch_multiplier,
            self.modifiers,
            self.sections,
            self.cites,
            self.overridden | changed,
        )

    def __repr__(self) -> str:
        return f"PriceTable(as_of={self.as_of!r}, source={self.source!r}, models={len(self._prices)})"


def _check_rate(value: object, what: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{what}: expected a finite number >= 0, not {value!r}")


def _rate(value: object, what: str) -> float:
    _check_rate(value, what)
    return float(value)  # type: ignore[arg-type]  # checked just above


# --------------------------------------------------------------------------------------------- loader


class _Loader:
    """Reads pricing.yaml, checking every citation against the declared sections."""

    def __init__(self, origin: str, sections: Mapping[str, str]) -> None:
        self.origin = origin
        self.sections = sections
        self.cites: dict[str, str] = {}

    def cite(self, where: str, key: str, entry: Mapping[str, Any]) -> None:
        value = entry.get("cite")
        if not isinstance(value, str):
            raise ValueError(f"{self.origin}: {where}: 'cite: <section>@<YYYY-MM-DD>' is required")
        m = _CITE.match(value)
        if m is None:
            raise ValueError(f"{self.origin}: {where}: cite must read <section>@<YYYY-MM-DD>, not {value!r}")
        if m.group("section") not in self.sections:
            known = ", ".join(sorted(self.sections))
            raise ValueError(
                f"{self.origin}: {where}: unknown section {m.group('section')!r} (known: {known})"
            )
        self.cites[key] = value

    def model(
        self, name: str, entry: object, batch_multiplier: float, modifiers: Modifiers, geo: frozenset[str]
    ) -> tuple[ModelPrice, Iterable[str]]:
        where = f"pricing model {name!r}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: expected a mapping")
        unknown = set(entry) - _MODEL_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}")
        self.cite(where, name, entry)
        figures: dict[str, Any] = {}
        for key in PRICE_FIELDS:
            if key not in entry:
                raise ValueError(f"{where}: missing key {key!r}")
            figures[key] = _rate(entry[key], f"{where}, key {key!r}")
        long = entry.get("long_context")
        if long is not None:
            if not isinstance(long, Mapping):
                raise ValueError(f"{where}: long_context must be a mapping")
            unknown = set(long) - set(_LONG_FIELDS)
            if unknown:
                raise ValueError(f"{where}: unknown long_context key(s) {sorted(unknown)}")
            self.cite(f"{where}, long_context", f"{name}.long_context", long)
            threshold = long.get("threshold")
            if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
                raise ValueError(f"{where}: long_context.threshold must be an int >= 0, not {threshold!r}")
            for key in ("input", "output"):
                if key not in long:
                    raise ValueError(f"{where}: missing key 'long_context.{key}'")
            figures["long_context_threshold"] = threshold
            for key in PRICE_FIELDS:
                if key in long:
                    figures["long_context_" + key] = _rate(long[key], f"{where}, key 'long_context.{key}'")
        fast = entry.get("fast")
        if fast is not None:
            if not isinstance(fast, Mapping) or set(fast) != {"input", "output", "cite"}:
                raise ValueError(f"{where}: fast must be a mapping of input, output and cite")
            self.cite(f"{where}, fast", f"{name}.fast", fast)
            figures["fast_input"] = _rate(fast["input"], f"{where}, key 'fast.input'")
            figures["fast_output"] = _rate(fast["output"], f"{where}, key 'fast.output'")
        derived = entry.get("derived_by_rule", [])
        if not isinstance(derived, list):
            raise ValueError(f"{where}: derived_by_rule must be a list")
        for item in derived:
            field_name = item.removeprefix("long_context.") if isinstance(item, str) else item
            if field_name not in PRICE_FIELDS:
                raise ValueError(f"{where}: derived_by_rule names unknown figure {item!r}")
        aliases = entry.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
            raise ValueError(f"{where}: aliases must be a list of model names")
        price = ModelPrice(
            batch_multiplier=batch_multiplier, geo_eligible=name in geo, modifiers=modifiers, **figures
        )
        return price, aliases

    def modifiers(self, data: object) -> tuple[float, Modifiers, frozenset[str]]:
        """``(batch multiplier, Modifiers, models the inference-geo multipliers apply to)``."""
        where = "modifiers"
        if not isinstance(data, Mapping):
            raise ValueError(f"{self.origin}: 'modifiers' must be a mapping")
        expected = {"batch", "priority", "inference_geo", "server_tools", "unpriced_platforms"}
        if set(data) != expected:
            raise ValueError(f"{self.origin}: modifiers must hold exactly {sorted(expected)}")
        batch = self._entry(data, "batch", {"multiplier", "cite"})
        priority = self._entry(data, "priority", {"multiplier", "cite"})
        geo = self._entry(data, "inference_geo", {"multipliers", "models", "cite"})
        tools = data["server_tools"]
        if not isinstance(tools, Mapping) or set(tools) != {"web_search", "web_fetch"}:
            raise ValueError(f"{self.origin}: {where}.server_tools must hold web_search and web_fetch")
        fees = {}
        for name in ("web_search", "web_fetch"):
            entry = self._entry(tools, name, {"usd_per_request", "cite"}, f"server_tools.{name}")
            fees[name] = _rate(entry["usd_per_request"], f"{self.origin}: {where}.server_tools.{name}")
        platforms = self._entry(data, "unpriced_platforms", {"platforms", "cite"})
        multipliers = geo["multipliers"]
        if not isinstance(multipliers, Mapping) or not multipliers:
            raise ValueError(f"{self.origin}: {where}.inference_geo.multipliers must be a mapping")
        geo_models = geo["models"]
        names = platforms["platforms"]
        if not isinstance(geo_models, list) or not all(isinstance(m, str) for m in geo_models):
            raise ValueError(f"{self.origin}: {where}.inference_geo.models must be a list of model ids")
        if not isinstance(names, list) or not all(isinstance(m, str) for m in names):
            raise ValueError(f"{self.origin}: {where}.unpriced_platforms.platforms must be a list")
        batch_multiplier = _rate(batch["multiplier"], f"{self.origin}: {where}.batch.multiplier")
        if batch_multiplier > 1:
            raise ValueError(f"{self.origin}: {where}.batch.multiplier must be at most 1")
        modifiers = Modifiers(
            priority_multiplier=_rate(priority["multiplier"], f"{self.origin}: {where}.priority.multiplier"),
            geo_multipliers={
                str(k): _rate(v, f"{self.origin}: {where}.inference_geo.multipliers.{k}")
                for k, v in multipliers.items()
            },
            web_search_fee=fees["web_search"],
            web_fetch_fee=fees["web_fetch"],
            unpriced_platforms=frozenset(names),
        )
        return batch_multiplier, modifiers, frozenset(m.strip().lower() for m in geo_models)

    def _entry(
        self, data: Mapping[str, Any], name: str, keys: set[str], label: str | None = None
    ) -> Mapping[str, Any]:
        label = label or name
        entry = data.get(name)
        if not isinstance(entry, Mapping) or set(entry) != keys:
            raise ValueError(f"{self.origin}: modifiers.{label} must hold exactly {sorted(keys)}")
        self.cite(f"modifiers.{label}", f"modifiers.{label}", entry)
        return entry


def _table_from_yaml(data: object, origin: str) -> PriceTable:
    if not isinstance(data, Mapping):
        raise ValueError(f"{origin}: expected a mapping at the top level")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ValueError(f"{origin}: unknown key(s) {sorted(unknown)}")
    as_of, source = data.get("as_of"), data.get("source")
    if not isinstance(as_of, str) or not as_of:
        raise ValueError(f"{origin}: 'as_of' (the date of the figures, as a string) is required")
    if not isinstance(source, str) or not source:
        raise ValueError(f"{origin}: 'source' (the URL of the price list) is required")
    sections = data.get("sections")
    if (
        not isinstance(sections, Mapping)
        or not sections
        or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in sections.items())
    ):
        raise ValueError(f"{origin}: 'sections' must map section ids to URLs")
    loader = _Loader(origin, sections)
    cache = data.get("cache_multipliers")
    if not isinstance(cache, Mapping):
        raise ValueError(f"{origin}: 'cache_multipliers' must be a mapping")
    loader.cite("cache_multipliers", "cache_multipliers", cache)
    batch_multiplier, modifiers, geo = loader.modifiers(data.get("modifiers"))
    models = data.get("models")
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"{origin}: 'models' must be a non-empty mapping")
    missing_geo = geo - set(models)
    if missing_geo:
        raise ValueError(
            f"{origin}: modifiers.inference_geo.models names unknown models {sorted(missing_geo)}"
        )
    prices: dict[str, ModelPrice] = {}
    aliases: dict[str, str] = {}
    for name, entry in models.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{origin}: model names must be non-empty strings, not {name!r}")
        price, names = loader.model(name, entry, batch_multiplier, modifiers, geo)
        prices[name] = price
        for alias in names:
            if alias in aliases or alias in models:
                raise ValueError(f"{origin}: model name {alias!r} is listed twice")
            aliases[alias] = name
    return PriceTable(as_of, source, prices, aliases, batch_multiplier, modifiers, sections, loader.cites)


@functools.lru_cache(maxsize=8)
def _load(path: str | None) -> PriceTable:
    if path is None:
        text = resources.files(__package__).joinpath("pricing.yaml").read_text(encoding="utf-8")
        origin = "claude_exporter/recording/pricing.yaml"
    else:
        text = Path(path).read_text(encoding="utf-8")
        origin = path
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{origin}: not valid YAML: {exc}") from exc
    return _table_from_yaml(data, origin)


def load_price_table(path: str | Path | None = None) -> PriceTable:
    """The price table in ``path``, by default the packaged ``pricing.yaml``. Cached per path; the
    returned table is immutable. Raises ``ValueError`` on a malformed file."""
    return _load(None if path is None else str(Path(path).resolve()))
