"""What a request resolves once per (agent, model): its series, its price, its open labels' caps.

The open-ended labels: stop_reason, error_type, error_code, reason, tool, cache-miss reason, refusal
category.

The common case, a value this series has seen before, costs a dict lookup and then one locked update of
the series. A value never seen goes the slow way once: its label's cap, then its family's combination
budget; past the budget the combination is recorded under the ``(__overflow__, __overflow__)`` series.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from claude_exporter.recording.cardinality import FAMILY_NAMES, OVERFLOW, Budget, LabelCap
from claude_exporter.recording.series import ExecSeries, RequestSeries
from claude_exporter.recording.usage import Usage

if TYPE_CHECKING:
    from claude_exporter.recording.recorder import Recorder

__all__ = ["RequestLabels"]


class RequestLabels:
    """The resolved labels of one (agent, model) and the policy for its open-ended labels."""

    __slots__ = (
        "_budgets",
        "_caps",
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
        series: RequestSeries,
        price: Any,
        code_tools: frozenset[str],
        unpriced_reason: str = "model",
    ) -> None:
        self._rec = rec
        self.series = series
        self.agent = series.agent
        self.model = series.model
        self._caps: dict[str, LabelCap] = rec.caps
        self._budgets: dict[str, Budget] = rec.budgets
        self._default_exec: ExecSeries | None = None
        self.price = price  # None: unpriced, or a folded model priced per request
        self.unpriced_reason = unpriced_reason  # why price is None: model, or platform (its own list)
        self.code_tools = code_tools  # client-side tools whose results count as code execution

    def default_exec(self) -> ExecSeries:
        """The (agent, "default") execution series, for requests made outside any execution."""
        found = self._default_exec
        if found is None:
            found = self._default_exec = self._rec.exec_labels(self.agent, "default")
        return found

    def cost(self, usage: Usage, raw_model: str) -> float:
        """The request's cost from every field its usage bills on; what cannot be priced (a model missing
        from the table, a platform billing on its own list, a mode without figures) is counted as unpriced
        tokens with its reason. With ``usage.iterations`` the request is billed as the sum of its
        iterations, compaction included (the top-level counts leave compaction out), so ``usage``'s counts
        become those sums before the tokens are recorded."""
        price = self.price
        if price is None and self.model == OVERFLOW and self.unpriced_reason == "model":
            # A folded model holds many real ones: price each request by the model it named.
            price = self._rec.price_lookup(raw_model)
        rec = self._rec
        priced = rec.cost(price, usage, rec.price_lookup)
        if priced.unpriced:
            rec.unpriced.inc((self.model, priced.reason or self.unpriced_reason), priced.unpriced)
        if priced.savings:
            self.series.add_savings(priced.savings)
        return priced.usd

    def finish(
        self,
        ok: bool,
        seconds: float,
        usage: Usage | None,
        cost: float,
        stop_reason: str | None,
        error: tuple[str, str] | None,
        blocks: Sequence[tuple[str, str]],
    ) -> None:
        series = self.series
        if (
            (stop_reason is not None and stop_reason not in series.stops)
            or (error is not None and error not in series.errors)
            or (blocks and any(key not in series.code for key in blocks))
        ):
            stop_reason, error, blocks = self._admit_new(stop_reason, error, blocks)
        series.finish(ok, seconds, usage, cost, stop_reason, error, blocks)

    def add_blocks(self, blocks: Sequence[tuple[str, str]]) -> None:
        """Code-block results reported apart from their request (Claude Code's tool results)."""
        series = self.series
        if any(key not in series.code for key in blocks):
            _, _, blocks = self._admit_new(None, None, blocks)
        if blocks:
            series.finish(True, 0.0, None, 0.0, None, None, blocks, count=False)

    def retry(self, reason: str, code: str = "none") -> None:
        series = self.series
        key = (reason, code)
        if key not in series.retries:
            key = (self._caps["reason"].fold(reason), self._caps["error_code"].fold(code))
            if key not in series.retries and not self._budgets["retries"].take():
                self._overflowed("retries").add_retry(key)
                return
        series.add_retry(key)

    def rate_limited(self, code: str) -> None:
        """A 429 attempt, by its error_code."""
        series = self.series
        if code not in series.rate_limited:
            code = self._caps["error_code"].fold(code)
            if code not in series.rate_limited and not self._budgets["rate_limited"].take():
                self._overflowed("rate_limited").add_rate_limited(code)
                return
        series.add_rate_limited(code)

    def response_facts(self, miss: str | None, missed_tokens: int, refusal: str | None) -> None:
        """A cache miss the API diagnosed and the category of a refusal (bounded by the SDK's values)."""
        series = self.series
        if miss is not None:
            if miss not in series.misses:
                miss = self._caps["cache_miss_reason"].fold(miss)
                if miss not in series.misses and not self._budgets["cache_misses"].take():
                    self._overflowed("cache_misses").add_cache_miss(miss, missed_tokens)
                    miss = None
            if miss is not None:
                series.add_cache_miss(miss, missed_tokens)
        if refusal is not None:
            if refusal not in series.refusals:
                refusal = self._caps["category"].fold(refusal)
                if refusal not in series.refusals and not self._budgets["refusals"].take():
                    self._overflowed("refusals").add_refusal(refusal)
                    return
            series.add_refusal(refusal)

    def _admit_new(
        self, stop_reason: str | None, error: tuple[str, str] | None, blocks: Sequence[tuple[str, str]]
    ) -> tuple[str | None, tuple[str, str] | None, Sequence[tuple[str, str]]]:
        """Fold new values by their label caps; what the family budget refuses goes to the overflow series."""
        series = self.series
        if stop_reason is not None and stop_reason not in series.stops:
            stop_reason = self._caps["stop_reason"].fold(stop_reason)
            if stop_reason not in series.stops and not self._budgets["stop_reasons"].take():
                self._overflowed("stop_reasons").finish(
                    True, 0.0, None, 0.0, stop_reason, None, (), count=False
                )
                stop_reason = None
        if error is not None and error not in series.errors:
            error = (self._caps["error_type"].fold(error[0]), self._caps["error_code"].fold(error[1]))
            if error not in series.errors and not self._budgets["errors"].take():
                self._overflowed("errors").finish(False, 0.0, None, 0.0, None, error, (), count=False)
                error = None
        kept: list[tuple[str, str]] = []
        for tool, outcome in blocks:
            key = (tool, outcome)
            if key not in series.code:
                key = (self._caps["tool"].fold(tool), outcome)
                if key not in series.code and not self._budgets["code_blocks"].take():
                    self._overflowed("code_blocks").finish(
                        True, 0.0, None, 0.0, None, None, (key,), count=False
                    )
                    continue
            kept.append(key)
        return stop_reason, error, kept

    def _overflowed(self, family: str) -> RequestSeries:
        self._rec.count_overflow(FAMILY_NAMES[family])
        return self._rec.overflow_series()
