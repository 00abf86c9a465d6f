"""The Claude-Code-only families, and which source each agent's data came from.

Counters are plain floats under one lock, keyed by their label values; they are exposed at scrape time by
:mod:`claude_exporter.exposition.claude_code_collector`. Label values come already capped from the
recorder (agent, tool) or from fixed sets (types, decisions, outcomes), and each family has the
recorder's combination budget, so a family holds a bounded number of series.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from claude_exporter.exposition.collectors import DURATION_BUCKETS
from claude_exporter.recording.series import Histogram

__all__ = ["AGENT_INFO", "CC_FAMILIES", "SOURCES", "TOOL_DURATION", "ClaudeCodeStore", "Family", "Snapshot"]

SOURCES = ("sdk", "claude_code")


@dataclass(frozen=True)
class Family:
    name: str  # without _total
    help: str
    labels: tuple[str, ...]


CC_FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("claude_code_sessions", "Claude Code sessions started.", ("agent",)),
        Family(
            "claude_code_tool_results",
            "Claude Code tool results by tool and outcome (success, failure).",
            ("agent", "tool", "outcome"),
        ),
        Family("claude_code_lines_of_code", "Lines of code Claude Code added or removed.", ("agent", "type")),
        Family("claude_code_commits", "Git commits Claude Code made.", ("agent",)),
        Family("claude_code_pull_requests", "Pull requests Claude Code opened.", ("agent",)),
        Family(
            "claude_code_active_time_seconds",
            "Time Claude Code was actively used (type user) or working (type cli).",
            ("agent", "type"),
        ),
        Family(
            "claude_code_edit_decisions",
            "Edit-tool permission decisions (accept, reject) by tool.",
            ("agent", "tool", "decision"),
        ),
    )
}
TOOL_DURATION = Family(
    "claude_code_tool_duration_seconds", "Claude Code tool run time, by tool.", ("agent", "tool")
)
AGENT_INFO = Family(
    "claude_agent_info",
    "Always 1: where each agent's data comes from (sdk, claude_code), for joins on agent.",
    ("agent", "source"),
)


Snapshot = tuple[dict[str, dict[tuple[str, ...], float]], list[tuple[tuple[str, str], list[int], float]]]


class ClaudeCodeStore:
    """Counter values and tool-duration histograms of the Claude-Code-only families."""

    def __init__(self, budget: Callable[[str], bool]) -> None:
        self._lock = threading.Lock()
        self._take = budget  # one more label combination for this family? (the recorder's cap)
        self.counters: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in CC_FAMILIES}
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
                if not self._take(TOOL_DURATION.name):
                    return
                found = self.durations[key] = Histogram(DURATION_BUCKETS)
            found.observe(seconds)

    def snapshot(
        self,
    ) -> tuple[dict[str, dict[tuple[str, ...], float]], list[tuple[tuple[str, str], list[int], float]]]:
        with self._lock:
            counters = {name: dict(series) for name, series in self.counters.items()}
            durations = [(key, *hist.snapshot()) for key, hist in self.durations.items()]
        return counters, durations
