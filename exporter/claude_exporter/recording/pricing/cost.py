"""What one request costs: :func:`price_request`, the one entry for every field a ``usage`` bills on.

It returns a :class:`Priced`: the estimated USD, the tokens that could not be priced and why, and the
USD the request's cache reads saved. What is billed (``pricing.yaml`` explains each rule and cites every
figure): service tier (batch x0.5, priority at list rates), speed (``fast`` rates where the table has
them, else unpriced), inference geo (x1.1 for ``"us"`` on the models the table lists, a geo off the list
unpriced), long context, 5-minute / 1-hour cache writes, web search and fetch requests,
``usage.iterations`` (each iteration at its own model's rates, compaction included) and a redeemed
fallback credit.

The cost and the savings come out of one arithmetic pass: the rates in force (fast, long-context or
base) and the multiplier are chosen once, and the reads are priced at the read rate and at the input
rate side by side. A request without iterations, server tools or a fallback credit takes the straight
path: one call, nothing allocated but the result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from claude_exporter.recording.pricing.reading import (
    Iteration,
    _count,
    _get,
    fallback_redeemed,
    iterations_of,
    split_cache_creation,
    split_cache_writes,
)
from claude_exporter.recording.pricing.table import ModelPrice, PriceLookup

if TYPE_CHECKING:
    from claude_exporter.recording.usage import Usage

__all__ = [
    "UNPRICED_REASONS",
    "Estimate",
    "Priced",
    "TokenCounts",
    "cache_savings",
    "cost_of",
    "cost_usd",
    "estimate",
    "estimate_tokens",
    "price_request",
    "token_counts",
    "unpriced_reason",
]

#: Why tokens went unpriced (the ``reason`` of ``claude_exporter_unpriced_tokens_total``): the model is
#: not in the table, its platform bills on a list the table does not hold, or a billed mode (fast speed,
#: an inference geo) has no figure for that model.
UNPRICED_REASONS: tuple[str, ...] = ("model", "platform", "speed", "inference_geo")

_PER_TOKEN = 1e-6  # figures are per million tokens


@dataclass(slots=True)
class Priced:
    """One request priced: ``usd``; ``unpriced`` tokens and their ``reason`` (``speed``: fast mode on a
    model without fast rates, ``inference_geo``: a geo off the list, ``model``: an iteration on a model
    the table lacks; ``None`` with tokens unpriced: the request's own model has no price, for the caller
    to name); ``savings``, the USD its cache reads saved against reading the same tokens as input."""

    usd: float
    unpriced: int = 0
    reason: str | None = None
    savings: float = 0.0


def price_request(price: ModelPrice | None, usage: Usage, lookup: PriceLookup | None = None) -> Priced:
    """``usage`` priced at ``price``, its model's prices (``None``: not priced, every token unpriced).

    ``lookup`` prices the iterations that name another model (without it, every iteration is priced at
    ``price``). With ``usage.iterations`` the request is billed as the sum of its iterations, since the
    top-level counts leave compaction out; ``usage``'s counts become those sums, so the tokens recorded
    are the tokens billed. Fast speed applies only to iterations on the request's own model; server-tool
    fees are added once and never discounted. Tokens that cannot be priced are counted, never guessed.
    The savings are those of the request's own model on its (summed) counts.
    """
    raw = usage.iterations
    iterations = iterations_of(raw) if raw else ()
    if iterations:
        sum_in = sum_out = sum_5m = sum_1h = sum_read = 0
        for it in iterations:
            sum_in += it.input
            sum_out += it.output
            sum_5m += it.cache_write_5m
            sum_1h += it.cache_write_1h
            sum_read += it.cache_read
        usage.input, usage.output, usage.cache_read = sum_in, sum_out, sum_read
        usage.cache_5m, usage.cache_1h, usage.cache_creation = sum_5m, sum_1h, sum_5m + sum_1h
    if price is None:
        return Priced(0.0, usage.all_input + usage.output)
    five, hour = usage.cache_5m, usage.cache_1h
    if five is None and hour is None:
        write_5m, write_1h = usage.cache_creation, 0
    else:
        write_5m, write_1h = split_cache_writes(usage.cache_creation, five, hour)
    if iterations or usage.web_search or usage.web_fetch or usage.fallback is not None:
        return _with_extras(price, usage, write_5m, write_1h, iterations, lookup)
    priced = _price(
        price,
        usage.input,
        usage.output,
        write_5m,
        write_1h,
        usage.cache_read,
        usage.service_tier,
        usage.speed,
        usage.geo,
        False,
    )
    if priced.unpriced:
        # The tokens the token counters record: the usage's own cache-write total, even where its
        # 5m/1h breakdown claims more.
        priced.unpriced = usage.all_input + usage.output
    return priced


def _with_extras(
    price: ModelPrice,
    usage: Usage,
    write_5m: int,
    write_1h: int,
    iterations: tuple[Iteration, ...],
    lookup: PriceLookup | None,
) -> Priced:
    """A request with iterations, server-tool fees or a fallback credit."""
    modifiers = price.modifiers
    # Per request, and outside the batch discount (which is "on both input and output tokens" only).
    fees = usage.web_search * modifiers.web_search_fee + usage.web_fetch * modifiers.web_fetch_fee
    redeemed = usage.fallback is not None and fallback_redeemed(usage.fallback)
    tier, speed, geo = usage.service_tier, usage.speed, usage.geo
    if not iterations:
        whole = _price(
            price, usage.input, usage.output, write_5m, write_1h, usage.cache_read, tier, speed, geo, redeemed
        )
        whole.usd = fees + whole.usd
        return whole
    usd = fees
    unpriced = 0
    reason: str | None = None
    for it in iterations:
        found = price if it.model is None or lookup is None else lookup(it.model)
        if found is None:
            unpriced += it.tokens
            reason = reason or "model"
            continue
        own = found is price or it.model is None
        part = _price(
            found,
            it.input,
            it.output,
            it.cache_write_5m,
            it.cache_write_1h,
            it.cache_read,
            tier,
            speed if own else None,
            geo,
            redeemed,
        )
        if part.unpriced:
            unpriced += part.unpriced
            reason = reason or part.reason
        else:
            usd += part.usd
    # The savings: the request's own model on the summed counts.
    read = usage.cache_read
    savings = (
        _price(price, usage.input, usage.output, write_5m, write_1h, read, tier, speed, geo, False).savings
        if read
        else 0.0
    )
    return Priced(usd, unpriced, reason, savings)


def _price(
    price: ModelPrice,
    input: int,
    output: int,
    write_5m: int,
    write_1h: int,
    read: int,
    tier: str | None,
    speed: str | None,
    geo: str | None,
    redeemed: bool,
) -> Priced:
    """Tokens at one model's prices, and what their cache reads saved, in one pass.

    Rates: fast (across the whole context window) or long-context (every token, when the prompt is over
    the threshold) or base; a redeemed fallback credit bills cache writes at the cache-read rate; then
    the inference-geo, tier and batch multipliers. The savings are the reads at the input rate less the
    reads at the read rate, under the same rates and multiplier (never below 0).
    """
    if geo is None and tier not in {"priority", "batch"}:
        multiplier: float | None = 1.0  # the common case, decided without a call
    else:
        multiplier = _multiplier(price, tier == "batch", geo, tier)
    if speed == "fast":
        in_rate = price.fast_input
        out_rate = price.fast_output
        if in_rate is None or out_rate is None or multiplier is None:
            return Priced(0.0, input + output + write_5m + write_1h + read, unpriced_reason(price, speed))
        # The model's own cache ratios, applied to the fast input rate.
        base = price.input
        read_rate = price.cache_read / base * in_rate if base else 0.0
        w5_rate = price.cache_write_5m / base * in_rate if base else 0.0
        w1_rate = price.cache_write_1h / base * in_rate if base else 0.0
    elif multiplier is None:
        return Priced(0.0, input + output + write_5m + write_1h + read, unpriced_reason(price, speed))
    else:
        threshold = price.long_context_threshold
        if threshold is not None and input + write_5m + write_1h + read > threshold:
            lc_in = price.long_context_input
            lc_out = price.long_context_output
            lc_5m = price.long_context_cache_write_5m
            lc_1h = price.long_context_cache_write_1h
            lc_read = price.long_context_cache_read
            in_rate = price.input if lc_in is None else lc_in
            out_rate = price.output if lc_out is None else lc_out
            read_rate = price.cache_read if lc_read is None else lc_read
            w5_rate = price.cache_write_5m if lc_5m is None else lc_5m
            w1_rate = price.cache_write_1h if lc_1h is None else lc_1h
        else:
            in_rate = price.input
            out_rate = price.output
            read_rate = price.cache_read
            w5_rate = price.cache_write_5m
            w1_rate = price.cache_write_1h
    if redeemed:
        w5_rate = w1_rate = read_rate
    # Summed in the price list's column order; a zero count adds nothing, so it is skipped.
    total = input * in_rate + output * out_rate
    if write_5m:
        total += write_5m * w5_rate
    if write_1h:
        total += write_1h * w1_rate
    if read:
        total += read * read_rate
        saved = read * (in_rate - read_rate)
    else:
        saved = 0.0
    if multiplier != 1.0:
        total *= multiplier
        saved *= multiplier
    return Priced(total * _PER_TOKEN, 0, None, saved * _PER_TOKEN if saved > 0 else 0.0)


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


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
