"""The series of the Claude-Code-only families, and which agents Claude Code feeds.

The families are declared in :mod:`claude_exporter.families` (``claude_code_*``); this keeps their
values: counters as plain floats under one lock, keyed by label values, and the tool-duration histograms.
Label values arrive already capped (agent, tool) or from fixed sets (types, decisions, outcomes), and each
family takes at most the recorder's combination budget of label sets, so it stays bounded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from claude_exporter.families import DURATION_BUCKETS, FAMILIES
from claude_exporter.recording.storage.memory import Histogram

__all__ = ["AGENT_INFO", "COUNTERS", "TOOL_DURATION", "ClaudeCodeStore", "Snapshot"]

COUNTERS: tuple[str, ...] = tuple(
    f.name
    for f in FAMILIES
    if f.name.startswith("claude_code_") and f.type == "counter" and "blocks" not in f.name
)
TOOL_DURATION = "claude_code_tool_duration_seconds"
AGENT_INFO = "claude_agent_info"

Snapshot = tuple[dict[str, dict[tuple[str, ...], float]], list[tuple[tuple[str, str], list[int], float]]]


class ClaudeCodeStore:
    """Counter values and tool-duration histograms of the Claude-Code-only families."""

    def __init__(self, budget: Callable[[str], bool]) -> None:
        self._lock = threading.Lock()
        self._take = budget  # one more label combination for this family? (the recorder's cap)
        self.counters: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in COUNTERS}
        self.durations: dict[tuple[str, str], Histogram] = {}
        self._agents: set[str] = set()  # agents fed by Claude Code

    def add_agent(self, agent: str) -> None:
        if agent not in self._agents:
            with self._lock:
                self._agents.add(agent)

    @property
    def agents(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._agents)

    def add(self, family: str, labels: tuple[str, ...], amount: float) -> None:
        series = self.counters[family]
        with self._lock:
            if labels not in series:
                if not self._take(family):
                    return
                series[labels] = 0.0
            series[labels] += amount

    def observe_tool(self, agent: str, tool: str, seconds: float) -> None:
        key = (agent, tool)
        with self._lock:
            found = self.durations.get(key)
            if found is None:
                if not self._take(TOOL_DURATION):
                    return
                found = self.durations[key] = Histogram(DURATION_BUCKETS)
            found.observe(seconds)

    def snapshot(self) -> Snapshot:
        with self._lock:
            counters = {name: dict(series) for name, series in self.counters.items()}
            durations = [(key, *hist.snapshot()) for key, hist in self.durations.items()]
        return counters, durations
