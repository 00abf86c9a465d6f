"""``GET /health/claude-agent``: each agent's recent executions over a sliding window, with a status.

The window keeps per-agent, per-second buckets (count, errors, total and longest duration), so its memory
is bounded by the window length, not by the traffic. Status per agent, from that agent's own thresholds:

- ``unhealthy``: error rate over its ``error_rate`` threshold, average execution time over its
  ``execution_timeout``, or an execution still running past that timeout (a hung agent);
- ``degraded``: an execution in the window finished over the timeout, or the error rate is over half
  its threshold;
- ``healthy`` otherwise. The top-level status is the worst agent's.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from .config import Config
from .recorder import ExecutionRecord, Recorder

__all__ = ["HealthWindow", "health_listener", "health_route"]

_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}


class _Bucket:
    __slots__ = ("count", "errors", "longest_ms", "second", "total_ms")

    def __init__(self, second: int) -> None:
        self.second = second
        self.count = 0
        self.errors = 0
        self.total_ms = 0.0
        self.longest_ms = 0.0


class HealthWindow:
    """Executions of the last ``window_seconds``, per agent."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.window = int(config.health_window_seconds)
        self._clock = clock
        self._agents: dict[str, deque[_Bucket]] = {}
        self._lock = threading.Lock()

    def add(self, record: ExecutionRecord) -> None:
        second = int(self._clock())
        ms = record.seconds * 1000.0
        with self._lock:
            buckets = self._agents.get(record.agent)
            if buckets is None:
                buckets = self._agents[record.agent] = deque()
            if not buckets or buckets[-1].second != second:
                buckets.append(_Bucket(second))
                while buckets[0].second <= second - self.window:
                    buckets.popleft()
            bucket = buckets[-1]
            bucket.count += 1
            bucket.errors += 0 if record.ok else 1
            bucket.total_ms += ms
            bucket.longest_ms = max(bucket.longest_ms, ms)

    def report(self, running_ms: dict[str, float] | None = None) -> dict[str, Any]:
        """The endpoint's JSON: overall figures under ``metrics``, per-agent figures under ``agents``."""
        now = self._clock()
        horizon = int(now) - self.window
        running_ms = running_ms or {}
        with self._lock:
            windows = {
                agent: [(b.count, b.errors, b.total_ms, b.longest_ms) for b in buckets if b.second > horizon]
                for agent, buckets in self._agents.items()
            }
        agents = {
            agent: self._agent_figures(agent, rows, running_ms.get(agent, 0.0))
            for agent, rows in sorted(windows.items())
        }
        for agent in sorted(set(running_ms) - set(agents)):
            agents[agent] = self._agent_figures(agent, [], running_ms[agent])
        total = _figures(row for rows in windows.values() for row in rows)
        status = max((a["status"] for a in agents.values()), key=_RANK.__getitem__, default="healthy")
        stamp = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        return {
            "status": status,
            "window_seconds": self.window,
            "metrics": {**total, "last_check": stamp},
            "agents": agents,
        }

    def _agent_figures(
        self, agent: str, rows: list[tuple[int, int, float, float]], running: float
    ) -> dict[str, Any]:
        figures = _figures(rows)
        settings = self.config.agent(agent)
        timeout_s = settings.execution_timeout_seconds
        timeout_ms = None if timeout_s is None else timeout_s * 1000.0
        error_alert = settings.alert("error_rate")
        error_limit = error_alert.threshold if error_alert.enabled else None
        longest = max((row[3] for row in rows), default=0.0)
        status = "healthy"
        rate, avg = figures["error_rate_percent"], figures["avg_execution_ms"]
        if error_limit is not None and figures["executions"] and rate > error_limit / 2:
            status = "degraded"
        if timeout_ms is not None and longest > timeout_ms:
            status = "degraded"
        if (
            (error_limit is not None and figures["executions"] and rate > error_limit)
            or (timeout_ms is not None and avg is not None and avg > timeout_ms)
            or (timeout_ms is not None and running > timeout_ms)
        ):
            status = "unhealthy"
        return {**figures, "longest_running_ms": round(running, 1), "status": status}


def _figures(rows: Iterable[tuple[int, int, float, float]]) -> dict[str, Any]:
    count = errors = 0
    total = 0.0
    for n, e, ms, _ in rows:
        count += n
        errors += e
        total += ms
    return {
        "avg_execution_ms": round(total / count, 1) if count else None,
        "error_rate_percent": round(100.0 * errors / count, 2) if count else 0.0,
        "executions": count,
    }


def health_listener(window: HealthWindow) -> Callable[[Recorder], None]:
    def attach(rec: Recorder) -> None:
        rec.listeners.append(window.add)
        rec.health = window

    return attach


def health_route(get_recorder: Callable[[], Recorder | None]) -> Callable[..., list[bytes]]:
    """The WSGI route: the active recorder's window, with its running executions' ages."""

    def route(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        rec = get_recorder()
        window = getattr(rec, "health", None)
        if rec is None or window is None:
            body = json.dumps({"status": "unknown", "error": "not instrumented"}).encode()
            start_response("503 Service Unavailable", [("Content-Type", "application/json")])
            return [body]
        running = {agent: value * 1000.0 for (agent,), value in rec.gauge_longest_running()}
        body = json.dumps(window.report(running)).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return route
