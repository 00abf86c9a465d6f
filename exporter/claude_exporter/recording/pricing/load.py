"""Reading a price table from pricing.yaml or another file, and a config's price overrides, all checked.

Anything malformed is refused with a ``ValueError`` that names where. Every figure of the file must cite
the price-list section it was read from and the date (``cite: <section>@<YYYY-MM-DD>``, the section one
of the file's ``sections``); the file itself explains each billing rule. :func:`load_price_table` reads
it once per path; :func:`with_overrides` applies the configuration's ``pricing_overrides`` to a table.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from claude_exporter.config.loader import YAMLRefused, parse_yaml, yaml_error_line
from claude_exporter.config.schema import MAX_CONFIG_BYTES
from claude_exporter.recording.pricing.table import PRICE_FIELDS, ModelPrice, Modifiers, PriceTable, rate

__all__ = ["CACHE_MULTIPLIERS", "load_price_table", "with_overrides"]

#: The price list's prompt-caching multipliers of the base input price, used to derive the cache figures
#: of a model that an override adds with only ``input`` and ``output``.
CACHE_MULTIPLIERS: Mapping[str, float] = {"cache_write_5m": 1.25, "cache_write_1h": 2.0, "cache_read": 0.1}

_LONG_FIELDS = ("threshold", "cite", *PRICE_FIELDS)
_MODEL_KEYS = frozenset(
    {*PRICE_FIELDS, "aliases", "long_context", "derived_by_rule", "estimated", "cite", "fast"}
)
_TOP_KEYS = frozenset(
    {"as_of", "source", "currency", "unit", "sections", "cache_multipliers", "modifiers", "models"}
)
_CITE = re.compile(r"^(?P<section>[a-z0-9-]+)@(?P<date>\d{4}-\d{2}-\d{2})$")


def load_price_table(path: str | Path | None = None) -> PriceTable:
    """The price table in ``path``, by default the packaged ``pricing.yaml``. Cached per path; the
    returned table is immutable. Raises ``ValueError`` on a malformed file."""
    return _load(None if path is None else str(Path(path).resolve()))


def with_overrides(table: PriceTable, overrides: Mapping[str, Mapping[str, float]]) -> PriceTable:
    """A copy of ``table`` with config overrides applied.

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
    prices = {name: table.price(name) for name in table.models()}
    # Only the names the table spells: an override never goes through the name forms lookup() strips.
    index = {**{name: name for name in prices}, **table.aliases}
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
            values[key] = rate(value, f"price override for model {model!r}, key {key!r}")
        name = model.strip().lower()
        canonical = index.get(name)
        if canonical is not None:
            found = prices[canonical]
            # A figure the configuration sets is the user's, no longer the table's estimate.
            prices[canonical] = replace(found, estimated=found.estimated - set(values), **values)
            continue
        for key in ("input", "output"):
            if key not in values:
                raise ValueError(f"price override for new model {model!r}: missing key {key!r}")
        for key, mult in CACHE_MULTIPLIERS.items():
            values.setdefault(key, values["input"] * mult)
        prices[name] = ModelPrice(
            batch_multiplier=table.batch_multiplier, modifiers=table.modifiers, **values
        )
    changed = frozenset(index.get(m.strip().lower(), m.strip().lower()) for m in overrides)
    return PriceTable(
        table.as_of,
        table.source,
        prices,
        dict(table.aliases),
        table.batch_multiplier,
        table.modifiers,
        table.sections,
        table.cites,
        table.overridden | changed,
    )


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
            figures[key] = rate(entry[key], f"{where}, key {key!r}")
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
                    figures["long_context_" + key] = rate(long[key], f"{where}, key 'long_context.{key}'")
        fast = entry.get("fast")
        if fast is not None:
            if not isinstance(fast, Mapping) or set(fast) != {"input", "output", "cite"}:
                raise ValueError(f"{where}: fast must be a mapping of input, output and cite")
            self.cite(f"{where}, fast", f"{name}.fast", fast)
            figures["fast_input"] = rate(fast["input"], f"{where}, key 'fast.input'")
            figures["fast_output"] = rate(fast["output"], f"{where}, key 'fast.output'")
        derived = entry.get("derived_by_rule", [])
        if not isinstance(derived, list):
            raise ValueError(f"{where}: derived_by_rule must be a list")
        for item in derived:
            field_name = item.removeprefix("long_context.") if isinstance(item, str) else item
            if field_name not in PRICE_FIELDS:
                raise ValueError(f"{where}: derived_by_rule names unknown figure {item!r}")
        figures["estimated"] = self.estimated(where, entry, figures)
        aliases = entry.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
            raise ValueError(f"{where}: aliases must be a list of model names")
        price = ModelPrice(
            batch_multiplier=batch_multiplier, geo_eligible=name in geo, modifiers=modifiers, **figures
        )
        return price, aliases

    def estimated(self, where: str, entry: Mapping[str, Any], figures: Mapping[str, Any]) -> frozenset[str]:
        """The figures ``estimated`` names, each one this entry gives: ``<field>``, ``fast.input``,
        ``fast.output`` or ``long_context.<field>``."""
        names = entry.get("estimated", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{where}: estimated must be a list of figure names")
        for name in names:
            if name.startswith("fast."):
                key = "fast_" + name.removeprefix("fast.")
            elif name.startswith("long_context."):
                key = "long_context_" + name.removeprefix("long_context.")
            else:
                key = name
            if figures.get(key) is None:
                raise ValueError(f"{where}: estimated names {name!r}, a figure this entry does not give")
        return frozenset(names)

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
            fees[name] = rate(entry["usd_per_request"], f"{self.origin}: {where}.server_tools.{name}")
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
        batch_multiplier = rate(batch["multiplier"], f"{self.origin}: {where}.batch.multiplier")
        if batch_multiplier > 1:
            raise ValueError(f"{self.origin}: {where}.batch.multiplier must be at most 1")
        modifiers = Modifiers(
            priority_multiplier=rate(priority["multiplier"], f"{self.origin}: {where}.priority.multiplier"),
            geo_multipliers={
                str(k): rate(v, f"{self.origin}: {where}.inference_geo.multipliers.{k}")
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
        raw = resources.files(__package__).joinpath("pricing.yaml").read_bytes()
        origin = "claude_exporter/recording/pricing/pricing.yaml"
    else:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        origin = path
        if len(raw) > MAX_CONFIG_BYTES:
            raise ValueError(f"{origin}: over {MAX_CONFIG_BYTES} bytes, too large for a price table")
    try:
        # The configuration's own reader: a user's price file gets the same tag, size and depth limits.
        data, duplicates = parse_yaml(raw, origin)
    except yaml.YAMLError as exc:
        raise ValueError(yaml_error_line(exc, origin)) from exc
    except YAMLRefused as exc:
        raise ValueError(f"{origin}: {exc}") from exc
    if duplicates:
        raise ValueError(f"{origin}: {duplicates[0]}")
    return _table_from_yaml(data, origin)
