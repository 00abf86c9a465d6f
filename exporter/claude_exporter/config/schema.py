"""The configuration schema's tables and value checks, shared by ``config.py``, the rule generator and docs.

Every check appends ``"<key path>: <message>"`` to a :class:`Problems` list and returns the checked value,
or ``None`` when the value is bad, so one pass over a file reports every problem at once.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from claude_exporter.families import METRIC_GROUPS

__all__ = [
    "ALERT_DEFAULTS",
    "ALERT_KEY_KINDS",
    "ALERT_NAMES",
    "ALERT_THRESHOLD_KEYS",
    "LIMITS",
    "MAX_CONFIG_BYTES",
    "METRIC_NAMES",
    "PRICE_COLUMNS",
    "SEASONALITIES",
    "Limit",
    "Problems",
    "duration_seconds",
    "label_problem",
    "limits_table",
    "render",
]

# The names the ``metrics:`` list takes, from the family declarations.
METRIC_NAMES: tuple[str, ...] = METRIC_GROUPS

# The adaptive band of an agent's signal (alerting-rules/RUNBOOK.md, "Adaptive bands"), shared by the alerts
# that judge a signal against it: the band is the signal's mean over ``baseline_window`` plus or minus
# ``sensitivity`` standard deviations (at least ``floor_percent`` of the mean), widened where the same hour
# yesterday or last week (``seasonality``) was higher; it exists once the signal has ``min_history`` of
# windows with at least ``min_executions`` executions.
SEASONALITIES: tuple[str, ...] = ("daily_weekly", "daily", "weekly", "none")
_BAND: Mapping[str, object] = MappingProxyType(
    {
        "baseline_window": "1d",
        "min_executions": 5,
        "sensitivity": 3,
        "seasonality": "daily_weekly",
        "min_history": "6h",
        "floor_percent": 10,
    }
)

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
                **_BAND,
            },
            "error_rate": {
                "enabled": True,
                "severity": "high",
                "for": "10m",
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
                **_BAND,
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
            # A spend limit stops every request until a person acts: page on the first failure.
            "spend_limit": {
                "enabled": True,
                "severity": "high",
                "for": "0s",
                "threshold_errors": 1,
                "window": "10m",
            },
            # The cost signature of a broken cache prefix: hit ratio down against its baseline, writes up.
            "cache_hit_drop": {
                "enabled": True,
                "severity": "medium",
                "for": "10m",
                "threshold_drop_percent": 50,
                "window": "15m",
                "baseline_window": "2h",
                "min_requests": 10,
                "min_baseline_percent": 20,
            },
            "anomaly": {
                "enabled": True,
                "severity": "medium",
                "for": "15m",
                "threshold_change_percent": 25,
                "window": "10m",
                **_BAND,
            },
            "slow_creep": {
                "enabled": True,
                "severity": "medium",
                "for": "30m",
                "threshold_change_percent": 15,
                "window": "6h",
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
# "positive" (number > 0), "percent" (0 < number <= 100), "count" (integer >= 0), "seasonality" (one of
# SEASONALITIES).
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
        "threshold_errors": "positive",
        "threshold_drop_percent": "percent",
        "min_baseline_percent": "percent",
        "threshold_percent": "percent",
        "remaining_percent": "percent",
        "min_executions": "count",
        "min_requests": "count",
        "min_blocks": "count",
        "sensitivity": "positive",
        "seasonality": "seasonality",
        "min_history": "window",
        "floor_percent": "percent",
    }
)

# Pricing columns, USD per million tokens, as in pricing.yaml.
PRICE_COLUMNS: tuple[str, ...] = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
# The price list's caching multipliers of the base input price, for cache columns an override leaves out.
CACHE_MULTIPLIERS: Mapping[str, float] = MappingProxyType(
    {"cache_write_5m": 1.25, "cache_write_1h": 2.0, "cache_read": 0.1}
)


@dataclass(frozen=True)
class Limit:
    """The accepted range of one key. ``kind``: number, integer, duration (bounds in seconds), or label (a
    label-safe string, bounds in characters). ``low_open``: ``low`` itself is refused."""

    kind: str
    low: float
    high: float
    low_open: bool = False
    note: str = ""

    def accepts(self, value: float) -> bool:
        return (value > self.low if self.low_open else value >= self.low) and value <= self.high

    def describe(self) -> str:
        def num(x: float) -> str:
            if self.kind == "duration":
                return _show_duration(x)
            return f"{int(x)}" if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"

        if self.kind == "label":
            return f"a string of {num(self.low)} to {num(self.high)} characters, no control characters"
        what = {"number": "a number", "integer": "an integer", "duration": DURATION_HINT + ","}[self.kind]
        low = f"above {num(self.low)}" if self.low_open else f"from {num(self.low)}"
        joiner = " and at most " if self.low_open else " to "
        return f"{what} {low}{joiner}{num(self.high)}"


_DAY = 86400.0
# Every bounded key, by its path (AGENT: an agent name, MODEL: a model name, [] any list item). Values past
# these bounds are mistakes, or would break something downstream (a 0 s bucket, an infinite price, a
# window that never forgets, PromQL that promtool refuses): each is a ConfigError naming its path.
LIMITS: Mapping[str, Limit] = MappingProxyType(
    {
        "monitoring.AGENT": Limit("label", 1, 128, note="the agent's name, a label value"),
        "monitoring.AGENT.sampling_rate": Limit("number", 0, 1),
        "monitoring.AGENT.retention_days": Limit("integer", 1, 3650),
        "monitoring.AGENT.code_tools[]": Limit("label", 1, 128, note="a tool name, a label value"),
        "monitoring.AGENT.alerts[].severity": Limit(
            "label", 1, 32, note="kept as written; deploy/alertmanager.yml routes any value"
        ),
        "monitoring.AGENT.alerts[].for": Limit("duration", 0, 365 * _DAY),
        "monitoring.AGENT.alerts[].window": Limit("duration", 0, 365 * _DAY, low_open=True),
        "monitoring.AGENT.alerts[].baseline_window": Limit("duration", 0, 365 * _DAY, low_open=True),
        "monitoring.AGENT.alerts[].threshold_ms": Limit("number", 1, 86_400_000, note="1 ms to one day"),
        "monitoring.AGENT.alerts[].threshold_change_percent": Limit("number", 0, 100_000, low_open=True),
        "monitoring.AGENT.alerts[].threshold_per_minute": Limit("number", 0, 1_000_000, low_open=True),
        "monitoring.AGENT.alerts[].threshold_usd_per_hour": Limit("number", 0, 1e9, low_open=True),
        "monitoring.AGENT.alerts[].threshold_errors": Limit("number", 0, 1e9, low_open=True),
        "monitoring.AGENT.alerts[].threshold_drop_percent": Limit("number", 0, 100, low_open=True),
        "monitoring.AGENT.alerts[].min_baseline_percent": Limit("number", 0, 100, low_open=True),
        "monitoring.AGENT.alerts[].threshold_percent": Limit("number", 0, 100, low_open=True),
        "monitoring.AGENT.alerts[].remaining_percent": Limit("number", 0, 100, low_open=True),
        "monitoring.AGENT.alerts[].min_executions": Limit("integer", 0, 1e9),
        "monitoring.AGENT.alerts[].min_requests": Limit("integer", 0, 1e9),
        "monitoring.AGENT.alerts[].min_blocks": Limit("integer", 0, 1e9),
        "monitoring.AGENT.alerts[].sensitivity": Limit(
            "number", 0, 100, low_open=True, note="standard deviations"
        ),
        "monitoring.AGENT.alerts[].min_history": Limit("duration", 0, 365 * _DAY, low_open=True),
        "monitoring.AGENT.alerts[].floor_percent": Limit("number", 0, 100, low_open=True),
        "exporter.default_agent": Limit("label", 1, 128),
        "exporter.server.port": Limit("integer", 0, 65535, note="0: any free port"),
        "exporter.label_caps.agent": Limit("integer", 1, 100_000),
        "exporter.label_caps.task": Limit("integer", 1, 100_000),
        "exporter.label_caps.model": Limit("integer", 1, 100_000),
        "exporter.label_caps.combinations": Limit("integer", 1, 1_000_000),
        "exporter.label_caps.length": Limit("integer", 16, 4096, note="characters a label value keeps"),
        "exporter.pricing_overrides.MODEL": Limit("label", 1, 128, note="a model name, a label value"),
        "exporter.pricing_overrides.MODEL.*": Limit("number", 0, 1_000_000, note="USD per million tokens"),
        "exporter.health.window_seconds": Limit("number", 1, _DAY),
        "exporter.rules.evaluation_interval": Limit("duration", 1, 3600),
        "exporter.rules.job": Limit("label", 1, 128),
        "exporter.otlp.default_agent": Limit("label", 1, 128),
        "exporter.otlp.code_tools[]": Limit("label", 1, 128, note="a tool name, a label value"),
        "exporter.otlp.turn_idle_seconds": Limit("number", 0, _DAY, low_open=True),
        "exporter.otlp.hook_join_seconds": Limit("number", 0, 3600, low_open=True),
        "exporter.otlp.memory": Limit("integer", 1000, 10_000_000, note="ids remembered, each"),
    }
)
# Which limit each alert key obeys.
ALERT_KEY_LIMITS: Mapping[str, str] = MappingProxyType(
    {
        key: f"monitoring.AGENT.alerts[].{key}"
        for key in ALERT_KEY_KINDS
        if key not in ("enabled", "seasonality")
    }
)

MAX_CONFIG_BYTES = 1 << 20


def limits_table() -> str:
    """The Markdown table of :data:`LIMITS`, for the docs (a test keeps the docs in step)."""
    rows = ["| key | accepts |", "|---|---|"]
    for key, limit in LIMITS.items():
        note = f" ({limit.note})" if limit.note else ""
        rows.append(f"| `{key}` | {limit.describe()}{note} |")
    return "\n".join(rows) + "\n"


def label_problem(value: str, high: int = 128) -> str | None:
    """What makes ``value`` unfit to be a label value (and a PromQL string), or ``None``."""
    if not value.strip():
        return "must not be empty or blank"
    if len(value) > high:
        return f"must be at most {high} characters, got {len(value)}"
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in value):
        return f"must not contain control characters or line breaks, got {render(value)}"
    return None


# At most 12 digits a part: a duration past that is refused by its range, not by float overflow.
_DURATION_RE = re.compile(r"^([0-9]{1,12}(ms|s|m|h|d|w|y))+$")
_DURATION_PART_RE = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_*-]+$")
DURATION_HINT = 'a duration like "30s", "5m" or "1h"'


def _show_duration(seconds: float) -> str:
    for unit in ("y", "d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration string such as ``"1h30m"``; ``ValueError`` if it is not one."""
    if not isinstance(text, str) or not _DURATION_RE.match(text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return float(sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART_RE.findall(text)))


def render(value: object) -> str:
    """A value as quoted in a problem line: JSON for YAML scalars and collections, repr otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of {len(str(value)) if value.bit_length() < 10_000 else 'thousands of'} digits"
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):  # e.g. non-string mapping keys nested in lists
        try:
            text = repr(value)
        except (ValueError, RecursionError):  # a huge integer deep inside
            text = f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."


def child(path: str, key: object) -> str:
    """The key path of ``key`` under ``path``; keys that are not plain words are quoted in brackets."""
    if isinstance(key, str) and _PLAIN_KEY_RE.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{render(key)}]"


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    # An int is always finite (math.isfinite of one past 1e308 raises OverflowError), and compares exactly.
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


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

    def limited(self, path: str, value: object, key: str) -> Any:
        """Check ``value`` against ``LIMITS[key]``: its type first (plain wording), then its range."""
        limit = LIMITS[key]
        good: Any
        if limit.kind == "label":
            good = self.string(path, value)
            if good is None:
                return None
            problem = label_problem(good, int(limit.high))
            if problem is not None:
                self.add(path, problem)
                return None
            return good
        amount: float | None = None
        if limit.kind == "number" and _is_number(value):
            amount = value  # type: ignore[assignment]
        elif limit.kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
            amount = value
        elif limit.kind == "duration" and isinstance(value, str) and _DURATION_RE.match(value):
            amount = duration_seconds(value)
        if amount is None or not limit.accepts(amount):
            self.add(path, f"must be {limit.describe()}, got {render(value)}")
            return None
        return value

    def alert_key(self, path: str, key: str, value: object) -> object:
        """Check one alert key by its kind in :data:`ALERT_KEY_KINDS` and its range in :data:`LIMITS`."""
        if ALERT_KEY_KINDS[key] == "bool":
            return self.boolean(path, value)
        if ALERT_KEY_KINDS[key] == "seasonality":
            return self.choice(path, value, SEASONALITIES)
        return self.limited(path, value, ALERT_KEY_LIMITS[key])
