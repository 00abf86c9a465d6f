"""``GET /health/claude-agent``: each agent's recent executions over a sliding window, with a status.

Nothing is added to the request path: a ticker snapshots each agent's cumulative execution series once a
second, and a report subtracts the snapshot taken one window ago from the live totals. The timeout check
is exact because every configured timeout is a bucket bound of the duration histogram.

Status per agent, from that agent's own thresholds:

- ``unhealthy``: error rate over its ``error_rate`` threshold (with at least its ``min_requests``
  executions in the window, as the alert rule asks), average execution time over its
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
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from claude_exporter.config import Config
from claude_exporter.recording.recorder import Recorder

__all__ = ["HealthWindow", "Totals", "health_route", "start_health"]

_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}
# Per agent: executions, errors, total seconds, executions over the agent's timeout.
Totals = dict[str, tuple[int, int, float, int]]


class HealthWindow:
    """Snapshots of per-agent execution totals, one per ``tick()``, kept for one window."""

    def __init__(self, config: Config, rec: Recorder, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.window = float(config.health_window_seconds)
        self._rec = self.rec = rec
        self._clock = clock
        self._snapshots: deque[tuple[float, Totals]] = deque()
        self._lock = threading.Lock()
        self._timeouts = {name: agent.execution_timeout_seconds for name, agent in config.agents.items()}
        self._default_timeout = config.defaults.execution_timeout_seconds

    def totals(self) -> Totals:
        """The live cumulative totals, summed over each agent's tasks."""
        out: dict[str, list[Any]] = {}
        for (agent, _), series in list(self._rec.exec_series.items()):
            timeout = self._timeouts.get(agent, self._default_timeout)
            snap = series.snapshot()
            counts, seconds = snap["duration"]
            over = 0
            if timeout is not None and timeout in series.duration.bounds:
                over = sum(counts[series.duration.bounds.index(timeout) + 1 :])
            row = out.setdefault(agent, [0, 0, 0.0, 0])
            row[0] += sum(snap["outcomes"])
            row[1] += snap["outcomes"][1]
            row[2] += seconds
            row[3] += over
        return {agent: (row[0], row[1], row[2], row[3]) for agent, row in out.items()}

    def seed(self, when: float) -> None:
        """Zero totals at ``when``: the state of a recorder that opened then, for a window started since."""
        with self._lock:
            self._snapshots.appendleft((when, {}))

    def tick(self) -> None:
        now = self._clock()
        totals = self.totals()
        with self._lock:
            self._snapshots.append((now, totals))
            # Keep the newest snapshot at or before the window's start, and everything after it.
            while len(self._snapshots) > 1 and self._snapshots[1][0] <= now - self.window:
                self._snapshots.popleft()

    def report(self, running_ms: dict[str, float] | None = None) -> dict[str, Any]:
        """The endpoint's JSON: overall figures under ``metrics``, per-agent figures under ``agents``."""
        now = self._clock()
        current = self.totals()
        with self._lock:
            base: Totals = self._snapshots[0][1] if self._snapshots else {}
        running_ms = running_ms or {}
        deltas = {agent: _minus(row, base.get(agent)) for agent, row in current.items()}
        agents = {
            agent: self._agent_figures(agent, deltas.get(agent, (0, 0, 0.0, 0)), running_ms.get(agent, 0.0))
            for agent in sorted(set(deltas) | set(running_ms))
        }
        total = _figures(tuple(map(sum, zip(*deltas.values(), strict=True))) if deltas else (0, 0, 0.0, 0))
        status = max((a["status"] for a in agents.values()), key=_RANK.__getitem__, default="healthy")
        stamp = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        return {
            "status": status,
            "window_seconds": self.window,
            "metrics": {**total, "last_check": stamp},
            "agents": agents,
        }

    def _agent_figures(self, agent: str, row: tuple[int, int, float, int], running: float) -> dict[str, Any]:
        figures = _figures(row)
        settings = self.config.agent(agent)
        timeout_s = settings.execution_timeout_seconds
        timeout_ms = None if timeout_s is None else timeout_s * 1000.0
        error_alert = settings.alert("error_rate")
        error_limit = error_alert.threshold if error_alert.enabled else None
        rate, avg, count = figures["error_rate_percent"], figures["avg_execution_ms"], figures["executions"]
        # As the alert rule does, judge the error rate only with enough executions to go on.
        enough = count > 0 and count >= float(error_alert.params.get("min_requests", 1))
        status = "healthy"
        if (error_limit is not None and enough and rate > error_limit / 2) or row[3] > 0:
            status = "degraded"
        if (
            (error_limit is not None and enough and rate > error_limit)
            or (timeout_ms is not None and avg is not None and avg > timeout_ms)
            or (timeout_ms is not None and running > timeout_ms)
        ):
            status = "unhealthy"
        return {**figures, "over_timeout": row[3], "longest_running_ms": round(running, 1), "status": status}


def _minus(
    row: tuple[int, int, float, int], base: tuple[int, int, float, int] | None
) -> tuple[int, int, float, int]:
    if base is None:
        return row
    return row[0] - base[0], row[1] - base[1], row[2] - base[2], row[3] - base[3]


def _figures(row: tuple[Any, ...]) -> dict[str, Any]:
    count, errors, seconds = row[0], row[1], row[2]
    return {
        "avg_execution_ms": round(1000.0 * seconds / count, 1) if count else None,
        "error_rate_percent": round(100.0 * errors / count, 2) if count else 0.0,
        "executions": count,
    }


def start_health(
    config: Config, rec: Recorder, interval: float = 1.0, since: float | None = None
) -> HealthWindow:
    """The health window of ``rec``'s executions, ticked from a daemon thread until ``rec`` closes.
    ``since``: when ``rec`` opened (Unix time), with nothing recorded yet, for a window started later."""
    window = HealthWindow(config, rec)
    if since is not None:
        window.seed(since)
    window.tick()
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            try:
                window.tick()
            except Exception:
                rec.fault("health_tick")

    thread = threading.Thread(target=run, name="claude-exporter-health", daemon=True)
    thread.start()

    def close() -> None:  # the thread is gone when close() returns
        stop.set()
        if thread is not threading.current_thread():
            thread.join(timeout=5)

    rec.on_close(close)
    return window


def health_route(get_window: Callable[[], HealthWindow | None]) -> Callable[..., list[bytes]]:
    """The WSGI route: the active window, with its recorder's running executions' ages."""

    def route(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        window = get_window()
        rec = None if window is None else window.rec
        if rec is None or window is None:
            body = json.dumps({"status": "unknown", "error": "not instrumented"}).encode()
            start_response("503 Service Unavailable", [("Content-Type", "application/json")])
            return [body]
        running = {agent: value * 1000.0 for (agent,), value in rec.gauge_longest_running()}
        body = json.dumps(window.report(running)).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return route
