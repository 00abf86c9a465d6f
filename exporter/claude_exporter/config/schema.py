"""The configuration schema's tables and value checks, shared by ``config.py``, the rule generator and docs.

Every check appends ``"<key path>: <message>"`` to a :class:`Problems` list and returns the checked value,
or ``None`` when the value is bad, so one pass over a file reports every problem at once.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import yaml

from claude_exporter.families import METRIC_GROUPS

__all__ = [
    "ALERT_DEFAULTS",
    "ALERT_KEY_KINDS",
    "ALERT_NAMES",
    "ALERT_THRESHOLD_KEYS",
    "METRIC_NAMES",
    "PRICE_COLUMNS",
    "Problems",
    "duration_seconds",
    "render",
]

# The names the ``metrics:`` list takes, from the family declarations.
METRIC_NAMES: tuple[str, ...] = METRIC_GROUPS

# Per-alert defaults: every key an alert entry accepts (besides ``name``) with its default value. The one
# key starting with ``threshold_`` is the alert's threshold; ``None`` means "no default" (cost_budget is off
# until a threshold is configured).
ALERT_DEFAULTS: Mapping[str, Mapping[str, object]] = MappingProxyType(
    {
        name: MappingProxyType(table)
        for name, table in {
            "execution_timeout": {"enabled": True, "severity": "high", "for": "0s", "threshold_ms": 30000},
            "token_spike": {
                "enabled": True,
                "severity": "medium",
                "for": "5m",
                "threshold_change_percent": 150,
                "window": "10m",
                "baseline_window": "1h",
                "min_executions": 5,
            },
            "error_rate": {
                "enabled": True,
                "severity": "high",
                "for": "5m",
                "threshold_percent": 5,
                "window": "5m",
                "min_requests": 10,
            },
            "latency_drift": {
                "enabled": True,
                "severity": "medium",
                "for": "10m",
                "threshold_change_percent": 50,
                "window": "10m",
                "baseline_window": "1h",
                "min_executions": 5,
            },
            "rate_limited": {
                "enabled": True,
                "severity": "medium",
                "for": "5m",
                "threshold_per_minute": 1,
                "remaining_percent": 10,
                "window": "5m",
            },
            "code_execution_failures": {
                "enabled": True,
                "severity": "medium",
                "for": "5m",
                "threshold_percent": 20,
                "window": "15m",
                "min_blocks": 5,
            },
            "truncated_responses": {
                "enabled": True,
                "severity": "medium",
                "for": "10m",
                "threshold_percent": 10,
                "window": "15m",
                "min_requests": 10,
            },
            "cost_budget": {
                "enabled": False,
                "severity": "high",
                "for": "15m",
                "threshold_usd_per_hour": None,
                "window": "1h",
            },
        }.items()
    }
)

ALERT_NAMES: tuple[str, ...] = tuple(ALERT_DEFAULTS)

ALERT_THRESHOLD_KEYS: Mapping[str, str] = MappingProxyType(
    {name: next(k for k in table if k.startswith("threshold_")) for name, table in ALERT_DEFAULTS.items()}
)

# How each alert key is checked: "bool", "severity", "duration" (0s allowed), "window" (positive duration),
# "positive" (number > 0), "percent" (0 < number <= 100), "count" (integer >= 0).
ALERT_KEY_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "enabled": "bool",
        "severity": "severity",
        "for": "duration",
        "window": "window",
        "baseline_window": "window",
        "threshold_ms": "positive",
        "threshold_change_percent": "positive",
        "threshold_per_minute": "positive",
        "threshold_usd_per_hour": "positive",
        "threshold_percent": "percent",
        "remaining_percent": "percent",
        "min_executions": "count",
        "min_requests": "count",
        "min_blocks": "count",
    }
)

# Pricing columns, USD per million tokens, as in pricing.yaml.
PRICE_COLUMNS: tuple[str, ...] = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
# The price list's caching multipliers of the base input price, for cache columns an override leaves out.
CACHE_MULTIPLIERS: Mapping[str, float] = MappingProxyType(
    {"cache_write_5m": 1.25, "cache_write_1h": 2.0, "cache_read": 0.1}
)

_DURATION_RE = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
_DURATION_PART_RE = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_*-]+$")
DURATION_HINT = 'a duration like "30s", "5m" or "1h"'


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration string such as ``"1h30m"``; ``ValueError`` if it is not one."""
    if not isinstance(text, str) or not _DURATION_RE.match(text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return float(sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART_RE.findall(text)))


def render(value: object) -> str:
    """A value as quoted in a problem line: JSON for YAML scalars and collections, repr otherwise."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):  # e.g. non-string mapping keys nested in lists
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def child(path: str, key: object) -> str:
    """The key path of ``key`` under ``path``; keys that are not plain words are quoted in brackets."""
    if isinstance(key, str) and _PLAIN_KEY_RE.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{render(key)}]"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Problems:
    """Collects problem lines and checks values, each check returning the value or ``None`` when bad."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{path}: {message}")

    def _check(self, path: str, value: Any, ok: bool, expected: str) -> Any:
        if ok:
            return value
        self.add(path, f"must be {expected}, got {render(value)}")
        return None

    def fields(
        self, path: str, value: object, valid: Iterable[str], *, what: str = "", allow_none: bool = False
    ) -> dict[str, tuple[str, Any]] | None:
        """Check a mapping and its keys; return ``{key: (key path, value)}`` for its valid keys."""
        if value is None and allow_none:
            return {}
        if not isinstance(value, Mapping):
            self.add(path, f"must be a mapping, got {render(value)}")
            return None
        valid = tuple(valid)
        out: dict[str, tuple[str, Any]] = {}
        for key, item in value.items():
            if key in valid:
                out[key] = (child(path, key), item)
            else:
                self.add(child(path, key), f"unknown key{what}; valid keys: {', '.join(sorted(valid))}")
        return out

    def boolean(self, path: str, value: object) -> bool | None:
        return self._check(path, value, isinstance(value, bool), "true or false")  # type: ignore[no-any-return]

    def string(self, path: str, value: object) -> str | None:
        ok = isinstance(value, str) and value.strip() != ""
        return self._check(path, value, ok, "a non-empty string")  # type: ignore[no-any-return]

    def optional_string(self, path: str, value: object) -> tuple[bool, str | None]:
        """``(ok, value)``: a non-empty string or null."""
        if value is None:
            return True, None
        ok = isinstance(value, str) and value.strip() != ""
        return ok, self._check(path, value, ok, "a non-empty string or null")

    def choice(self, path: str, value: object, choices: Iterable[str]) -> str | None:
        choices = tuple(choices)
        ok = isinstance(value, str) and value in choices
        return self._check(path, value, ok, f"one of {', '.join(choices)}")  # type: ignore[no-any-return]

    def number(self, path: str, value: object, *, high: float = math.inf, zero: bool = False) -> float | None:
        """A finite number (never a bool) above 0 (or from 0 with ``zero``) and at most ``high``."""
        if _is_number(value) and (value >= 0 if zero else value > 0) and value <= high:  # type: ignore[operator]
            return value  # type: ignore[return-value]
        if math.isinf(high):
            expected = "a non-negative number" if zero else "a positive number"
        else:
            expected = f"a number from 0 to {high:g}" if zero else f"a number above 0 and at most {high:g}"
        return self._check(path, value, False, expected)  # type: ignore[no-any-return]

    def integer(self, path: str, value: object, *, low: int = 1, high: int | None = None) -> int | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
        ok = ok and (high is None or value <= high)  # type: ignore[operator]
        if high is not None:
            expected = f"an integer from {low} to {high}"
        else:
            names = {1: "a positive integer", 0: "a non-negative integer"}
            expected = names.get(low, f"an integer of at least {low}")
        return self._check(path, value, ok, expected)  # type: ignore[no-any-return]

    def duration(self, path: str, value: object, *, positive: bool = False) -> str | None:
        ok = isinstance(value, str) and _DURATION_RE.match(value) is not None
        if ok and positive and duration_seconds(value) <= 0:  # type: ignore[arg-type]
            ok = False
        expected = f"a positive {DURATION_HINT[2:]}" if positive else DURATION_HINT
        return self._check(path, value, ok, expected)  # type: ignore[no-any-return]

    def string_list(self, path: str, value: object, check: Callable[[str, object], str | None]) -> list[str]:
        """A list whose items pass ``check``; the good items in order."""
        if not isinstance(value, list):
            self.add(path, f"must be a list, got {render(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            good = check(f"{path}[{i}]", item)
            if good is not None:
                out.append(good)
        return out

    def alert_key(self, path: str, key: str, value: object) -> object:
        """Check one alert key by its kind in :data:`ALERT_KEY_KINDS`."""
        kind = ALERT_KEY_KINDS[key]
        if kind == "bool":
            return self.boolean(path, value)
        if kind == "severity":
            return self.string(path, value)
        if kind in ("duration", "window"):
            return self.duration(path, value, positive=kind == "window")
        if kind == "percent":
            return self.number(path, value, high=100)
        if kind == "count":
            return self.integer(path, value, low=0)
        return self.number(path, value)


class _Loader(yaml.SafeLoader):
    """The safe loader, noting keys given twice in one mapping (PyYAML silently keeps the last)."""

    def __init__(self, stream: Any, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.duplicates: list[tuple[int, str]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                self.duplicates.append(
                    (
                        line,
                        f"{self.source}:{line}: duplicate key {render(key)} (first on line {seen[key]})",
                    )
                )
            else:
                seen[key] = line
        return super().construct_mapping(node, deep)


def parse_yaml(text: bytes, source: str) -> tuple[object, list[str]]:
    """Parse YAML; return the document and duplicate-key problems. Raises ``yaml.YAMLError``."""
    loader = _Loader(text, source)
    try:
        data = loader.get_single_data()
        return data, [problem for _, problem in sorted(loader.duplicates)]
    finally:
        loader.dispose()


def yaml_error_line(err: yaml.YAMLError, source: str) -> str:
    """A YAML syntax error as ``file:line:column: invalid YAML: problem``."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        what = "; ".join(str(p) for p in (err.context, err.problem) if p)
        return f"{where}: invalid YAML: {what}"
    if isinstance(err, yaml.reader.ReaderError):
        return f"{source}: invalid YAML: {err.reason} at byte {err.position}"
    return f"{source}: invalid YAML: {err}"
