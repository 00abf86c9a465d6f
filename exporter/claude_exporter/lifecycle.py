"""From a configuration to a working recorder and back: decided once, opened all or nothing, closed whole.

What is decided once: label caps, default agent, timeout buckets, prices, client-side code tools, enabled
families; the listeners a finished execution is handed to (event log, health window); and the collectors
that expose it.

:func:`open_recorder` is all or nothing: if any step fails, what the earlier steps registered or started
is undone before the error propagates, so a retry starts from a clean slate.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from claude_exporter.config import Config, as_config
from claude_exporter.exposition.collectors import register, unregister
from claude_exporter.exposition.eventlog import event_log_listener
from claude_exporter.exposition.health import HealthWindow, start_health
from claude_exporter.families import SEED_GROUPS
from claude_exporter.ingest.claude_code import ClaudeCodeIngest
from claude_exporter.recording.pricing import (
    ModelPrice,
    Priced,
    PriceLookup,
    load_price_table,
    price_request,
    with_overrides,
)
from claude_exporter.recording.recorder import Recorder, RecorderOptions
from claude_exporter.recording.storage import open_storage
from claude_exporter.recording.usage import Usage

__all__ = [
    "Opened",
    "Settings",
    "close_recorder",
    "open_recorder",
    "resolve_settings",
]


@dataclass(frozen=True)
class Settings:
    config: Config
    recorder: RecorderOptions
    price_lookup: PriceLookup
    cost: Callable[[ModelPrice | None, Usage, PriceLookup], Priced]  # pricing.price_request
    listeners: tuple[Callable[[Recorder], None], ...] = field(default=())

    def attach(self, rec: Recorder) -> None:
        for add in self.listeners:
            add(rec)

    def enabled(self, agent: str, group: str) -> bool:
        """Whether the agent's ``metrics:`` list enables a family group (see ``families.METRIC_GROUPS``)."""
        metrics = self.config.agent(agent).metrics
        if group in metrics:
            return True
        return group not in SEED_GROUPS and metrics <= SEED_GROUPS


def resolve_settings(config: Any, listeners: tuple[Callable[[Recorder], None], ...] = ()) -> Settings:
    cfg = as_config(config)
    prices = load_price_table()
    if cfg.pricing_overrides:
        prices = with_overrides(prices, cfg.pricing_overrides)
    caps = cfg.label_caps
    options = RecorderOptions(
        default_agent=cfg.default_agent,
        agent_cap=caps.agent,
        task_cap=caps.task,
        model_cap=caps.model,
        combination_cap=caps.combinations,
        label_length=caps.length,
        timeout_seconds=cfg.timeout_buckets(),
        code_tools={name: agent.code_tools for name, agent in cfg.agents.items() if agent.code_tools},
        default_code_tools=cfg.defaults.code_tools,
        unpriced_platforms=prices.modifiers.unpriced_platforms,
    )
    return Settings(cfg, options, prices.lookup, price_request, (event_log_listener(cfg), *listeners))


@dataclass
class Opened:
    """A recorder and what was opened with it, so :func:`close_recorder` can take it all back: its
    configuration, the collectors registered for it, its health window and what Claude Code's OTLP
    export and hooks feed (cheap until used; the wire format loads on first use)."""

    recorder: Recorder
    registry: CollectorRegistry
    config: Config
    claude_code: ClaudeCodeIngest
    collectors: list[Collector] = field(default_factory=list)
    health: HealthWindow | None = None
    opened_at: float = field(default_factory=time.time)  # the recorder's totals were all zero then
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def health_window(self) -> HealthWindow:
        """The health window, started by the first endpoint that can ask for it: its thread ticks once a
        second, which an application that serves no health endpoint should not pay for."""
        with self._lock:
            if self.health is None:
                self.health = start_health(self.config, self.recorder, since=self.opened_at)
            return self.health


def open_recorder(
    settings: Settings,
    registry: CollectorRegistry,
    describe_error: Callable[[BaseException], str | None] | None = None,
) -> Opened:
    """A recorder for ``settings``, exposed on ``registry``, with its listeners attached.

    With ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus_client's convention), its storage is the
    multiprocess one: read here, once, as every worker process opens its recorder.
    """
    storage = open_storage(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    options: dict[str, Any] = {} if describe_error is None else {"describe_error": describe_error}
    rec = Recorder(settings.recorder, settings.price_lookup, settings.cost, storage, **options)
    opened = Opened(rec, registry, settings.config, ClaudeCodeIngest(rec, settings.config.otlp))
    try:
        opened.collectors.append(register(rec, registry, settings.enabled, opened.claude_code))
        settings.attach(rec)
    except BaseException:
        close_recorder(opened)
        raise
    return opened


def close_recorder(opened: Opened) -> None:
    """Stop the recorder's threads, close its files and unregister its collectors."""
    opened.recorder.close()
    for collector in opened.collectors:
        unregister(opened.registry, collector)
    opened.collectors.clear()
