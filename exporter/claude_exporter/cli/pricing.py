"""``claude-exporter pricing``: the price table the exporter will use, and what it lacks.

The table is the packaged ``pricing.yaml`` with the configuration's ``pricing_overrides`` applied, exactly
as ``instrument()`` builds it. The models the installed SDK knows come from its ``Model`` type (a union of
string literals), so a model released with a new SDK shows up here before its first request is priced
at $0 (``claude_exporter_unpriced_tokens_total`` counts those at run time).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, Union

from claude_exporter.recording.pricing import PRICE_FIELDS, ModelPrice, PriceTable

__all__ = ["missing_models", "render", "sdk_models"]


def _literals(tp: Any) -> list[str]:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return [v for v in typing.get_args(tp) if isinstance(v, str)]
    if origin is Union or origin is types.UnionType:
        return [v for arg in typing.get_args(tp) for v in _literals(arg)]
    return []


def sdk_models() -> list[str]:
    """Every model id the installed ``anthropic`` SDK names in its ``Model`` type, in its order."""
    import anthropic.types

    seen: dict[str, None] = {}
    for name in _literals(anthropic.types.Model):
        seen.setdefault(name, None)
    return list(seen)


def missing_models(table: PriceTable, models: Iterable[str]) -> list[str]:
    """The models ``table`` cannot price (it resolves aliases and dated snapshots as at run time)."""
    return [m for m in models if table.lookup(m) is None]


def _money(value: float | None) -> str:
    if value is None:
        return "-"
    text = f"{value:.3f}"
    return text[:-1] if text.endswith("0") else text  # 8.00, 0.20, 0.125


def _row(table: PriceTable, model: str, price: ModelPrice) -> list[str]:
    fast = f"{_money(price.fast_input)}/{_money(price.fast_output)}" if price.fast_input is not None else "-"
    long = (
        f">{price.long_context_threshold:,}: {_money(price.long_context_input)}/"
        f"{_money(price.long_context_output)}"
        if price.long_context_threshold is not None
        else "-"
    )
    geo = "yes" if price.geo_eligible else "-"
    estimated = (
        ",".join(_short(name) for name in sorted(price.estimated, key=lambda n: _ORDER.get(n, len(_ORDER))))
        or "-"
    )
    cite = "config override" if model in table.overridden else table.cites.get(model, "?")
    return [
        model,
        _money(price.input),
        _money(price.output),
        _money(price.cache_write_5m),
        _money(price.cache_write_1h),
        _money(price.cache_read),
        fast,
        long,
        geo,
        estimated,
        cite,
    ]


# The estimated figures in the row's column order, each by its column's short name.
_ORDER = {
    name: i
    for i, name in enumerate(
        [
            "input", "output", "cache_write_5m", "cache_write_1h", "cache_read", "fast.input", "fast.output",
            *(f"long_context.{field}" for field in ("threshold", *PRICE_FIELDS)),
        ]
    )
}  # fmt: skip
_SHORT = {"cache_write_5m": "5m", "cache_write_1h": "1h", "cache_read": "read", "fast.input": "fast in",
          "fast.output": "fast out"}  # fmt: skip


def _short(name: str) -> str:
    return _SHORT.get(name, name).replace(" ", "-")


_HEAD = [
    "model",
    "input",
    "output",
    "5m write",
    "1h write",
    "cache read",
    "fast in/out",
    "long context",
    "geo",
    "estimated",
    "cite",
]


def render(table: PriceTable, sdk: list[str], sdk_version: str, config_name: str | None = None) -> str:
    """The report ``claude-exporter pricing`` prints."""
    m = table.modifiers
    lines = [
        f"Price table as of {table.as_of} ({table.source})",
        "USD per million tokens; aliases and dated snapshots resolve to the rows below.",
        "Column estimated: the row's figures no official price list prints (see pricing.yaml's sources).",
    ]
    if table.overridden:
        where = f" from {config_name}" if config_name else ""
        lines.append(f"Overrides{where}: {', '.join(sorted(table.overridden))}")
    rows = [_HEAD] + [_row(table, name, table.price(name)) for name in table.models()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEAD))]
    lines.append("")
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    geo = ", ".join(f"{k} x{v:g}" for k, v in sorted(m.geo_multipliers.items()))
    cites = table.cites
    lines += [
        "",
        "Modifiers:",
        f"  batch tier         x{table.price(table.models()[0]).batch_multiplier:g} on tokens"
        f"  ({cites.get('modifiers.batch', '?')})",
        f"  priority tier      x{m.priority_multiplier:g}  ({cites.get('modifiers.priority', '?')})",
        f"  inference geo      {geo}, on the rows marked geo  ({cites.get('modifiers.inference_geo', '?')})",
        f"  web search         ${m.web_search_fee:g} per request"
        f"  ({cites.get('modifiers.server_tools.web_search', '?')})",
        f"  web fetch          ${m.web_fetch_fee:g} per request"
        f"  ({cites.get('modifiers.server_tools.web_fetch', '?')})",
        "  code execution     container time, not reported per response: not estimated",
        f"  unpriced platforms {', '.join(sorted(m.unpriced_platforms)) or 'none'} (their own price lists)",
        "",
    ]
    missing = missing_models(table, sdk)
    if missing:
        lines.append(
            f"Models the installed anthropic SDK {sdk_version} knows that the table lacks ({len(missing)}):"
        )
        lines += [f"  {name}" for name in missing]
        lines.append("Their tokens are counted in claude_exporter_unpriced_tokens_total; add them under")
        lines.append("exporter.pricing_overrides to price them.")
    else:
        lines.append(f"Every model the installed anthropic SDK {sdk_version} knows ({len(sdk)}) is priced.")
    return "\n".join(lines) + "\n"
