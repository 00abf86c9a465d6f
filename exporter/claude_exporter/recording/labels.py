"""What a request resolves once per (agent, model), and the one way a finished request is recorded.

:meth:`RequestLabels.record` is used by every source: the SDK seams (through
:class:`~claude_exporter.recording.call.Call`), ``/v1/events`` and ``--tail``, and Claude Code's OTLP
events, so each reaches the same families.

The open-ended labels (stop_reason, error_type, error_code, reason, tool, cache-miss reason, refusal
category) cost a dict lookup when the series has seen the value. A value never seen goes through the
admission once (:class:`~claude_exporter.recording.cardinality.Admission`); past its family's budget
the combination is recorded under the ``(__overflow__, __overflow__)`` series.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from claude_exporter.recording.cardinality import OVERFLOW, Admission
from claude_exporter.recording.usage import Usage

if TYPE_CHECKING:
    from claude_exporter.recording.recorder import Recorder

__all__ = ["OTHER_TIER", "TIERS", "RequestLabels", "tier_of"]


def tier_of(usage: Usage) -> str:
    """The ``tier`` label of a request's cost: its ``usage.service_tier`` (absent: ``standard``, as it is
    billed), or ``__other__`` for a value the price list does not name."""
    tier = usage.service_tier
    if tier is None:
        return "standard"
    return tier if tier in TIERS else OTHER_TIER


# The service tiers the price list names; any other value of usage.service_tier is one bounded bucket.
TIERS = frozenset({"standard", "priority", "batch"})
OTHER_TIER = "__other__"
_STOPS = ("stop_reason",)
_ERRORS = ("error_type", "error_code")
_RETRIES = ("reason", "error_code")
_CODE = ("tool", "outcome")


class RequestLabels:
    """The resolved labels of one (agent, model), its price, and the policy for its open-ended labels."""

    __slots__ = (
        "_admission",
        "_default_exec",
        "_rec",
        "agent",
        "code_tools",
        "model",
        "price",
        "series",
        "unpriced_reason",
    )

    def __init__(
        self,
        rec: Recorder,
        series: Any,
        price: Any,
        code_tools: frozenset[str],
        unpriced_reason: str = "model",
    ) -> None:
        self._rec = rec
        self._admission: Admission = rec.admission
        self.series = series
        self.agent: str = series.agent
        self.model: str = series.model
        self._default_exec: Any = None
        self.price = price  # None: unpriced, or a folded model priced per request
        self.unpriced_reason = unpriced_reason  # why price is None: model, or platform (its own list)
        self.code_tools = code_tools  # client-side tools whose results count as code execution

    def default_exec(self) -> Any:
        """The (agent, "default") execution series, for requests made outside any execution; its series
        records them as that series' executions (``record(..., lone=True)``)."""
        found = self._default_exec
        if found is None:
            found = self._rec.exec_labels(self.agent, "default")
            found.lone_from(self.series)
            self._default_exec = found
        return found

    # -- the one way a finished request is recorded -----------------------------------------------------

    def record(
        self,
        ok: bool,
        seconds: float,
        usage: Usage | None,
        stop_reason: str | None = None,
        error: tuple[str, str] | None = None,
        blocks: Sequence[tuple[str, str]] = (),
        raw_model: str = "",
        cost: float | None = None,
        lone: bool = False,
    ) -> tuple[float, int]:
        """Record one finished request: priced from ``usage`` (unless the source gives its own ``cost``),
        every family it touches updated under its series' one lock, then what the response said beside
        its usage. Returns its cost and its duration bucket (a lone request's execution reuses both).
        ``raw_model``: the model the request named, which prices it when the label folded it. ``lone``: a
        request outside any execution, whose execution of its own is recorded with it (nothing listens
        for executions; :meth:`default_exec` must have been called)."""
        if usage is None:
            cost = savings = 0.0
            tier = None
        else:
            if cost is None:
                cost, savings = self._price(usage, raw_model)
            else:
                savings = 0.0
            tier = tier_of(usage)
        series = self.series
        if (
            (stop_reason is not None and stop_reason not in series.stops)
            or (error is not None and error not in series.errors)
            or (blocks and any(key not in series.code for key in blocks))
        ):
            stop_reason, error, blocks = self._admit_new(stop_reason, error, blocks)
        bucket: int = series.finish(ok, seconds, usage, cost, savings, stop_reason, error, blocks, lone, tier)
        if usage is not None and (usage.cache_miss is not None or usage.refusal is not None):
            self._response_facts(usage.cache_miss, usage.cache_missed, usage.refusal)
        return cost, bucket

    def _price(self, usage: Usage, raw_model: str) -> tuple[float, float]:
        """The request's cost and cache savings; what cannot be priced (a model missing from the table, a
        platform billing on its own list, a mode without figures) is counted as unpriced tokens with its
        reason. With ``usage.iterations`` the request is billed as the sum of its iterations, compaction
        included (the top-level counts leave compaction out), so ``usage``'s counts become those sums
        before the tokens are recorded."""
        price = self.price
        rec = self._rec
        served = usage.model
        if self.unpriced_reason != "model":
            pass  # a platform billing on its own list: unpriced whatever model answered
        elif served is not None and served not in (raw_model, self.model):
            # The model that answered bills the request (an alias resolved, a fallback served it); a
            # name the table cannot price keeps the requested model's price.
            found = rec.price_lookup(served)
            if found is not None:
                price = found
            elif price is None and self.model == OVERFLOW:
                price = rec.price_lookup(raw_model)
        elif price is None and self.model == OVERFLOW:
            # A folded model holds many real ones: price each request by the model it named.
            price = rec.price_lookup(raw_model)
        priced = rec.cost(price, usage, rec.price_lookup)
        if priced.unpriced:
            rec.unpriced.inc((self.model, priced.reason or self.unpriced_reason), priced.unpriced)
        return priced.usd, priced.savings

    # -- what is reported apart from a finished request ------------------------------------------------

    def add_usage(self, usage: Usage, cost: float) -> None:
        """Tokens and cost reported apart from any request (Claude Code's usage metrics)."""
        self.series.add_usage(usage, cost, 0.0)

    def add_priced_usage(self, usage: Usage) -> float:
        """Tokens billed apart from any request this process made (a batch's results, read later): priced
        as a request is, into the token, cost, savings and tier families; returns the cost."""
        cost, savings = self._price(usage, usage.model or self.model)
        self.series.add_usage(usage, cost, savings, tier_of(usage))
        return cost

    def add_blocks(self, blocks: Sequence[tuple[str, str]]) -> None:
        """Code-block results reported apart from their request (Claude Code's tool results)."""
        for key in blocks:
            self._add("code", "code_blocks", _CODE, key)

    def refused(self, category: str) -> None:
        """A refusal reported apart from its request (Claude Code's ``api_refusal``): the ``refusal`` stop
        reason and its category, the request itself being counted by its own record."""
        self._add("stops", "stop_reasons", _STOPS, "refusal")
        self._response_facts(None, 0, category)

    def retry(self, reason: str, code: str = "none") -> None:
        """An attempt after the first, by what caused it."""
        self._add("retries", "retries", _RETRIES, (reason, code))

    def rate_limited(self, code: str) -> None:
        """A 429 attempt, by its error_code."""
        self._add("rate_limited", "rate_limited", ("error_code",), code)

    def ttft(self, seconds: float) -> None:
        """A streaming request's time to its first content delta."""
        self.series.add_ttft(seconds)

    def _add(self, field: str, family: str, labels: tuple[str, ...], key: Any) -> None:
        series = self.series
        if key not in getattr(series, field):
            key, admitted = self._admission.admit(family, labels, key, getattr(series, field))
            if not admitted:
                series = self._rec.overflow_series()
        series.add(field, key)

    def _response_facts(self, miss: str | None, missed_tokens: int, refusal: str | None) -> None:
        """A cache miss the API diagnosed and the category of a refusal (bounded by the SDK's values)."""
        series = self.series
        if miss is not None:
            target = series
            if miss not in series.misses:
                miss, admitted = self._admission.admit(
                    "cache_misses", ("cache_miss_reason",), miss, series.misses
                )
                if not admitted:
                    target = self._rec.overflow_series()
            target.add_cache_miss(miss, missed_tokens)
        if refusal is not None:
            self._add("refusals", "refusals", ("category",), refusal)

    def _admit_new(
        self, stop_reason: str | None, error: tuple[str, str] | None, blocks: Sequence[tuple[str, str]]
    ) -> tuple[str | None, tuple[str, str] | None, Sequence[tuple[str, str]]]:
        """Admit values this series has not seen; what a family's budget refuses goes to the overflow
        series instead of this request's."""
        series, admit = self.series, self._admission.admit
        if stop_reason is not None and stop_reason not in series.stops:
            stop_reason, admitted = admit("stop_reasons", _STOPS, stop_reason, series.stops)
            if not admitted:
                self._rec.overflow_series().add("stops", stop_reason)
                stop_reason = None
        if error is not None and error not in series.errors:
            error, admitted = admit("errors", _ERRORS, error, series.errors)
            if not admitted:
                self._rec.overflow_series().add("errors", error)
                error = None
        kept: list[tuple[str, str]] = []
        for block in blocks:
            key = block
            if key not in series.code:
                key, admitted = admit("code_blocks", _CODE, key, series.code)
                if not admitted:
                    self._rec.overflow_series().add("code", key)
                    continue
            kept.append(key)
        return stop_reason, error, kept
