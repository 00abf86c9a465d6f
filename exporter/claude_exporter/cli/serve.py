"""``claude-exporter serve``: the standalone exporter, for agents that do not run in this Python process.

Agents in other languages (the seed's Node.js ``executeClaudeCode``), or anything that writes the event-log
lines, feed it by ``POST /v1/events`` or through a log file it follows (``--tail``). It serves the same
``/metrics``, ``/health/claude-agent`` and ``/-/healthy`` as an instrumented application, and stops cleanly
on SIGTERM (exit 0, a requested stop) or Ctrl-C (exit 130, as the shell reports an interrupted command).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any, TextIO

from prometheus_client import REGISTRY

from claude_exporter.config import Config, ConfigError
from claude_exporter.ingest.tail import POLL_INTERVAL, LogFollower
from claude_exporter.lifecycle import close_recorder, open_recorder, resolve_settings
from claude_exporter.recording.state import ACTIVE
from claude_exporter.server import MetricsServer, start_http_server

__all__ = ["serve"]

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def serve(
    config: Config,
    *,
    tails: Sequence[str] = (),
    tail_from_start: bool = False,
    port: int | None = None,
    addr: str | None = None,
    stop: threading.Event | None = None,
    out: TextIO | None = None,
    poll_interval: float = POLL_INTERVAL,
) -> int:
    """Serve until ``stop`` is set, SIGTERM or SIGINT; returns the exit status: 130 after SIGINT, else 0.

    ``port`` / ``addr`` override the configuration's ``exporter.server``; port 0 takes a free port (the
    first line printed names the URL). Raises OSError when the address cannot be bound.
    """
    out = sys.stdout if out is None else out
    stop = threading.Event() if stop is None else stop
    otlp = _otlp_available(config)
    # A recorder without the SDK: serve never patches (or imports) anthropic. An instrumented process
    # that calls serve() keeps its own recorder.
    opened = open_recorder(resolve_settings(config), REGISTRY) if ACTIVE.recorder is None else None
    if opened is not None:
        ACTIVE.opened, ACTIVE.recorder = opened, opened.recorder
    rec = ACTIVE.recorder
    assert rec is not None
    server: MetricsServer | None = None
    followers: list[LogFollower] = []
    previous: dict[int, Any] = {}
    stopped_by: list[int] = []  # the signal that stopped it, if one did
    try:
        server = start_http_server(
            config.server.port if port is None else port,
            config.server.address if addr is None else addr,
            config=config,
            otlp=otlp,
        )
        followers = [LogFollower(path, rec, from_start=tail_from_start) for path in tails]
        if threading.current_thread() is threading.main_thread():  # signal handlers can only go there

            def on_signal(signum: int, frame: FrameType | None) -> None:
                stopped_by.append(signum)
                stop.set()

            for signum in _STOP_SIGNALS:
                previous[signum] = signal.signal(signum, on_signal)
        _announce(out, server, config, followers, tail_from_start, otlp)
        for follower in followers:
            follower.start(poll_interval)
        # A timed wait, so a signal that arrives during it is handled promptly on every Python version.
        while not stop.wait(0.5):
            pass
        print("claude-exporter serve: stopping", file=out, flush=True)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for follower in followers:
            follower.stop()
        if server is not None:
            server.close()
        if opened is not None:
            ACTIVE.recorder = ACTIVE.opened = None
            close_recorder(opened)
    return 130 if stopped_by[:1] == [signal.SIGINT] else 0


def _otlp_available(config: Config) -> bool:
    """Whether to receive Claude Code's OTLP export: on unless ``exporter.otlp.enabled: false``; when the
    ``otlp`` extra is missing, off with a note (or a configuration error if the file asked for it)."""
    if config.otlp.enabled is False:
        return False
    from claude_exporter.ingest.otlp_wire import WireError, proto_modules

    try:
        proto_modules()
    except WireError as err:
        if config.otlp.enabled is True:
            raise ConfigError(f"exporter.otlp.enabled: {err}", config.source) from None
        return False
    return True


def _announce(
    out: TextIO,
    server: MetricsServer,
    config: Config,
    followers: list[LogFollower],
    from_start: bool,
    otlp: bool = False,
) -> None:
    lines = [
        f"claude-exporter serve: listening on {server.url} (config: {config.source})",
        f"  metrics:  {server.url}/metrics",
        f"  health:   {server.url}/health/claude-agent",
        f"  ingest:   POST {server.url}/v1/events",
    ]
    if otlp:
        lines.append(f"  otlp:     OTEL_EXPORTER_OTLP_ENDPOINT={server.url} (POST /v1/metrics, /v1/logs)")
        lines.append(f"  hooks:    POST {server.url}/v1/hooks (Claude Code http hooks)")
    elif config.otlp.enabled is None:
        lines.append(
            "  otlp:     off (pip install 'claude-exporter[otlp]' to receive Claude Code's telemetry)"
        )
    where = "from its start" if from_start else "from its end"
    lines += [f"  tailing:  {follower.path} ({where})" for follower in followers]
    print("\n".join(lines), file=out, flush=True)
