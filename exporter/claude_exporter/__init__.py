"""claude-exporter: Prometheus metrics for applications that run Claude through the Anthropic SDK.

    import anthropic, claude_exporter

    claude_exporter.instrument()                  # or instrument(config="claude-exporter.yaml")
    claude_exporter.start_http_server(9466)       # /metrics, /health/claude-agent, /-/healthy
    client = anthropic.Anthropic()
    with claude_exporter.execution("triage", agent="support-bot"):
        client.messages.create(model="claude-sonnet-4-5", max_tokens=512, messages=[...])

Names load on first use, so importing the package (the pytest plugin does) costs nothing until then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .config import ConfigError, load_config
    from .exposition.multiprocess import mark_process_dead
    from .instrumentation.instrumentor import instrument, is_instrumented, uninstrument
    from .recording.execution import execution
    from .server import make_wsgi_app, start_http_server

__all__ = [
    "ConfigError",
    "__version__",
    "execution",
    "instrument",
    "is_instrumented",
    "load_config",
    "make_wsgi_app",
    "mark_process_dead",
    "start_http_server",
    "uninstrument",
]

_HOMES = {
    "ConfigError": "config",
    "load_config": "config",
    "execution": "recording.execution",
    "instrument": "instrumentation.instrumentor",
    "is_instrumented": "instrumentation.instrumentor",
    "uninstrument": "instrumentation.instrumentor",
    "make_wsgi_app": "server",
    "mark_process_dead": "exposition.multiprocess",
    "start_http_server": "server",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'claude_exporter' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
