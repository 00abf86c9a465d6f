"""The process-wide recording state: the active recorder and the current request and execution.

Kept apart so every layer can read it without importing the instrumentor. The hot path does not read
``ACTIVE``: the instrumentation's wrappers are bound to their recorder when ``instrument()`` builds them.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from claude_exporter.recording.call import Call
    from claude_exporter.recording.execution import Execution
    from claude_exporter.recording.recorder import Recorder

__all__ = ["ACTIVE", "CURRENT_CALL", "CURRENT_EXECUTION"]


class _Active:
    __slots__ = ("opened", "recorder")

    def __init__(self) -> None:
        self.recorder: Recorder | None = None
        # What was opened with it (its configuration, health window, Claude Code ingestion), for the
        # endpoints that read those: set and cleared with ``recorder`` by whoever opens it.
        self.opened: Any = None


ACTIVE = _Active()
# The request in progress, so the attempt seam can attribute each HTTP attempt to it.
CURRENT_CALL: ContextVar[Call | None] = ContextVar("claude_exporter_call", default=None)
# The execution in progress; copied into threads with contextvars.copy_context().run.
CURRENT_EXECUTION: ContextVar[Execution | None] = ContextVar("claude_exporter_execution", default=None)
