"""``instrument()`` / ``uninstrument()``: the table of SDK entry points and the wrappers put on them.

Patches are made on the classes, so clients created before ``instrument()`` are measured too. Each patch
remembers the exact attribute it replaced, and ``uninstrument()`` puts those back.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable
from typing import Any

import wrapt
from prometheus_client import REGISTRY, CollectorRegistry

from claude_exporter.exposition.live import scrape_collector
from claude_exporter.exposition.store_collector import StoreCollector
from claude_exporter.instrumentation import wrappers as patch
from claude_exporter.instrumentation.middleware import detach_all
from claude_exporter.recording.recorder import Recorder
from claude_exporter.recording.state import STATE
from claude_exporter.settings import Settings, resolve_settings

__all__ = ["ENTRY_POINTS", "instrument", "is_instrumented", "uninstrument"]

Wrapper = Callable[[Any, Any, Any, Any], Any]

_MESSAGES = ("create", "parse")
# (module, class, methods, wrapper). Bedrock and Vertex copy the beta methods at import, so their
# classes are patched in their own right.
ENTRY_POINTS: tuple[tuple[str, str, tuple[str, ...], Wrapper], ...] = (
    *(
        entry
        for module in (
            "anthropic.resources.messages.messages",
            "anthropic.resources.beta.messages.messages",
            "anthropic.lib.bedrock._beta_messages",
            "anthropic.lib.vertex._beta_messages",
        )
        for entry in (
            (module, "Messages", _MESSAGES, patch.sync_request),
            (module, "AsyncMessages", _MESSAGES, patch.async_request),
            (module, "Messages", ("stream",), patch.stream_method),
            (module, "AsyncMessages", ("stream",), patch.stream_method),
        )
    ),
    ("anthropic.lib.streaming._messages", "MessageStreamManager", ("__enter__",), patch.manager_enter),
    ("anthropic.lib.streaming._messages", "AsyncMessageStreamManager", ("__aenter__",), patch.manager_aenter),
    (
        "anthropic.lib.streaming._beta_messages",
        "BetaMessageStreamManager",
        ("__enter__",),
        patch.manager_enter,
    ),
    (
        "anthropic.lib.streaming._beta_messages",
        "BetaAsyncMessageStreamManager",
        ("__aenter__",),
        patch.manager_aenter,
    ),
    *(
        (module, name, ("copy", "with_options"), patch.client_copy)
        for module, names in (
            ("anthropic._client", ("Anthropic", "AsyncAnthropic")),
            ("anthropic.lib.bedrock._client", ("AnthropicBedrock", "AsyncAnthropicBedrock")),
            ("anthropic.lib.vertex._client", ("AnthropicVertex", "AsyncAnthropicVertex")),
        )
        for name in names
    ),
    ("anthropic._streaming", "Stream", ("close",), patch.stream_close),
    ("anthropic._streaming", "AsyncStream", ("close",), patch.stream_close),
)

_lock = threading.Lock()
_patched: list[tuple[type, str, Any]] = []
_registry: CollectorRegistry | None = None
_collectors: list[Any] = []


def _apply_patches() -> None:
    for module_name, class_name, methods, wrapper in ENTRY_POINTS:
        try:
            owner = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):  # an SDK without that surface: nothing to patch there
            continue
        for method in methods:
            original = owner.__dict__.get(method)
            if original is None or isinstance(original, wrapt.FunctionWrapper):
                continue
            setattr(owner, method, wrapt.FunctionWrapper(original, wrapper))
            _patched.append((owner, method, original))


def instrument(config: Any = None, *, registry: CollectorRegistry | None = None) -> Recorder:
    """Measure every Messages API request made through the installed anthropic SDK.

    ``config`` is a :class:`~claude_exporter.config.Config`, a path to a YAML file, or None (then the
    file named by ``CLAUDE_EXPORTER_CONFIG``, if set). Calling it again while instrumented changes
    nothing and returns the active recorder; ``uninstrument()`` first to change the configuration.
    """
    global _registry
    with _lock:
        if STATE.recorder is not None:
            return STATE.recorder
        settings: Settings = resolve_settings(config)
        registry = REGISTRY if registry is None else registry
        rec = Recorder(registry, settings.recorder, settings.price_lookup, settings.cost)
        _collectors[:] = [StoreCollector(rec), scrape_collector(rec)]
        for collector in _collectors:
            registry.register(collector)
        _registry = registry
        settings.attach(rec)
        rec.config = settings.config
        _apply_patches()
        STATE.recorder = rec
        return rec


def uninstrument() -> None:
    """Restore the SDK exactly as it was and unregister the metrics."""
    global _registry
    with _lock:
        rec = STATE.recorder
        STATE.recorder = None
        if rec is not None:
            rec.close()
        for owner, method, original in reversed(_patched):
            setattr(owner, method, original)
        _patched.clear()
        detach_all()
        if rec is not None and _registry is not None:
            for collector in [*_collectors, *rec.metrics.collectors()]:
                with contextlib.suppress(KeyError):
                    _registry.unregister(collector)
        _collectors.clear()
        _registry = None


def is_instrumented() -> bool:
    return STATE.recorder is not None
