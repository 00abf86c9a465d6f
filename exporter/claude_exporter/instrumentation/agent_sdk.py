"""Claude Agent SDK sessions, measured through the Claude Code CLI each one spawns.

``query()`` and ``ClaudeSDKClient`` both run the CLI through one class, ``SubprocessCLITransport``; three of
its methods are the seams (the table is :func:`seams`, applied by the instrumentor when the package is
installed):

- ``__init__``: the transport gets a copy of its options whose ``env`` switches the CLI's OTLP export on,
  to this exporter's OTLP receiver (``exporter.server``'s address, its bearer token), with short export
  intervals and the surrounding ``execution()``'s agent and task as resource attributes. A variable the
  caller set (in ``options.env`` or the process environment) is never replaced; if the caller chose any
  OTLP endpoint, none of the destination variables are added (the token goes nowhere else). When the
  receiver is in this process, the resource also names the execution by its scope key
  (``recording.execution.SCOPE_ATTRIBUTE``): the Claude Code ingest then adds the CLI's requests to that
  execution instead of counting its turns as executions, so the session is the one execution.
- ``read_messages``: each ``result`` message is kept as it passes (its tokens by kind and cost are compared;
  ``num_turns``, ``duration_ms`` and ``is_error`` have no one-to-one counterpart in the request series).
- ``close``: once the CLI has exited (so its telemetry is flushed), the figures are compared with what that
  telemetry added to the agent's request series since the transport was made, when this process receives
  the telemetry (``exporter.otlp.enabled: true``, served by ``start_http_server``); the outcome counts as
  ``claude_exporter_events_total{source="agent_sdk", result="agreed" | "mismatch" | "unchecked"}``, and a
  mismatch is logged with both figures (agent and numbers only). Unchecked: another SDK session of the same
  agent ran at the same time, or the storage keeps no per-process totals (multiprocess mode).

``exporter.otlp.enabled: false`` leaves the SDK alone. Everything is decided once, when :func:`seams` is
called at ``instrument()``. The caller gets exactly the SDK's objects and exceptions; a fault in the shim is
swallowed and counted.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from claude_exporter.lifecycle import Opened
from claude_exporter.recording.execution import SCOPE_ATTRIBUTE, scope_key
from claude_exporter.recording.recorder import Recorder
from claude_exporter.recording.state import CURRENT_EXECUTION
from claude_exporter.server import read_token

__all__ = ["CLASS", "MODULE", "seams", "telemetry_env"]

MODULE = "claude_agent_sdk._internal.transport.subprocess_cli"
CLASS = "SubprocessCLITransport"
_ATTR = "__claude_exporter_session__"
_RESOURCE = "OTEL_RESOURCE_ATTRIBUTES"
# Any of these means the caller chose where the CLI's telemetry goes.
_DESTINATION = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)
# Token kinds in the order of the request series' token counts (recording.storage).
_KINDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
_COST_TOLERANCE = 1e-6  # relative: the CLI and the price table round differently in the last digits

log = logging.getLogger("claude_exporter.agent_sdk")


def _endpoint(opened: Opened) -> str:
    server = opened.config.server
    host = server.address
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if server.tls_cert_file else "http"
    return f"{scheme}://{host}:{server.port}"


def telemetry_env(opened: Opened) -> tuple[dict[str, str], dict[str, str]]:
    """(switches, destination): the variables that make the CLI export to this exporter, decided once."""
    switches = {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        # Short intervals: the CLI flushes at exit too, but a long session should not report a minute late.
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        "OTEL_LOGS_EXPORT_INTERVAL": "1000",
    }
    destination = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": _endpoint(opened),
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    token = read_token(opened.config.server)
    if token:
        destination["OTEL_EXPORTER_OTLP_HEADERS"] = f"Authorization=Bearer {token}"
    return switches, destination


def _resource(current: str | None, attributes: Mapping[str, str]) -> str | None:
    """``current`` with each of ``attributes`` added unless it names that key already (W3C baggage
    form: comma-separated key=value, values percent-encoded). The scope marker is never the caller's: an
    inherited one (a CLI's child process runs this) is dropped, so it names only this process's scope."""
    given = [part for part in (current or "").split(",") if part.strip()]
    pairs = [part for part in given if part.split("=", 1)[0].strip() != SCOPE_ATTRIBUTE]
    if len(pairs) != len(given):
        current = ",".join(pairs) or None
    named = {part.split("=", 1)[0].strip() for part in pairs}
    added = [f"{key}={quote(value, safe='')}" for key, value in attributes.items() if key not in named]
    return ",".join(pairs + added) if added else current


@dataclass
class _Session:
    """One transport: its agent, what its agent's series held when it was made, the results it passed."""

    agent: str
    before: tuple[float, ...] | None
    results: list[Mapping[str, Any]] = field(default_factory=list)
    shared: bool = False  # another session of the same agent ran meanwhile: the difference is not its own


class _Seams:
    """The state the three replacements share: decided once per ``instrument()``."""

    def __init__(self, opened: Opened) -> None:
        self.rec: Recorder = opened.recorder
        # Only a receiver in this process feeds this recorder: elsewhere there is nothing here to compare.
        self.checking = opened.config.otlp.enabled is True
        self.switches, self.destination = telemetry_env(opened)
        otlp = opened.config.otlp
        self.agent_key, self.task_key, self.default_agent = (
            otlp.agent_attribute,
            otlp.task_attribute,
            otlp.default_agent,
        )
        self.live: dict[str, list[_Session]] = {}
        self.lock = threading.Lock()

    # -- the environment ---------------------------------------------------------------------------------

    def env_for(self, given: Mapping[str, str]) -> tuple[dict[str, str], str, str | None]:
        """The options' env with the telemetry variables added, and the agent and task it names."""

        def chosen(key: str) -> bool:
            return key in given or key in os.environ

        env = dict(given)
        env.update((k, v) for k, v in self.switches.items() if not chosen(k))
        if not any(chosen(k) for k in _DESTINATION):
            env.update((k, v) for k, v in self.destination.items() if not chosen(k))
        ex = CURRENT_EXECUTION.get()
        attributes = {} if ex is None else {self.agent_key: ex.agent, self.task_key: ex.task}
        # Only this process's receiver can add the CLI's requests to the execution (the ingest finds it by
        # key); elsewhere its turns stay executions of their own.
        key = scope_key(ex) if ex is not None and self.checking and ex.rec is self.rec else None
        if key is not None:
            attributes[SCOPE_ATTRIBUTE] = key
        current = given.get(_RESOURCE, os.environ.get(_RESOURCE))
        resource = _resource(current, attributes)
        if resource is not None and resource != current:
            env[_RESOURCE] = resource
        agent = ex.agent if ex is not None else self._named_agent(resource)
        return env, agent, None if ex is None else ex.task

    def _named_agent(self, resource: str | None) -> str:
        for part in (resource or "").split(","):
            key, _, value = part.partition("=")
            if key.strip() == self.agent_key and value.strip():
                return value.strip()
        return self.default_agent

    # -- the cross-check ---------------------------------------------------------------------------------

    def totals(self, agent: str) -> tuple[float, ...] | None:
        """(input, output, cache creation, cache read tokens, cost) in the agent's request series."""
        sums = [0.0] * 5
        for series in self.rec.request_series:
            if series.agent != agent:
                continue
            snap = series.snapshot()
            if "tokens" not in snap:
                return None  # multiprocess storage: no per-process token totals to compare
            for i, count in enumerate(snap["tokens"]):
                sums[i] += count
            sums[4] += snap["cost"]
        return tuple(sums)

    def open(self, agent: str) -> _Session | None:
        if not self.checking:
            return None
        session = _Session(agent, self.totals(agent))
        with self.lock:
            running = self.live.setdefault(agent, [])
            for other in running:
                other.shared = True
            session.shared = bool(running)
            running.append(session)
        return session

    def check(self, session: _Session) -> None:
        with self.lock:
            running = self.live.get(session.agent, [])
            if session in running:
                running.remove(session)
            if not running:
                self.live.pop(session.agent, None)
        if not session.results:
            return  # nothing ran (a failed start): nothing to compare
        after = self.totals(session.agent)
        if session.shared or session.before is None or after is None:
            self.rec.events.inc(("agent_sdk", "unchecked"))
            return
        sdk = _result_figures(session.results)
        seen = tuple(a - b for a, b in zip(after, session.before, strict=True))
        names = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens", "cost_usd")
        wrong = {
            name: (want, got)
            for name, want, got in zip(names, sdk, seen, strict=True)
            if want is not None
            and not math.isclose(
                want, got, rel_tol=_COST_TOLERANCE if name == "cost_usd" else 0.0, abs_tol=1e-12
            )
        }
        if not wrong:
            self.rec.events.inc(("agent_sdk", "agreed"))
            return
        self.rec.events.inc(("agent_sdk", "mismatch"))
        log.warning(
            "Claude Agent SDK result and its telemetry disagree for agent %s: %s",
            session.agent,
            ", ".join(
                f"{name} sdk={want:g} telemetry={got:g}" for name, (want, got) in sorted(wrong.items())
            ),
            extra={"agent": session.agent, "mismatch": {name: list(pair) for name, pair in wrong.items()}},
        )


def _result_figures(results: list[Mapping[str, Any]]) -> tuple[float | None, ...]:
    """The session's tokens by kind (each result's usage is its own turn's) and its cost (each result's
    ``total_cost_usd`` is the session's so far: the last one), None where the CLI sent none."""
    tokens: list[float | None] = []
    for kind in _KINDS:
        values = [r.get("usage", {}).get(kind) for r in results if isinstance(r.get("usage"), Mapping)]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        tokens.append(float(sum(numbers)) if numbers else None)
    cost = results[-1].get("total_cost_usd")
    return (*tokens, float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None)


def seams(opened: Opened) -> dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """The replacement factories for ``SubprocessCLITransport``, by attribute, sharing one state (none
    when the configuration switches the OTLP receiver off)."""
    if opened.config.otlp.enabled is False:
        return {}
    state = _Seams(opened)
    fault = state.rec.fault

    def init(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            try:
                options = self._options
                env, agent, _ = state.env_for(options.env or {})
                if env != options.env:
                    options = copy.copy(options)  # the caller's options object is theirs: never written
                    options.env = env
                    self._options = options
                session = state.open(agent)
                if session is not None:
                    self.__dict__[_ATTR] = session
            except Exception:
                fault("agent_sdk_env")

        return __init__

    def read_messages(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def read(self: Any, *args: Any, **kwargs: Any) -> Any:
            inner = original(self, *args, **kwargs)
            session = self.__dict__.get(_ATTR)
            if session is None:
                return inner
            try:
                return _observed(inner, session, fault)
            except Exception:
                fault("agent_sdk_result")
                return inner

        return read

    def close(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        async def close(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await original(self, *args, **kwargs)
            finally:
                session = self.__dict__.pop(_ATTR, None)
                if session is not None:
                    try:
                        state.check(session)
                    except Exception:
                        fault("agent_sdk_check")

        return close

    return {"__init__": init, "read_messages": read_messages, "close": close}


async def _observed(
    inner: AsyncIterator[Any], session: _Session, fault: Callable[[str], None]
) -> AsyncIterator[Any]:
    """``inner``'s messages, unchanged; each ``result`` kept for the cross-check."""
    try:
        async for data in inner:
            if type(data) is dict and data.get("type") == "result":
                try:
                    session.results.append(data)
                except Exception:
                    fault("agent_sdk_result")
            yield data
    finally:
        aclose = getattr(inner, "aclose", None)
        if aclose is not None:
            await aclose()
