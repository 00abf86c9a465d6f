"""Offline pricing of Claude requests: the price table and what one request costs.

``pricing.yaml`` (shipped here) holds every model's figures, USD per million tokens, each citing its
price-list section and date. :func:`load_price_table` reads it (:mod:`.load`, with
:func:`with_overrides` for a config's ``pricing_overrides``); :meth:`PriceTable.lookup` resolves the model
name a response reports (:mod:`.names`) to a :class:`ModelPrice` (:mod:`.table`); :mod:`.cost` prices one
request, reading the raw parts of a usage with :mod:`.reading`.
"""

from claude_exporter.recording.pricing.cost import (
    UNPRICED_REASONS,
    Estimate,
    Priced,
    TokenCounts,
    cache_savings,
    cost_of,
    cost_usd,
    estimate,
    estimate_tokens,
    price_request,
    token_counts,
    unpriced_reason,
)
from claude_exporter.recording.pricing.load import CACHE_MULTIPLIERS, load_price_table, with_overrides
from claude_exporter.recording.pricing.reading import (
    Iteration,
    fallback_redeemed,
    iterations_of,
    split_cache_creation,
    split_cache_writes,
)
from claude_exporter.recording.pricing.table import (
    PRICE_FIELDS,
    ModelPrice,
    Modifiers,
    PriceLookup,
    PriceTable,
)

__all__ = [
    "CACHE_MULTIPLIERS",
    "PRICE_FIELDS",
    "UNPRICED_REASONS",
    "Estimate",
    "Iteration",
    "ModelPrice",
    "Modifiers",
    "PriceLookup",
    "PriceTable",
    "Priced",
    "TokenCounts",
    "cache_savings",
    "cost_of",
    "cost_usd",
    "estimate",
    "estimate_tokens",
    "fallback_redeemed",
    "iterations_of",
    "load_price_table",
    "price_request",
    "split_cache_creation",
    "split_cache_writes",
    "token_counts",
    "unpriced_reason",
    "with_overrides",
]
