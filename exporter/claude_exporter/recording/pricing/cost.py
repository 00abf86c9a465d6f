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
path: one pass over one model's rates, nothing built but the numbers and the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from claude_exporter.recording.pricing.reading import fallback_redeemed, iterations_of, split_cache_writes
from claude_exporter.recording.pricing.table import ModelPrice, PriceLookup

if TYPE_CHECKING:
    from claude_exporter.recording.pricing.reading import Iteration
    from claude_exporter.recording.usage import Usage

__all__ = ["Priced", "price_request"]

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
        multiplier = _multiplier(price, geo, tier)
    if speed == "fast":
        in_rate = price.fast_input
        out_rate = price.fast_output
        if in_rate is None or out_rate is None or multiplier is None:
            return Priced(0.0, input + output + write_5m + write_1h + read, _why_unpriced(price, speed))
        # The model's own cache ratios, applied to the fast input rate.
        base = price.input
        read_rate = price.cache_read / base * in_rate if base else 0.0
        w5_rate = price.cache_write_5m / base * in_rate if base else 0.0
        w1_rate = price.cache_write_1h / base * in_rate if base else 0.0
    elif multiplier is None:
        return Priced(0.0, input + output + write_5m + write_1h + read, _why_unpriced(price, speed))
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


def _multiplier(price: ModelPrice, geo: str | None, tier: str | None) -> float | None:
    """The product of the inference-geo and tier (priority or batch) multipliers; ``None`` for a geo off
    the list."""
    multiplier = 1.0
    if geo is not None and price.geo_eligible:
        found = price.modifiers.geo_multipliers.get(geo)
        if found is None:
            return None
        multiplier = found
    if tier == "priority":
        multiplier *= price.modifiers.priority_multiplier
    elif tier == "batch":
        multiplier *= price.batch_multiplier
    return multiplier


def _why_unpriced(price: ModelPrice, speed: str | None) -> str:
    """Why a billed mode left tokens unpriced: fast speed on a model without fast rates, else the geo."""
    return "speed" if speed == "fast" and price.fast_input is None else "inference_geo"
