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
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CACHE_MULTIPLIERS",
    "PRICE_FIELDS",
    "ModelPrice",
    "PriceTable",
    "TokenCounts",
    "cost_of",
    "cost_usd",
    "load_price_table",
    "split_cache_creation",
    "split_cache_writes",
    "token_counts",
]

#: The five per-model figures, USD per million tokens; also the keys a config override may set.
PRICE_FIELDS: tuple[str, ...] = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")

#: The price list's prompt-caching multipliers of the base input price, used to derive the cache figures
#: of a model that an override adds with only ``input`` and ``output``.
CACHE_MULTIPLIERS: Mapping[str, float] = {"cache_write_5m": 1.25, "cache_write_1h": 2.0, "cache_read": 0.1}

_PER_TOKEN = 1e-6  # figures are per million tokens
_LONG_FIELDS = ("threshold", *PRICE_FIELDS)
_MODEL_KEYS = frozenset({*PRICE_FIELDS, "aliases", "long_context", "derived_by_rule", "source"})
_TOP_KEYS = frozenset(
    {"as_of", "source", "currency", "unit", "batch_discount", "cache_multipliers", "models"}
)


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

    def __post_init__(self) -> None:
        for name in (*PRICE_FIELDS, "batch_multiplier"):
            _check_rate(getattr(self, name), name)
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
class TokenCounts:
    """The billable tokens of one request. ``input`` excludes cache writes and reads (as the API reports
    it); ``batch`` is true when the request ran on the Batch API (``usage.service_tier == "batch"``)."""

    input: int = 0
    output: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    batch: bool = False


def cost_usd(price: ModelPrice, tokens: TokenCounts) -> float:
    """The cost of ``tokens`` at ``price``, in USD: long-context rates above the threshold, then the
    batch discount."""
    return cost_of(
        price,
        tokens.input,
        tokens.output,
        tokens.cache_write_5m,
        tokens.cache_write_1h,
        tokens.cache_read,
        tokens.batch,
    )


def cost_of(
    price: ModelPrice,
    input: int,
    output: int,
    cache_write_5m: int,
    cache_write_1h: int,
    cache_read: int,
    batch: bool,
) -> float:
    """:func:`cost_usd` from plain counts, for the per-request path (nothing allocated but the result)."""
    threshold = price.long_context_threshold
    if threshold is not None and input + cache_write_5m + cache_write_1h + cache_read > threshold:
        lc_in = price.long_context_input
        lc_out = price.long_context_output
        lc_5m = price.long_context_cache_write_5m
        lc_1h = price.long_context_cache_write_1h
        lc_read = price.long_context_cache_read
        total = (
            input * (price.input if lc_in is None else lc_in)
            + output * (price.output if lc_out is None else lc_out)
            + cache_write_5m * (price.cache_write_5m if lc_5m is None else lc_5m)
            + cache_write_1h * (price.cache_write_1h if lc_1h is None else lc_1h)
            + cache_read * (price.cache_read if lc_read is None else lc_read)
        )
    else:
        total = (
            input * price.input
            + output * price.output
            + cache_write_5m * price.cache_write_5m
            + cache_write_1h * price.cache_write_1h
            + cache_read * price.cache_read
        )
    if batch:
        total *= price.batch_multiplier
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
    return TokenCounts(
        input=_get(usage, "input_tokens") or 0,
        output=_get(usage, "output_tokens") or 0,
        cache_write_5m=five,
        cache_write_1h=hour,
        cache_read=_get(usage, "cache_read_input_tokens") or 0,
        batch=_get(usage, "service_tier") == "batch",
    )


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

    __slots__ = ("_batch_multiplier", "_cache", "_index", "_lock", "_prices", "aliases", "as_of", "source")

    as_of: str
    source: str

    def __init__(
        self,
        as_of: str,
        source: str,
        prices: Mapping[str, ModelPrice],
        aliases: Mapping[str, str] | None = None,
        batch_multiplier: float = 0.5,
    ) -> None:
        self.as_of = as_of
        self.source = source
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
            prices[name] = ModelPrice(batch_multiplier=self._batch_multiplier, **values)
        return PriceTable(self.as_of, self.source, prices, aliases, self._batch_multiplier)

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


def _model_from_yaml(name: str, entry: object, batch_multiplier: float) -> tuple[ModelPrice, Iterable[str]]:
    where = f"pricing model {name!r}"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a mapping")
    unknown = set(entry) - _MODEL_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}")
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
    derived = entry.get("derived_by_rule", [])
    if not isinstance(derived, list):
        raise ValueError(f"{where}: derived_by_rule must be a list")
    for item in derived:
        field = item.removeprefix("long_context.") if isinstance(item, str) else item
        if field not in PRICE_FIELDS:
            raise ValueError(f"{where}: derived_by_rule names unknown figure {item!r}")
    aliases = entry.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise ValueError(f"{where}: aliases must be a list of model names")
    return ModelPrice(batch_multiplier=batch_multiplier, **figures), aliases


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
    discount = data.get("batch_discount", 0.5)
    _check_rate(discount, f"{origin}: batch_discount")
    if discount > 1:
        raise ValueError(f"{origin}: batch_discount must be at most 1, not {discount!r}")
    models = data.get("models")
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"{origin}: 'models' must be a non-empty mapping")
    batch_multiplier = 1.0 - float(discount)
    prices: dict[str, ModelPrice] = {}
    aliases: dict[str, str] = {}
    for name, entry in models.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{origin}: model names must be non-empty strings, not {name!r}")
        price, names = _model_from_yaml(name, entry, batch_multiplier)
        prices[name] = price
        for alias in names:
            if alias in aliases or alias in models:
                raise ValueError(f"{origin}: model name {alias!r} is listed twice")
            aliases[alias] = name
    return PriceTable(as_of, source, prices, aliases, batch_multiplier)


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
