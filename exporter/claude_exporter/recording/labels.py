"""What a request resolves once per (agent, model): its series, its price, and the cap policy for the
open-ended labels (stop_reason, error_type, reason, tool).

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
    )

    def __init__(self, rec: Recorder, series: RequestSeries, price: Any, code_tools: frozenset[str]) -> None:
        self._rec = rec
        self.series = series
        self.agent = series.agent
        self.model = series.model
        self._caps: dict[str, LabelCap] = rec.caps
        self._budgets: dict[str, Budget] = rec.budgets
        self._default_exec: ExecSeries | None = None
        self.price = price  # None: unpriced, or a folded model priced per request
        self.code_tools = code_tools  # client-side tools whose results count as code execution

    def default_exec(self) -> ExecSeries:
        """The (agent, "default") execution series, for requests made outside any execution."""
        found = self._default_exec
        if found is None:
            found = self._default_exec = self._rec.exec_labels(self.agent, "default")
        return found

    def cost(self, usage: Usage, raw_model: str) -> float:
        """The request's cost; a model missing from the price table counts its tokens as unpriced."""
        price = self.price
        if price is None and self.model == OVERFLOW:
            # A folded model holds many real ones: price each request by the model it named.
            price = self._rec.price_lookup(raw_model)
        if price is not None:
            return self._rec.cost(price, usage)
        total = usage.all_input + usage.output
        if total:
            self._rec.unpriced.inc((self.model,), total)
        return 0.0

    def finish(
        self,
        ok: bool,
        seconds: float,
        usage: Usage | None,
        cost: float,
        stop_reason: str | None,
        error_type: str | None,
        blocks: Sequence[tuple[str, str]],
    ) -> None:
        series = self.series
        if (
            (stop_reason is not None and stop_reason not in series.stops)
            or (error_type is not None and error_type not in series.errors)
            or (blocks and any(key not in series.code for key in blocks))
        ):
            stop_reason, error_type, blocks = self._admit_new(stop_reason, error_type, blocks)
        series.finish(ok, seconds, usage, cost, stop_reason, error_type, blocks)

    def add_blocks(self, blocks: Sequence[tuple[str, str]]) -> None:
        """Code-block results reported apart from their request (Claude Code's tool results)."""
        series = self.series
        if any(key not in series.code for key in blocks):
            _, _, blocks = self._admit_new(None, None, blocks)
        if blocks:
            series.finish(True, 0.0, None, 0.0, None, None, blocks, count=False)

    def retry(self, reason: str) -> None:
        series = self.series
        if reason not in series.retries:
            reason = self._caps["reason"].fold(reason)
            if reason not in series.retries and not self._budgets["retries"].take():
                self._overflowed("retries").add_retry(reason)
                return
        series.add_retry(reason)

    def _admit_new(
        self, stop_reason: str | None, error_type: str | None, blocks: Sequence[tuple[str, str]]
    ) -> tuple[str | None, str | None, Sequence[tuple[str, str]]]:
        """Fold new values by their label caps; what the family budget refuses goes to the overflow series."""
        series = self.series
        if stop_reason is not None and stop_reason not in series.stops:
            stop_reason = self._caps["stop_reason"].fold(stop_reason)
            if stop_reason not in series.stops and not self._budgets["stop_reasons"].take():
                self._overflowed("stop_reasons").finish(
                    True, 0.0, None, 0.0, stop_reason, None, (), count=False
                )
                stop_reason = None
        if error_type is not None and error_type not in series.errors:
            error_type = self._caps["error_type"].fold(error_type)
            if error_type not in series.errors and not self._budgets["errors"].take():
                self._overflowed("errors").finish(False, 0.0, None, 0.0, None, error_type, (), count=False)
                error_type = None
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
        return stop_reason, error_type, kept

    def _overflowed(self, family: str) -> RequestSeries:
        self._rec.count_overflow(FAMILY_NAMES[family])
        return self._rec.overflow_series()
