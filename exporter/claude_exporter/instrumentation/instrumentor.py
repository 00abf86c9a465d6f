"""``instrument()`` / ``uninstrument()``: the table of seams and the functions put in their place.

Replacements are made on the classes, so clients created before ``instrument()`` are measured too, and
no client's own attributes are ever written. Each replacement remembers the exact attribute it replaced,
and ``uninstrument()`` puts those back. ``instrument()`` is all or nothing: a failure half-way undoes
every patch and registration before it propagates.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from claude_exporter.instrumentation import agent_sdk, batches, seams
from claude_exporter.instrumentation.extract import error_message
from claude_exporter.lifecycle import Opened, close_recorder, open_recorder, resolve_settings
from claude_exporter.recording.recorder import Recorder
from claude_exporter.recording.state import ACTIVE

__all__ = ["OPTIONAL_SEAMS", "SEAMS", "instrument", "is_instrumented", "uninstrument"]

# (module, class, attribute, factory). Bedrock and Vertex clients inherit the request method.
SEAMS: tuple[tuple[str, str, str, seams.Factory], ...] = (
    ("anthropic._base_client", "SyncAPIClient", "request", seams.sync_request),
    ("anthropic._base_client", "AsyncAPIClient", "request", seams.async_request),
    ("httpx2", "Client", "send", seams.sync_send),
    ("httpx2", "AsyncClient", "send", seams.async_send),
    ("anthropic._streaming", "Stream", "close", seams.stream_close),
    ("anthropic._streaming", "AsyncStream", "close", seams.async_stream_close),
    # Batch results: each succeeded line priced at the batch rates as the caller reads it.
    ("anthropic.resources.messages.batches", "Batches", "results", batches.sync_results),
    ("anthropic.resources.messages.batches", "AsyncBatches", "results", batches.async_results),
    ("anthropic.resources.beta.messages.batches", "Batches", "results", batches.sync_results),
    ("anthropic.resources.beta.messages.batches", "AsyncBatches", "results", batches.async_results),
)
# Seams in packages that are optional (the ``agent-sdk`` extra): (top package, module, class, the factories
# by attribute, built from what was opened). Skipped when the package is not installed.
OPTIONAL_SEAMS: tuple[tuple[str, str, str, Callable[[Opened], dict[str, Callable[..., Any]]]], ...] = (
    ("claude_agent_sdk", agent_sdk.MODULE, agent_sdk.CLASS, agent_sdk.seams),
)
_MARK = "__claude_exporter_original__"

log = logging.getLogger("claude_exporter.instrument")
_lock = threading.Lock()
_patched: list[tuple[type, str, Any]] = []
_opened: Opened | None = None


def _apply(opened: Opened) -> None:
    rec = opened.recorder
    for module_name, class_name, attribute, factory in SEAMS:
        _patch(getattr(importlib.import_module(module_name), class_name), attribute, factory, rec)
    for package, module_name, class_name, build in OPTIONAL_SEAMS:
        if importlib.util.find_spec(package) is None:
            continue
        try:
            owner = getattr(importlib.import_module(module_name), class_name)
            wraps = build(opened)
            missing = [attribute for attribute in wraps if attribute not in owner.__dict__]
        except (ImportError, AttributeError) as err:
            owner, wraps, missing = None, {}, [f"{module_name}.{class_name} ({err})"]
        if missing:
            # Another release of an optional package must not stop the anthropic seams: it goes unmeasured.
            log.warning("%s is installed but not measured: %s not found", package, ", ".join(missing))
            rec.fault(f"seam_{package}")
            continue
        for attribute, wrap in wraps.items():
            _patch(owner, attribute, wrap)


def _patch(owner: type, attribute: str, wrap: Callable[..., Callable[..., Any]], *args: Any) -> None:
    original = owner.__dict__[attribute]
    if getattr(original, _MARK, None) is not None:
        return  # another copy of this package patched it already
    replacement: Callable[..., Any] = wrap(original, *args)
    setattr(replacement, _MARK, original)
    setattr(owner, attribute, replacement)
    _patched.append((owner, attribute, original))


def _restore() -> None:
    for owner, attribute, original in reversed(_patched):
        setattr(owner, attribute, original)
    _patched.clear()


def instrument(config: Any = None, *, registry: CollectorRegistry | None = None) -> Recorder:
    """Measure every Messages API request made through the installed anthropic SDK.

    ``config`` is a :class:`~claude_exporter.config.Config`, a path to a YAML file, or None (then the
    file named by ``CLAUDE_EXPORTER_CONFIG``, if set). Calling it again while instrumented changes
    nothing and returns the active recorder; ``uninstrument()`` first to change the configuration.
    """
    global _opened
    with _lock:
        if ACTIVE.recorder is not None:
            return ACTIVE.recorder
        settings = resolve_settings(config)
        opened = open_recorder(settings, REGISTRY if registry is None else registry, error_message)
        rec = opened.recorder
        try:
            _apply(opened)
        except BaseException:
            _restore()
            close_recorder(opened)
            raise
        _opened = opened
        ACTIVE.opened, ACTIVE.recorder = opened, rec
        return rec


def uninstrument() -> None:
    """Restore the SDK exactly as it was and unregister the metrics."""
    global _opened
    with _lock:
        ACTIVE.recorder = ACTIVE.opened = None
        _restore()
        if _opened is not None:
            close_recorder(_opened)
            _opened = None


def is_instrumented() -> bool:
    return ACTIVE.recorder is not None
