"""Offline pricing of Claude requests: the price table and what one request costs.

``pricing.yaml`` (shipped here) holds every model's figures, USD per million tokens, each citing its
price-list section and date. :func:`load_price_table` reads it (:mod:`.load`, with
:func:`with_overrides` for a config's ``pricing_overrides``); :meth:`PriceTable.lookup` resolves the model
name a response reports (:mod:`.names`) to a :class:`ModelPrice` (:mod:`.table`); :func:`price_request`
prices one request's ``Usage`` (:mod:`.cost`, reading the raw parts of a usage with :mod:`.reading`).
"""

from claude_exporter.recording.pricing.cost import Priced, price_request
from claude_exporter.recording.pricing.load import CACHE_MULTIPLIERS, load_price_table, with_overrides
from claude_exporter.recording.pricing.table import PRICE_FIELDS, ModelPrice, PriceLookup, PriceTable

__all__ = [
    "CACHE_MULTIPLIERS",
    "PRICE_FIELDS",
    "ModelPrice",
    "PriceLookup",
    "PriceTable",
    "Priced",
    "load_price_table",
    "price_request",
    "with_overrides",
]
